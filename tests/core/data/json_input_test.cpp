// The one bounded JSON parse: nesting, size and number bombs are refused with an InputError that
// names the source, never a crash; ordinary documents (and comments where allowed) parse.
#include "core/data/json_input.h"

#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace iisan::data {
namespace {

using Json = nlohmann::ordered_json;

std::string ErrorOf(const std::string& text, const JsonLimits& limits = {}) {
  try {
    ParseJsonInput<Json>(text, "the-source.json", limits);
  } catch (const InputError& error) {
    return error.what();
  }
  return "";
}

TEST(JsonInputTest, DeepNestingIsRefusedWithoutExhaustingTheStack) {
  // A million levels would overflow any recursive parser or destructor.
  for (const std::string& open : {std::string("["), std::string("{\"a\":")}) {
    std::string bomb;
    for (int i = 0; i < 1000000; ++i) bomb += open;
    const auto message = ErrorOf(bomb);
    EXPECT_NE(message.find("the-source.json"), std::string::npos) << message;
    EXPECT_NE(message.find("nested more than 64"), std::string::npos) << message;
  }
  // 64 levels are fine, 65 are not.
  EXPECT_EQ(ErrorOf(std::string(64, '[') + std::string(64, ']')), "");
  EXPECT_NE(ErrorOf(std::string(65, '[') + std::string(65, ']')), "");
}

TEST(JsonInputTest, SizeNumbersAndSyntaxAreRefusedByName) {
  JsonLimits small;
  small.max_bytes = 16;
  EXPECT_NE(ErrorOf("[1,2,3,4,5,6,7,8,9,10]", small).find("more than the 16"), std::string::npos);
  EXPECT_NE(ErrorOf("{\"a\": 1e999}").find("not valid JSON"), std::string::npos);
  EXPECT_NE(ErrorOf("{\"a\": }").find("the-source.json"), std::string::npos);
  EXPECT_NE(ErrorOf("// note\n{}"), "");  // comments only where allowed
  JsonLimits comments;
  comments.allow_comments = true;
  EXPECT_EQ(ErrorOf("// note\n{\"a\": [1, {\"b\": null}]}", comments), "");
  EXPECT_EQ(ParseJsonInput<Json>("{\"b\": 1, \"a\": 2}", "x").begin().key(), "b") << "order kept";
}

// Errors say where and what was wrong, never the text itself: a file read on a client's behalf
// (the cache service's) must not come back quoted in a reply, nor a hostile file flood a log.
TEST(JsonInputTest, ErrorsNeverQuoteTheText) {
  for (const std::string text : {"{\"a\": s3cretword}", "s3cretword", "{\"a\": \"\\uD800s3cretword\"}",
                                 "{\"a\": \"s3cretword", "[1, 2 s3cretword]", "{\"a\": 12345678s3cretword}",
                                 "{\"a\": 987654321e999}", "{\"a\": tru\n s3cretword"}) {
    const auto message = ErrorOf(text);
    EXPECT_NE(message.find("the-source.json"), std::string::npos) << message;
    EXPECT_NE(message.find("not valid JSON"), std::string::npos) << message;
    EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
    EXPECT_EQ(message.find("987654321"), std::string::npos) << message;
    EXPECT_EQ(message.find("12345678"), std::string::npos) << message;
  }
  EXPECT_NE(ErrorOf("{\n\"a\": nope}").find("line 2"), std::string::npos) << "the position stays";
}

TEST(JsonInputTest, ValuesAreDescribedWithoutLongText) {
  EXPECT_EQ(DescribeJsonValue(nlohmann::json(3.5)), "3.5");
  EXPECT_EQ(DescribeJsonValue(nlohmann::json(true)), "true");
  EXPECT_EQ(DescribeJsonValue(nlohmann::json("yes")), "\"yes\"");
  EXPECT_EQ(DescribeJsonValue(nlohmann::json(std::string(33, 'x'))), "a string of 33 bytes");
  EXPECT_EQ(DescribeJsonValue(nlohmann::json("a\nb")), "a string of 3 bytes");
  EXPECT_EQ(DescribeJsonValue(nlohmann::json::parse("[1, \"s3cret\"]")), "an array of 2 values");
  EXPECT_EQ(DescribeJsonValue(nlohmann::json::parse("{\"k\": \"s3cret\"}")), "an object of 1 key");
}

TEST(JsonInputTest, FilesAreSizedBeforeTheyAreRead) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / "json_input_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "big.json";
  std::ofstream(path) << "[" << std::string(4096, ' ') << "]";
  try {
    ReadJsonFile<Json>(path, {1024, 8});
    FAIL() << "a 4 KiB file read with a 1 KiB limit";
  } catch (const InputError& error) {
    EXPECT_NE(std::string(error.what()).find("big.json"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("more than the 1024"), std::string::npos) << error.what();
  }
  EXPECT_THROW(ReadJsonFile<Json>(dir / "missing.json"), InputError);
  EXPECT_THROW(ReadJsonFile<Json>(dir), InputError);
  EXPECT_TRUE(ReadJsonFile<Json>(path).is_array());
}

}  // namespace
}  // namespace iisan::data
