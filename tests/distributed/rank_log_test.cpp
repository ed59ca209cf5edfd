// Rank-prefixed log lines on stderr.
#include "distributed/rank_log.h"

#include <glog/logging.h>
#include <gtest/gtest.h>

namespace iisan::distributed {
namespace {

TEST(RankLogTest, PrefixesStderrLinesWhileAlive) {
  if (!google::IsGoogleLoggingInitialized()) google::InitGoogleLogging("iisan_distributed_tests");
  for (int severity = google::GLOG_INFO; severity < google::NUM_SEVERITIES; ++severity) {
    google::SetLogDestination(severity, "");  // no log files from a test
  }
  FLAGS_logtostderr = false;
  FLAGS_alsologtostderr = true;
  {
    RankLogPrefix prefix(2, 4);
    ::testing::internal::CaptureStderr();
    LOG(INFO) << "bucket 3 all-reduced";
    const auto text = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(text.rfind("[rank 2/4] I", 0), 0u) << text;
    EXPECT_NE(text.find("bucket 3 all-reduced\n"), std::string::npos) << text;
    EXPECT_EQ(text.find("bucket 3", text.find("bucket 3") + 1), std::string::npos) << "printed twice: " << text;
  }
  ::testing::internal::CaptureStderr();
  LOG(INFO) << "after";
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find("[rank"), std::string::npos);
  EXPECT_TRUE(FLAGS_alsologtostderr);
}

}  // namespace
}  // namespace iisan::distributed
