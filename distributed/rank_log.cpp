// A glog sink that writes "[rank r/W] " + glog's usual line to stderr.
#include "distributed/rank_log.h"

#include <cstdio>
#include <stdexcept>
#include <string>

#include <glog/logging.h>

namespace iisan::distributed {
namespace {

class RankPrefixSink : public google::LogSink {
 public:
  // `threshold` and `also_to_stderr`: glog's own choice of what reaches stderr, which this
  // sink applies instead.
  RankPrefixSink(int rank, int world_size, int threshold, bool also_to_stderr)
      : prefix_("[rank " + std::to_string(rank) + "/" + std::to_string(world_size) + "] "),
        threshold_(threshold),
        also_to_stderr_(also_to_stderr) {}

  void send(google::LogSeverity severity, const char* /*full_filename*/, const char* base_filename, int line,
            const google::LogMessageTime& time, const char* message, size_t message_len) override {
    if (severity < threshold_ && !also_to_stderr_) return;
    // One write per line, so that lines of concurrent threads do not interleave.
    const std::string text = prefix_ + ToString(severity, base_filename, line, time, message, message_len) + "\n";
    std::fwrite(text.data(), 1, text.size(), stderr);
  }

 private:
  const std::string prefix_;
  const int threshold_;
  const bool also_to_stderr_;
};

}  // namespace

RankLogPrefix::RankLogPrefix(int rank, int world_size)
    : saved_alsologtostderr_(FLAGS_alsologtostderr), saved_stderrthreshold_(FLAGS_stderrthreshold) {
  if (FLAGS_logtostderr || !google::IsGoogleLoggingInitialized()) {
    throw std::logic_error("RankLogPrefix needs glog initialised and --logtostderr off");
  }
  sink_ = std::make_unique<RankPrefixSink>(rank, world_size, FLAGS_stderrthreshold, FLAGS_alsologtostderr);
  FLAGS_alsologtostderr = false;
  FLAGS_stderrthreshold = google::NUM_SEVERITIES;
  google::AddLogSink(sink_.get());
}

RankLogPrefix::~RankLogPrefix() {
  google::RemoveLogSink(sink_.get());
  FLAGS_alsologtostderr = saved_alsologtostderr_;
  FLAGS_stderrthreshold = saved_stderrthreshold_;
}

}  // namespace iisan::distributed
