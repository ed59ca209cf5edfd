// One rank of a multi-process test, under mpirun (MPI backend) or under LaunchLocal (TCP
// backend, `distributed_worker launch N <scenario>`); the world comes from the environment, as
// in `iisan`. With --cuda, each rank works on its own GPU through NCCL. Scenarios:
//   collectives  every collective against values each rank can compute alone
//   equivalence  N ranks with GradientSynchronizer vs one process, on the tiny problem
//   evaluation   sharded ranking metrics reduced vs computed over all users
//   stall        the last rank sleeps instead of joining an all-reduce
//   die          the last rank's process ends while the others are inside an all-reduce
// Exit status 0 when every check passed; checks print "rank r: FAILED ...". The failure
// scenarios are judged by expect_failure.cmake from the surviving ranks' messages.
#include <chrono>
#include <iostream>
#include <thread>

#include <glog/logging.h>
#include <torch/torch.h>

#include "distributed/local_launch.h"
#include "distributed/metric_reduction.h"
#include "distributed/parameter_sync.h"
#include "distributed/process_group.h"
#include "tests/distributed/tiny_problem.h"

namespace iisan::distributed {
namespace {

constexpr auto kFailureTimeout = std::chrono::milliseconds(2000);
constexpr auto kTimeout = std::chrono::milliseconds(60000);

int failures = 0;

void Expect(bool ok, Communicator& comm, const std::string& what) {
  if (ok) return;
  std::cerr << "rank " << comm.rank() << ": FAILED " << what << std::endl;
  ++failures;
}

void Collectives(Communicator& comm) {
  const int W = comm.world_size(), r = comm.rank();
  const auto on = torch::TensorOptions().device(comm.device());
  const double rank_sum = W * (W - 1) / 2.0;
  auto big = torch::full({300000}, static_cast<double>(r), on.dtype(torch::kFloat64));  // several MB
  auto ints = torch::full({7}, static_cast<int64_t>(r + 1), on.dtype(torch::kInt64));
  auto avg = torch::full({5}, static_cast<float>(r), on.dtype(torch::kFloat32));
  auto first = comm.StartAllReduce({big, ints}, ReduceOp::kSum);
  auto second = comm.StartAllReduce({avg}, ReduceOp::kAverage);
  second->Wait();
  first->Wait();
  Expect(torch::equal(big.cpu(), torch::full({300000}, rank_sum, torch::kFloat64)), comm, "all_reduce sum (float64)");
  Expect(torch::equal(ints.cpu(), torch::full({7}, static_cast<int64_t>(W * (W + 1) / 2), torch::kInt64)), comm,
         "all_reduce sum (int64)");
  Expect(torch::allclose(avg.cpu(), torch::full({5}, static_cast<float>(rank_sum / W))), comm, "all_reduce average");
  for (int root = 0; root < W; ++root) {
    auto t = torch::full({3, 2}, static_cast<float>(r), on.dtype(torch::kFloat32));
    comm.Broadcast(t, root);
    Expect(torch::equal(t.cpu(), torch::full({3, 2}, static_cast<float>(root))), comm,
           "broadcast from " + std::to_string(root));
  }
  const auto gathered = comm.AllGather(torch::full({4}, static_cast<int64_t>(r * r), on.dtype(torch::kInt64))).cpu();
  for (int q = 0; q < W; ++q) Expect(gathered[q][3].item<int64_t>() == q * q, comm, "all_gather row " + std::to_string(q));
  comm.Barrier();
}

void Equivalence(Communicator& comm) {
  const testing::TinyProblem problem(41, comm.device());
  const int64_t per_rank_batch = 3;
  const int epochs = 3;
  auto reference = testing::MakeTinyModel(comm.device());
  ShardingOptions single;
  single.batch_size = per_rank_batch * comm.world_size();
  testing::TrainTiny(problem, reference, UserSharder(problem.rows, 1, single), epochs, 0, nullptr);
  const auto expected = testing::FlatParameters(reference);

  {
    auto model = testing::MakeTinyModel(comm.device());
    {
      // Each rank starts elsewhere: the broadcast from rank 0 must make them agree.
      torch::NoGradGuard no_grad;
      for (auto& p : model->parameters()) p.add_(0.05 * comm.rank());
    }
    BroadcastTensors(comm, model->parameters());
    GradientSynchronizer sync(comm, model->parameters(), /*bucket_bytes=*/128);
    ShardingOptions options;
    options.batch_size = per_rank_batch * comm.world_size();
    testing::TrainTiny(problem, model, UserSharder(problem.rows, comm.world_size(), options), epochs, comm.rank(), &sync);
    CheckTensorsInSync(comm, model->parameters(), {}, epochs);
    const float diff = (testing::FlatParameters(model) - expected).abs().max().item<float>();
    std::cout << "rank " << comm.rank() << ": " << "max |N ranks - 1 process| = " << diff << std::endl;
    Expect(diff <= 1e-5f, comm, "equivalence with one process");
  }
}

void Evaluation(Communicator& comm) {
  const int64_t users = 1003;
  auto ranks_of = [](UserRange range) { return torch::arange(range.begin, range.end, torch::kInt64) % 31 + 1; };
  train::RankingMetrics expected({1, 10}), local({1, 10});
  train::AccumulateRanks(ranks_of({0, users}), expected);
  train::AccumulateRanks(ranks_of(EvaluationRange(users, comm.world_size(), comm.rank())), local);
  const auto reduced = ReduceRankingMetrics(comm, local, users);
  Expect(reduced.users == users && reduced.hit_sum == expected.hit_sum, comm, "reduced metrics");
  Expect(std::abs(reduced.ndcg(10) - expected.ndcg(10)) < 1e-12, comm, "reduced NDCG@10");
}

void Stall(Communicator& comm) {
  if (comm.rank() == comm.world_size() - 1) std::this_thread::sleep_for(std::chrono::seconds(60));
  comm.AllReduce(torch::ones({16}, torch::TensorOptions().device(comm.device())), ReduceOp::kSum);
}

void Die(Communicator& comm) {
  const auto on = torch::TensorOptions().device(comm.device());
  comm.AllReduce(torch::ones({16}, on), ReduceOp::kSum);  // a healthy collective first
  // The others are inside the next all-reduce when the last rank's process ends.
  if (comm.rank() == comm.world_size() - 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::_Exit(9);
  }
  comm.AllReduce(torch::ones({1 << 16}, on), ReduceOp::kSum);
}

int RunRank(const std::string& scenario, bool cuda) {
  const bool failing = scenario == "stall" || scenario == "die";
  const auto world = ResolveWorld({}, ProcessEnvironment());
  if (world.world_size < 2) {
    std::cerr << "distributed_worker: start it with mpirun or `distributed_worker launch N " << scenario << "`\n";
    return 2;
  }
  CollectiveOptions options;
  options.timeout = failing ? kFailureTimeout : kTimeout;
  const auto device = LocalDevice(world, cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU));
  auto group = JoinProcessGroup(world, device, options);
  Communicator& comm = group.For(device);
  if (scenario == "collectives") {
    Collectives(comm);
  } else if (scenario == "equivalence") {
    Equivalence(comm);
  } else if (scenario == "evaluation") {
    Evaluation(comm);
  } else if (scenario == "stall") {
    Stall(comm);
  } else if (scenario == "die") {
    Die(comm);
  } else {
    std::cerr << "distributed_worker: unknown scenario " << scenario << "\n";
    return 2;
  }
  if (failures == 0) std::cout << "rank " << comm.rank() << " (" << comm.backend() << "): " << scenario << " ok\n";
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace iisan::distributed

int main(int argc, char** argv) {
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  torch::set_num_threads(1);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() >= 3 && args[0] == "launch") {
    iisan::distributed::LocalLaunchOptions options;
    options.nproc = std::stoi(args[1]);
    options.command = {argv[0]};
    options.command.insert(options.command.end(), args.begin() + 2, args.end());
    // Longer than the failure scenarios' timeout: a surviving rank reports before it is ended.
    options.grace = std::chrono::seconds(3);
    const auto result = iisan::distributed::LaunchLocal(options);
    if (result.exit_code != 0) std::cerr << "launch: " << result.message << "\n";
    return result.exit_code;
  }
  const bool cuda = !args.empty() && args[0] == "--cuda";
  if (cuda) args.erase(args.begin());
  if (args.size() != 1) {
    std::cerr << "usage: distributed_worker [launch N] [--cuda] <scenario>\n";
    return 2;
  }
  try {
    return iisan::distributed::RunRank(args[0], cuda);
  } catch (const std::exception& e) {
    std::cerr << "distributed_worker: " << e.what() << "\n";
    return 1;
  }
}
