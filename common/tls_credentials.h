// gRPC transport security for every endpoint (issue 9): TLS with a server certificate, optionally
// mutual TLS (clients and workers present certificates signed by a CA the coordinator trusts), or
// plaintext only when asked for with --insecure. Header-only because common/ does not link gRPC;
// every file that includes it does (client, worker, server).
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace ptq {

struct TlsOptions {
  bool insecure = false;   // plaintext (--insecure): nothing below is used
  std::string ca_path;     // server: CA of client certificates (mutual TLS); client: CA of the server
  std::string cert_path;   // PEM certificate chain: the server's, or the client's for mutual TLS
  std::string key_path;    // PEM private key of cert_path
};

namespace tls_internal {

inline absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the ", what, " ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("the ", what, " ", path, " is not PEM"));
  }
  return text.str();
}

}  // namespace tls_internal

// The coordinator's credentials: TLS with cert_path/key_path; with ca_path also, client certificates
// are requested and verified when presented (WorkerService then requires one, see
// PeerHasVerifiedCertificate). InvalidArgument when neither a certificate nor --insecure is given.
inline absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsOptions& o) {
  if (o.insecure) return grpc::InsecureServerCredentials();
  if (o.cert_path.empty() || o.key_path.empty()) {
    return absl::InvalidArgumentError(
        "give --tls-cert and --tls-key (TLS), or --insecure to serve plaintext");
  }
  auto cert = tls_internal::ReadPem(o.cert_path, "TLS certificate");
  if (!cert.ok()) return cert.status();
  auto key = tls_internal::ReadPem(o.key_path, "TLS key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  if (!o.ca_path.empty()) {
    auto ca = tls_internal::ReadPem(o.ca_path, "client CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// A client's (CLI, worker) credentials: TLS verifying the server against ca_path (empty: the system's
// roots), presenting cert_path/key_path when given (mutual TLS).
inline absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFor(
    const TlsOptions& o) {
  if (o.insecure) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  if (!o.ca_path.empty()) {
    auto ca = tls_internal::ReadPem(o.ca_path, "TLS CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  if (o.cert_path.empty() != o.key_path.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!o.cert_path.empty()) {
    auto cert = tls_internal::ReadPem(o.cert_path, "TLS certificate");
    if (!cert.ok()) return cert.status();
    auto key = tls_internal::ReadPem(o.key_path, "TLS key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace ptq
