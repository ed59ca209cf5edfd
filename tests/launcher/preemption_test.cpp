// Preemption's pieces: the signal flag, the requeue decision (capped by train.max_requeues,
// array tasks named as ARRAYJOBID_TASKID) and how the log tells a time limit from a preemption.
#include "launcher/preemption.h"

#include <csignal>

#include <gtest/gtest.h>

namespace iisan::launcher {
namespace {

TEST(PreemptionTest, SignalsRaiseTheFlagInsteadOfEndingTheProcess) {
  {
    CancelOnSignals signals;
    EXPECT_FALSE(signals.flag()->load());
    std::raise(SIGUSR2);
    EXPECT_TRUE(signals.flag()->load());
    EXPECT_EQ(signals.signal(), SIGUSR2);
    std::raise(SIGTERM);  // the first signal is the one reported
    EXPECT_EQ(signals.signal(), SIGUSR2);
    EXPECT_THROW(CancelOnSignals(), std::logic_error) << "one at a time";
  }
  CancelOnSignals again;  // released and installed afresh
  EXPECT_FALSE(again.flag()->load());
  std::raise(SIGTERM);
  EXPECT_EQ(again.signal(), SIGTERM);
}

TEST(PreemptionTest, RequeuesAreCappedAndArrayTasksNamed) {
  EXPECT_FALSE(DecideRequeue({}, 5).requeue) << "not a Slurm job";
  auto decision = DecideRequeue({{"SLURM_JOB_ID", "77"}}, 5);
  EXPECT_TRUE(decision.requeue);
  EXPECT_EQ(decision.job, "77");
  decision = DecideRequeue({{"SLURM_JOB_ID", "78"}, {"SLURM_ARRAY_JOB_ID", "70"}, {"SLURM_ARRAY_TASK_ID", "3"}}, 5);
  EXPECT_EQ(decision.job, "70_3");
  decision = DecideRequeue({{"SLURM_JOB_ID", "77"}, {"SLURM_RESTART_COUNT", "5"}}, 5);
  EXPECT_FALSE(decision.requeue);
  EXPECT_NE(decision.reason.find("train.max_requeues = 5"), std::string::npos) << decision.reason;
  EXPECT_FALSE(DecideRequeue({{"SLURM_JOB_ID", "77"}}, 0).requeue) << "0: never";
  EXPECT_FALSE(DecideRequeue({{"SLURM_JOB_ID", "7; rm -rf /"}}, 5).requeue) << "only a job id reaches scontrol";
}

TEST(PreemptionTest, TheLogTellsTheTimeLimitFromAPreemption) {
  EXPECT_NE(DescribeStop(SIGUSR2, 118).find("the time limit is near"), std::string::npos);
  EXPECT_NE(DescribeStop(SIGUSR2, 118).find("1:58"), std::string::npos);
  EXPECT_NE(DescribeStop(SIGTERM, 3600).find("preemption or scancel, not the time limit"), std::string::npos);
  EXPECT_NE(DescribeStop(SIGTERM, -1).find("time left unknown"), std::string::npos);
}

}  // namespace
}  // namespace iisan::launcher
