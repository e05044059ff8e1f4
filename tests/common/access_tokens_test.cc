// Bearer tokens: parsing with errors naming the line, authentication, roles.
#include <gtest/gtest.h>

#include "common/access_tokens.h"

namespace ptq {
namespace {

TEST(AccessTokensTest, RolesAndRejections) {
  auto tokens = AccessTokens::Parse(
      "# operators\nadmin-token-0123456789 admin\n\nreader-token-0123456789 read  # dashboards\n", "t");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  auto admin = tokens->Authenticate("Bearer admin-token-0123456789");
  ASSERT_TRUE(admin.ok());
  EXPECT_EQ(*admin, AccessRole::kAdmin);
  auto reader = tokens->Authenticate("Bearer reader-token-0123456789");
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(*reader, AccessRole::kRead);
  for (const char* bad : {"", "admin-token-0123456789", "Bearer admin-token-012345678",
                          "Bearer admin-token-01234567890", "Bearer reader-token-0123456788",
                          "Basic admin-token-0123456789"}) {
    EXPECT_EQ(tokens->Authenticate(bad).status().code(), absl::StatusCode::kUnauthenticated) << bad;
  }
  EXPECT_TRUE(AccessTokens::Authorize(AccessRole::kAdmin, true).ok());
  EXPECT_TRUE(AccessTokens::Authorize(AccessRole::kRead, false).ok());
  EXPECT_EQ(AccessTokens::Authorize(AccessRole::kRead, true).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(AccessTokensTest, BadFilesNameTheLine) {
  auto short_token = AccessTokens::Parse("ok-token-0123456789 admin\nshort admin\n", "f");
  EXPECT_NE(std::string(short_token.status().message()).find("f:2"), std::string::npos);
  auto role = AccessTokens::Parse("ok-token-0123456789 root\n", "f");
  EXPECT_NE(std::string(role.status().message()).find("unknown role 'root'"), std::string::npos);
  EXPECT_FALSE(AccessTokens::Parse("# nothing\n", "f").ok());
  EXPECT_EQ(AccessTokens::Load("/nonexistent/tokens").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ptq
