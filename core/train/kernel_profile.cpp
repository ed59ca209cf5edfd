// Kineto windows and their aggregation into per-kernel (per-op) rows, and the files of profile/.
//
// The profiler API used is the one that LibTorch 1.13 and 2.x share
// (torch/csrc/autograd/profiler_kineto.h): prepareProfiler, enableProfiler, disableProfiler,
// ProfilerConfig(ProfilerState::KINETO) and ActivityType::{CPU, CUDA}, and of KinetoEvent name(),
// activityType(), deviceType() and startThreadId(). Event times differ: 1.13 has startUs() and
// durationUs(), 2.x startNs() and durationNs(); EventStartNs and EventDurationNs take whichever
// the event type has.
#include "core/train/kernel_profile.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>

#include <glog/logging.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include "core/data/atomic_file.h"
#include "core/train/device_stats.h"

namespace iisan::train {
namespace {

namespace kineto = torch::autograd::profiler;
namespace profiler = torch::profiler::impl;
using Clock = std::chrono::steady_clock;

// libkineto::ActivityType values, which KinetoEvent::activityType() returns as a number (LibTorch
// installs no Kineto header). The same in the Kineto of LibTorch 1.13 and of 2.x
// (libkineto/include/ActivityType.h: CPU_OP = 0, ..., GPU_MEMCPY = 3, GPU_MEMSET = 4,
// CONCURRENT_KERNEL = 5).
constexpr uint8_t kCpuOp = 0;
constexpr uint8_t kGpuMemcpy = 3;
constexpr uint8_t kGpuMemset = 4;
constexpr uint8_t kConcurrentKernel = 5;

template <typename Event>
uint64_t EventStartNs(const Event& event) {
  if constexpr (requires { event.startNs(); }) {
    return event.startNs();
  } else {
    return event.startUs() * 1000;
  }
}

template <typename Event>
uint64_t EventDurationNs(const Event& event) {
  if constexpr (requires { event.durationNs(); }) {
    return event.durationNs();
  } else {
    return event.durationUs() * 1000;
  }
}

struct Activity {
  std::string name;
  const char* kind;
  uint64_t thread = 0;
  uint64_t start = 0, duration = 0;  // ns
  uint64_t self = 0;                 // ns: the device time, or a CPU op's self time
  uint64_t end() const { return start + duration; }
};

const char* DeviceKind(uint8_t activity_type) {
  switch (activity_type) {
    case kConcurrentKernel: return "kernel";
    case kGpuMemcpy: return "memcpy";
    case kGpuMemset: return "memset";
    default: return nullptr;  // runtime calls, annotations (which overlap the kernels they cover)
  }
}

std::vector<Activity> Collect(const kineto::ProfilerResult& result, bool on_device) {
  std::vector<Activity> activities;
  for (const auto& event : result.events()) {
    const char* kind = nullptr;
    if (on_device) {
      if (event.deviceType() == c10::DeviceType::CUDA) kind = DeviceKind(event.activityType());
    } else if (event.deviceType() == c10::DeviceType::CPU && event.activityType() == kCpuOp) {
      kind = "cpu op";
    }
    if (!kind) continue;
    const uint64_t duration = EventDurationNs(event);
    activities.push_back({event.name(), kind, event.startThreadId(), EventStartNs(event), duration, duration});
  }
  return activities;
}

// Self times of CPU ops: an op's self time is the time during which it was the innermost op
// running on its thread (the one that started last among those still running), so the ops of a
// thread share out exactly the time that some op of it ran. Nested ops' intervals do not always
// nest exactly (times are rounded), which rules out subtracting each op's duration from its caller's.
void AssignSelfTimes(std::vector<Activity>& ops) {
  struct Edge {
    uint64_t time;
    bool opens;
    size_t op;
  };
  std::vector<Edge> edges;
  edges.reserve(2 * ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    ops[i].self = 0;
    edges.push_back({ops[i].start, true, i});
    edges.push_back({ops[i].end(), false, i});
  }
  std::sort(edges.begin(), edges.end(), [](const Edge& a, const Edge& b) {
    if (a.time != b.time) return a.time < b.time;
    return a.opens && !b.opens;  // a zero-length op opens before it closes
  });
  // Per thread, its running ops by (start, longest first, index): the last one is the innermost.
  using Key = std::tuple<uint64_t, int64_t, size_t>;
  std::map<uint64_t, std::set<Key>> running;
  auto key = [&](size_t i) { return Key(ops[i].start, -static_cast<int64_t>(ops[i].duration), i); };
  uint64_t previous = edges.empty() ? 0 : edges.front().time;
  for (const auto& edge : edges) {
    if (edge.time > previous) {
      for (const auto& [thread, open] : running) {
        if (!open.empty()) ops[std::get<2>(*open.rbegin())].self += edge.time - previous;
      }
      previous = edge.time;
    }
    auto& open = running[ops[edge.op].thread];
    if (edge.opens) {
      open.insert(key(edge.op));
    } else {
      open.erase(key(edge.op));
    }
  }
}

// The time covered by at least one of the intervals.
uint64_t CoveredNs(std::vector<Activity> activities) {
  std::sort(activities.begin(), activities.end(),
            [](const Activity& a, const Activity& b) { return a.start < b.start; });
  uint64_t covered = 0, reach = 0;
  for (const auto& a : activities) {
    const uint64_t from = std::max(a.start, reach);
    if (a.end() > from) covered += a.end() - from;
    reach = std::max(reach, a.end());
  }
  return covered;
}

std::string Printf(const char* format, auto... values) {
  const int size = std::snprintf(nullptr, 0, format, values...);
  std::string text(static_cast<size_t>(std::max(size, 0)), '\0');
  std::snprintf(text.data(), text.size() + 1, format, values...);
  return text;
}

}  // namespace

double KernelProfile::kernels_per_step() const {
  return steps > 0 ? static_cast<double>(kernel_calls) / static_cast<double>(steps) : 0.0;
}

double KernelProfile::busy_fraction() const { return wall_seconds > 0.0 ? busy_seconds / wall_seconds : 0.0; }

nlohmann::ordered_json KernelProfile::ToJson() const {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const auto& k : kernels) {
    rows.push_back({{"name", k.name},
                    {"kind", k.kind},
                    {"calls", k.calls},
                    {"total_seconds", k.total_seconds},
                    {"mean_seconds", k.calls > 0 ? k.total_seconds / static_cast<double>(k.calls) : 0.0},
                    {"share", k.share}});
  }
  const double per = steps > 0 ? 1.0 / static_cast<double>(steps) : 0.0;
  nlohmann::ordered_json json = {{"phase", phase},
                                 {"device", device},
                                 {"activities", activities},
                                 {"time", on_device() ? "device time" : "self time of CPU ops"},
                                 {"step_engine", step_engine},
                                 {"step_name", step_name},
                                 {"epoch", epoch}};
  if (phase == "train_steps") json["first_step"] = first_step;
  json["steps"] = steps;
  json["wall_seconds"] = wall_seconds;
  json["wall_seconds_per_step"] = wall_seconds * per;
  json["kernel_seconds"] = kernel_seconds;
  json["kernel_seconds_per_step"] = kernel_seconds * per;
  json["busy_seconds"] = busy_seconds;
  json["busy_fraction"] = busy_fraction();
  json["kernel_calls"] = kernel_calls;
  json["kernels_per_step"] = kernels_per_step();
  json["note"] = note;
  json["kernels"] = std::move(rows);
  return json;
}

