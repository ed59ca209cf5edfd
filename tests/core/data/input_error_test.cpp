// InputError formats "path:line: message", and leaves the line out when it is 0.
#include "core/data/input_error.h"

#include <gtest/gtest.h>

namespace iisan::data {
namespace {

TEST(InputErrorTest, NamesPathAndLine) {
  const InputError error("data/users.tsv", 17, "item 'B00X' is not in items.tsv");
  EXPECT_STREQ(error.what(), "data/users.tsv:17: item 'B00X' is not in items.tsv");
  EXPECT_EQ(error.path(), "data/users.tsv");
  EXPECT_EQ(error.line(), 17);
}

TEST(InputErrorTest, OmitsLineZero) {
  const InputError error("config.json", 0, "file is empty");
  EXPECT_STREQ(error.what(), "config.json: file is empty");
}

TEST(InputErrorTest, IsARuntimeError) {
  try {
    throw InputError("a.tsv", 1, "bad");
  } catch (const std::runtime_error& error) {
    EXPECT_STREQ(error.what(), "a.tsv:1: bad");
  }
}

}  // namespace
}  // namespace iisan::data
