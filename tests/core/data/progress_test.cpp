// ProgressMeter: the line format, the throttle, and that Finish logs exactly once.
#include "core/data/progress.h"

#include <glog/logging.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/core/data/test_files.h"

namespace iisan::data {
namespace {

using testing::Contains;

// Collects the messages glog hands to sinks while it is alive.
class CapturedLog : public google::LogSink {
 public:
  CapturedLog() { google::AddLogSink(this); }
  ~CapturedLog() override { google::RemoveLogSink(this); }

  void send(google::LogSeverity, const char*, const char*, int, const google::LogMessageTime&,
            const char* message, size_t length) override {
    lines.emplace_back(message, length);
  }

  std::vector<std::string> lines;
};

TEST(FormatProgressTest, KnownTotal) {
  EXPECT_EQ(FormatProgress("cache build", 5120, 20314, "items", 5120 / 1830.0, false),
            "cache build: 5120/20314 items (25.2%), 1830 items/s, ETA 8s");
  EXPECT_EQ(FormatProgress("cache build", 20314, 20314, "items", 11.1, true),
            "cache build: 20314/20314 items (100.0%), 1830 items/s, done in 11s");
}

TEST(FormatProgressTest, LongEtasAndSlowRates) {
  EXPECT_EQ(FormatProgress("eval", 1, 400, "users", 2.0, false),
            "eval: 1/400 users (0.2%), 0.5 users/s, ETA 13m18s");
  EXPECT_EQ(FormatProgress("train", 10, 100000, "steps", 10.0, false),
            "train: 10/100000 steps (0.0%), 1.0 steps/s, ETA 27h46m");
}

TEST(FormatProgressTest, UnknownTotalOrNoTimeYet) {
  EXPECT_EQ(FormatProgress("scan", 42, 0, "files", 2.0, false), "scan: 42 files, 21 files/s");
  EXPECT_EQ(FormatProgress("scan", 0, 10, "files", 0.0, false),
            "scan: 0/10 files (0.0%), 0.0 files/s");
}

TEST(ProgressMeterTest, LogsEveryIntervalAndOnceAtFinish) {
  CapturedLog log;
  ProgressMeter meter("demo", 4, "items", std::chrono::milliseconds(0));
  meter.Advance(1);
  meter.Advance(2);
  meter.Finish();
  meter.Finish();
  ASSERT_EQ(log.lines.size(), 3u);
  EXPECT_TRUE(Contains(log.lines[0], "demo: 1/4 items (25.0%)"));
  EXPECT_TRUE(Contains(log.lines[1], "demo: 3/4 items (75.0%)"));
  EXPECT_TRUE(Contains(log.lines[2], "demo: 3/4 items (75.0%)"));
  EXPECT_TRUE(Contains(log.lines[2], "done in"));
}

TEST(ProgressMeterTest, QuietWithinTheInterval) {
  CapturedLog log;
  ProgressMeter meter("quiet", 1000, "items");
  for (int i = 0; i < 1000; ++i) meter.Advance(1);
  EXPECT_TRUE(log.lines.empty());
  meter.Finish();
  ASSERT_EQ(log.lines.size(), 1u);
  EXPECT_TRUE(Contains(log.lines[0], "quiet: 1000/1000 items (100.0%)"));
}

}  // namespace
}  // namespace iisan::data
