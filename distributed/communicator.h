// The collective-communication interface that training code sees (all-reduce, broadcast,
// all-gather, barrier) and what every backend shares: options, the failure policy and the
// naming of operations in error messages. Backends: in_process_communicator.h (unit tests and
// worlds of one), mpi_communicator.h and tcp_communicator.h (CPU tensors),
// nccl_communicator.h (CUDA tensors).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>

namespace iisan::distributed {

enum class ReduceOp { kSum, kAverage };

// Exit status of a process ended by a failed collective (a peer died, stalled past the
// timeout, or issued collectives in another order). Distinct from ordinary errors (1) and from
// signals, so that launchers and tests can tell a communication failure from a crash.
inline constexpr int kCollectiveFailureExitCode = 86;

inline constexpr std::chrono::milliseconds kDefaultCollectiveTimeout = std::chrono::minutes(5);

struct CollectiveOptions {
  // How long one collective (or joining the world) may wait for its peers before the job is
  // declared failed. It bounds how long a healthy rank waits on a slow one, so it must exceed
  // the longest legitimate skew between ranks (e.g. one rank evaluating while others wait).
  std::chrono::milliseconds timeout = kDefaultCollectiveTimeout;
};

// A failed collective, as thrown by the in-process backend. Transports between processes do
// not throw: their peers are mid-collective and cannot be unwound, so they end the process
// (see AbortJob) and the launcher (mpirun, srun, `iisan launch`) takes the others down.
class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  // Returns once this rank's tensors hold the result (for NCCL: once the GPU has finished).
  // A peer that does not take part within the timeout ends the job instead.
  virtual void Wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string_view backend() const = 0;
  // Where this backend's tensors must live: CPU, or the CUDA device of an NCCL communicator.
  virtual torch::Device device() const = 0;

  // Starts an in-place all-reduce of each tensor (contiguous, on device()) and returns at
  // once; the tensors must not be read or written until the Work's Wait() returns. Every rank
  // must issue the same collectives, with the same shapes and dtypes, in the same order; the
  // result is bitwise identical on every rank.
  virtual std::unique_ptr<Work> StartAllReduce(std::vector<torch::Tensor> tensors, ReduceOp op) = 0;
  // Copies root's `tensor` into every rank's `tensor` (same shape and dtype everywhere).
  virtual void Broadcast(torch::Tensor tensor, int root) = 0;
  // Returns [world_size, ...tensor.sizes()], row r holding rank r's tensor.
  virtual torch::Tensor AllGather(const torch::Tensor& tensor) = 0;
  virtual void Barrier() = 0;

  void AllReduce(torch::Tensor tensor, ReduceOp op);
};

// "rank 2/4 (tcp): all_reduce #17 [3 tensors, 1.2 MB]": how every failure message names the
// rank and the operation.
std::string DescribeCollective(const Communicator& comm, std::string_view op, uint64_t sequence,
                               int64_t bytes = -1, int tensors = 1);

int64_t TotalBytes(const std::vector<torch::Tensor>& tensors);

// Throws std::invalid_argument unless every tensor is contiguous, lives on `device` and, for
// an average, is floating point: mistakes of the caller, caught before any peer is involved.
void CheckCollectiveInputs(std::string_view op, const std::vector<torch::Tensor>& tensors, torch::Device device,
                           ReduceOp reduce = ReduceOp::kSum);

// Logs `message` at ERROR, flushes the log files and ends the process with
// kCollectiveFailureExitCode, without running destructors (they could block on the very
// peers that failed).
[[noreturn]] void AbortJob(const std::string& message);

}  // namespace iisan::distributed
