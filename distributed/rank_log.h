// Rank-prefixed logs: the ranks of a job share a terminal or a job log, and "[rank 3/8] " in
// front of each line says whose it is.
#pragma once

#include <memory>

namespace google {
class LogSink;
}

namespace iisan::distributed {

// While alive, glog's stderr output goes through a sink that prefixes every line with the
// rank (log files are unchanged: each process has its own). Needs glog initialised
// (InitGoogleLogging) with --logtostderr off, as the iisan binary sets it up; otherwise glog
// writes to stderr itself and this throws std::logic_error rather than print every line twice.
class RankLogPrefix {
 public:
  RankLogPrefix(int rank, int world_size);
  ~RankLogPrefix();
  RankLogPrefix(const RankLogPrefix&) = delete;
  RankLogPrefix& operator=(const RankLogPrefix&) = delete;

 private:
  std::unique_ptr<google::LogSink> sink_;
  bool saved_alsologtostderr_;
  int saved_stderrthreshold_;
};

}  // namespace iisan::distributed
