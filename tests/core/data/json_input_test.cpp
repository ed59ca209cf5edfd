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