namespace {

// "1 training step", "3 evaluation batches".
std::string Count(int64_t n, const std::string& noun) {
  std::string text = std::to_string(n) + " " + noun;
  if (n != 1) text += noun.ends_with("ch") || noun.ends_with("s") ? "es" : "s";
  return text;
}

std::string Heading(const KernelProfile& p) {
  std::string text = "== " + p.phase + ": " + Count(p.steps, p.step_name);
  if (p.phase == "train_steps") {
    text += Printf(" (epoch %d, steps %lld-%lld of it)", p.epoch, static_cast<long long>(p.first_step + 1),
                   static_cast<long long>(p.first_step + p.steps));
  } else {
    text += Printf(" (after epoch %d)", p.epoch);
  }
  text += ", " + p.step_engine + ", device " + p.device + ", Kineto activities " + p.activities + "\n";
  const double per = p.steps > 0 ? 1e3 / static_cast<double>(p.steps) : 0.0;
  const std::string unit = p.on_device() ? "kernel" : "op";
  text += Printf("wall time per %s: %.3f ms\n", p.step_name.c_str(), p.wall_seconds * per);
  text += Printf("%s time per %s: %.3f ms (%s, summed)\n", unit.c_str(), p.step_name.c_str(), p.kernel_seconds * per,
                 p.on_device() ? "device time of kernels, copies and sets" : "self time of CPU ops");
  text += Printf("%s busy: %.1f%% of the wall time\n", p.on_device() ? "device" : "ops", 100.0 * p.busy_fraction());
  text += Printf("%s per %s: %.1f\n", p.on_device() ? "kernels" : "CPU ops", p.step_name.c_str(), p.kernels_per_step());
  if (!p.note.empty()) text += "note: " + p.note + "\n";
  return text;
}

std::string Rows(const std::vector<ProfiledKernel>& rows, size_t count) {
  std::string text = Printf("%8s %12s %9s %12s  %-7s %s\n", "share", "total ms", "calls", "mean us", "kind", "name");
  for (size_t i = 0; i < std::min(count, rows.size()); ++i) {
    const auto& k = rows[i];
    const double mean_us = k.calls > 0 ? 1e6 * k.total_seconds / static_cast<double>(k.calls) : 0.0;
    text += Printf("%7.2f%% %12.3f %9lld %12.3f  %-7s %s\n", 100.0 * k.share, 1e3 * k.total_seconds,
                   static_cast<long long>(k.calls), mean_us, k.kind.c_str(), k.name.c_str());
  }
  if (rows.size() > count) text += Printf("... %zu more\n", rows.size() - count);
  return text;
}

}  // namespace

