#!/usr/bin/env python3
"""TLS and mutual TLS on the coordinator, with certificates made by Debian's openssl as
docs/security.md describes.

1. `ptq-coordinator` without --tls-cert/--tls-key or --insecure refuses to start, saying so.
2. With TLS and a client CA: `ptq list` verifying the server against the CA works; a plaintext client
   (--insecure) and a client that trusts only the system's roots both fail.
3. A worker without a client certificate is refused (UNAUTHENTICATED, it exits naming the reason); a
   worker with one registers and runs a submitted job to the end.

Usage: tls_test.py PTQ PTQ_COORDINATOR PTQ_WORKER SOURCE_DIR. Exits 77 without openssl.
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ptq, coordinator_bin, worker_bin, source = sys.argv[1:5]
model = os.path.join(source, "models/demo/tiny-llama-bytes")
data = os.path.join(source, "models/demo/data")
env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
env.pop("PTQ_INSECURE", None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(d):
    """A CA; a server certificate for 127.0.0.1/localhost; a worker client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=ptq test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("worker", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=ptq-{name}", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


def main():
    if shutil.which("openssl") is None:
        print("skipped: openssl is not installed")
        return 77
    tmp = tempfile.mkdtemp(prefix="tls_test_")
    errors = []
    procs = []
    try:
        make_certificates(tmp)
        port = free_port()
        address = f"127.0.0.1:{port}"

        # 1. No transport chosen.
        r = subprocess.run([coordinator_bin, "--listen", address, "--store", f"{tmp}/a.db"], env=env,
                           capture_output=True, text=True, timeout=30)
        if r.returncode == 0 or "--insecure" not in r.stderr:
            errors.append(f"coordinator without TLS or --insecure: exit {r.returncode}, {r.stderr!r}")

        # 2. TLS with a client CA for the workers.
        coordinator = subprocess.Popen(
            [coordinator_bin, "--listen", address, "--store", f"{tmp}/jobs.db", "--workers", "1",
             "--tls-cert", f"{tmp}/server.crt", "--tls-key", f"{tmp}/server.key",
             "--tls-client-ca", f"{tmp}/ca.crt", "--threads", "1"],
            env=env, stdout=open(f"{tmp}/coordinator.log", "w"), stderr=subprocess.STDOUT)
        procs.append(coordinator)
        trusted = ["--coordinator", address, "--tls-ca", f"{tmp}/ca.crt"]
        deadline = time.time() + 30
        while time.time() < deadline:
            r = subprocess.run([ptq, "list", *trusted], env=env, capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.3)
        if r.returncode != 0:
            errors.append(f"a client trusting the CA cannot list: {r.stdout} {r.stderr}")
        for what, flags in (("a plaintext client", ["--insecure"]),
                            ("a client trusting only the system's roots", [])):
            r = subprocess.run([ptq, "list", "--coordinator", address, *flags], env=env,
                               capture_output=True, text=True, timeout=60)
            if r.returncode == 0:
                errors.append(f"{what} was served")

        # 3. Workers: without a client certificate, then with one.
        r = subprocess.run([worker_bin, "--coordinator", address, "--tls-ca", f"{tmp}/ca.crt",
                            "--threads", "1"], env=env, capture_output=True, text=True, timeout=60)
        if r.returncode == 0 or "client certificate" not in r.stderr:
            errors.append(f"a worker without a client certificate: exit {r.returncode}, {r.stderr[-300:]!r}")
        procs.append(subprocess.Popen(
            [worker_bin, "--coordinator", address, "--tls-ca", f"{tmp}/ca.crt", "--tls-cert",
             f"{tmp}/worker.crt", "--tls-key", f"{tmp}/worker.key", "--threads", "1"],
            env=env, stdout=open(f"{tmp}/worker.log", "w"), stderr=subprocess.STDOUT))
        r = subprocess.run([ptq, "submit", *trusted, "--model", model, "--calib", f"{data}/calib.txt",
                            "--out", f"{tmp}/out", "--bits", "4", "--group-size", "64", "--samples",
                            "16", "--seq-len", "64"], env=env, capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"submit over TLS failed: {r.stderr}")
        else:
            w = subprocess.run([ptq, "watch", r.stdout.strip(), *trusted], env=env,
                               capture_output=True, text=True, timeout=300)
            if w.returncode != 0 or not os.path.exists(f"{tmp}/out/model.safetensors"):
                errors.append(f"the job over mutual TLS did not finish: {w.stdout[-500:]} {w.stderr[-500:]}")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    if errors:
        for e in errors:
            print("FAIL:", e)
        print("logs kept in", tmp)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("TLS: refused without a choice; CA-verified clients served, others not; "
          "workers need a client certificate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
