// The cache service's request parser, as a specification and under fuzzing: whatever bytes
// arrive, it returns either a well-formed request or an error message that serialises, and never
// throws.
#include "cache/service_request.h"

#include <random>

#include <gtest/gtest.h>

#include "tests/fuzz_mutator.h"

namespace iisan::cache {
namespace {

std::string ErrorOf(std::string_view line) {
  const auto parsed = ParseServiceRequest(line);
  EXPECT_FALSE(parsed.request.has_value()) << line;
  EXPECT_FALSE(parsed.error.empty()) << line;
  return parsed.error;
}

TEST(ServiceRequestTest, ParsesEveryOp) {
  auto ensure = ParseServiceRequest(R"({"op":"ensure","config":{"data":{"dir":"/d"}},"token":"s"})");
  ASSERT_TRUE(ensure.request) << ensure.error;
  EXPECT_EQ(ensure.request->op, ServiceOp::kEnsure);
  EXPECT_EQ(ensure.request->config["data"]["dir"], "/d");
  EXPECT_EQ(ensure.request->token, "s");

  auto by_key = ParseServiceRequest(R"({"op":"ensure","key":"0123456789abcdef"})");
  ASSERT_TRUE(by_key.request) << by_key.error;
  EXPECT_EQ(by_key.request->key, "0123456789abcdef");

  EXPECT_EQ(ParseServiceRequest(R"({"op":"status"})").request->op, ServiceOp::kStatus);
  EXPECT_EQ(ParseServiceRequest(R"( {"op":"list"} )").request->op, ServiceOp::kList);
  EXPECT_EQ(ParseServiceRequest(R"({"op":"evict","key":"fedcba9876543210"})").request->op, ServiceOp::kEvict);
}

TEST(ServiceRequestTest, RejectsMalformedAndMisshapenRequestsWithAReason) {
  EXPECT_NE(ErrorOf("").find("malformed JSON"), std::string::npos);
  EXPECT_NE(ErrorOf("{\"op\":\"status\"").find("malformed JSON"), std::string::npos);
  EXPECT_NE(ErrorOf("[1,2]").find("array"), std::string::npos);
  EXPECT_NE(ErrorOf("42").find("number"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"config":{}})").find("'op'"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":7})").find("'op'"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"launch"})").find("unknown op 'launch'"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"status","extra":1})").find("unknown field 'extra'"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"ensure"})").find("exactly one"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"ensure","config":{},"key":"0123456789abcdef"})").find("exactly one"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"ensure","config":"c.json"})").find("'config'"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"evict"})").find("'key'"), std::string::npos);
  // Keys name files: anything but 16 hex digits (a path, say) is refused.
  EXPECT_NE(ErrorOf(R"({"op":"evict","key":"../../etc/passwd"})").find("16 lower-case hex"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"evict","key":"0123456789ABCDEF"})").find("16 lower-case hex"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"evict","key":12345})").find("'key'"), std::string::npos);
  ErrorOf(R"({"op":"status","token":1e999})");
  EXPECT_NE(ErrorOf(R"({"op":"status","token":123456789012345678901234567890})").find("'token'"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"op":"list","key":"0123456789abcdef"})").find("takes no"), std::string::npos);
  EXPECT_NE(ErrorOf(std::string(100000, '[')).find("deeper"), std::string::npos);
  EXPECT_NE(ErrorOf("{\"op\":\"st\xff\xfe\"}").find("malformed"), std::string::npos);
}

// Every input gives exactly one of a request or an error, without throwing, and the error goes
// back to the client as a reply that serialises (valid UTF-8, whatever bytes came in): mutated
// valid requests (tests/fuzz_mutator.h), random bytes, and random JSON values in every field.
TEST(ServiceRequestTest, NeverThrowsOnDamagedRequestsRandomBytesAndWrongTypes) {
  const std::vector<std::string> valid = {
      R"({"op":"ensure","config":{"data":{"dir":"/d"},"model":{"kept_layers":[0,2]}},"token":"s"})",
      R"({"op":"ensure","key":"0123456789abcdef"})", R"({"op":"status"})", R"({"op":"list","token":"x"})",
      R"({"op":"evict","key":"fedcba9876543210"})"};
  auto check = [](const std::string& line) {
    const auto parsed = ParseServiceRequest(line);
    iisan::testing::FuzzRequire(parsed.request.has_value() == parsed.error.empty(), "a request or an error");
    if (!parsed.request) ServiceErrorReply(parsed.error).dump();
  };
  for (const auto& line : valid) EXPECT_TRUE(ParseServiceRequest(line).request) << line;
  iisan::testing::FuzzMutator mutator(
      20261130, valid, {"{", "}", "[", "]", "\"", ":", ",", "\"op\"", "\"ensure\"", "\"key\"", "\"config\"",
                        "\"token\"", "\"\\u0000\"", "\"\xff\"", "\"\xc3\xa9\"", "\\ud800"});
  iisan::testing::RunFuzz<iisan::testing::NoExceptionExpected>(mutator, 6000, check);

  std::mt19937 rng(20261130);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes(rng() % 200, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    EXPECT_NO_THROW(check(bytes)) << iisan::testing::FuzzInputExcerpt(bytes);
  }
  std::vector<std::string> values = {"null", "true", "\"\"", "[]", "{}", "[[[[]]]]", "\"0123456789abcdef\"", "0.5"};
  for (const auto& number : iisan::testing::FuzzMutator::ExtremeNumbers()) values.push_back(number);
  for (const char* field : {"op", "config", "key", "token"}) {
    for (const auto& value : values) {
      const std::string line = std::string(R"({"op":"ensure",")") + field + "\":" + value + "}";
      EXPECT_NO_THROW(check(line)) << line;
    }
  }
}

}  // namespace
}  // namespace iisan::cache