std::string KernelProfile::ToText() const { return Heading(*this) + Rows(kernels, kernels.size()); }

std::string KernelProfile::Top(size_t rows) const { return Heading(*this) + Rows(kernels, rows); }

KernelProfiler::KernelProfiler(const torch::Device& device) : device_(device) {}

KernelProfiler::~KernelProfiler() {
  if (!active_) return;
  try {
    kineto::disableProfiler();
  } catch (const std::exception& error) {
    LOG(WARNING) << "closing an unfinished profiling window: " << error.what();
  }
}

void KernelProfiler::Start() {
  if (active_) throw std::logic_error("KernelProfiler::Start: the window is open already");
  if (profiler::profilerEnabled()) {
    throw std::runtime_error("train.profile_steps: another LibTorch profiler is active on this thread; "
                             "only one can record at a time");
  }
  SynchronizeDevice(device_);  // earlier work stays out of the window
  std::set<profiler::ActivityType> activities = {profiler::ActivityType::CPU};
  if (device_.is_cuda()) activities.insert(profiler::ActivityType::CUDA);
  const profiler::ProfilerConfig config(profiler::ProfilerState::KINETO);
  try {
    kineto::prepareProfiler(config, activities);
    kineto::enableProfiler(config, activities);
  } catch (const std::exception& error) {
    throw std::runtime_error(std::string("train.profile_steps: LibTorch's Kineto profiler did not start on ") +
                             device_.str() + ": " + error.what());
  }
  active_ = true;
  start_ = Clock::now();
}

KernelProfile KernelProfiler::Stop() {
  if (!active_) throw std::logic_error("KernelProfiler::Stop: no window is open");
  SynchronizeDevice(device_);
  const auto stop = Clock::now();
  active_ = false;
  const auto result = kineto::disableProfiler();

  KernelProfile profile;
  profile.device = device_.str();
  profile.activities = device_.is_cuda() ? "cpu+cuda" : "cpu";
  profile.wall_seconds = std::chrono::duration<double>(stop - start_).count();
  auto activities = Collect(*result, device_.is_cuda());
  if (!device_.is_cuda()) AssignSelfTimes(activities);
  profile.busy_seconds = 1e-9 * static_cast<double>(CoveredNs(activities));

  std::map<std::pair<std::string, std::string>, ProfiledKernel> rows;
  uint64_t total_ns = 0;
  for (const auto& a : activities) {
    auto& row = rows[{a.name, a.kind}];
    row.name = a.name;
    row.kind = a.kind;
    ++row.calls;
    row.total_seconds += 1e-9 * static_cast<double>(a.self);
    total_ns += a.self;
    if (device_.is_cpu() || row.kind == "kernel") ++profile.kernel_calls;
  }
  profile.kernel_seconds = 1e-9 * static_cast<double>(total_ns);
  if (device_.is_cuda() && profile.kernel_calls == 0) {
    profile.note = "CUPTI recorded no kernel: LibTorch's Kineto may lack CUDA support, or libcupti failed to load";
  }
  for (auto& [key, row] : rows) {
    row.share = profile.kernel_seconds > 0.0 ? row.total_seconds / profile.kernel_seconds : 0.0;
    profile.kernels.push_back(std::move(row));
  }
  std::sort(profile.kernels.begin(), profile.kernels.end(), [](const ProfiledKernel& a, const ProfiledKernel& b) {
    if (a.total_seconds != b.total_seconds) return a.total_seconds > b.total_seconds;
    return a.name < b.name;
  });
  return profile;
}

void WriteProfileFiles(const std::filesystem::path& dir, const std::vector<KernelProfile>& profiles) {
  std::filesystem::create_directories(dir);
  std::string summary =
      "Per-kernel profile of a window of training steps and of the evaluation pass after it "
      "(train.profile_steps), recorded with LibTorch's Kineto profiler. Rows: device activities timed on the "
      "device (CUDA) or CPU ops by self time (CPU). The profiled epoch's timings in metrics.jsonl include the "
      "profiler's overhead.\n";
  for (const auto& profile : profiles) {
    data::WriteFileAtomically(dir / (profile.phase + ".json"), profile.ToJson().dump(2) + "\n");
    summary += "\n" + profile.ToText();
  }
  data::WriteFileAtomically(dir / "summary.txt", summary);
}

}  // namespace iisan::train
