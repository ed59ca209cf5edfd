// The sweep's parts without training: the spec and its validation against the config schema,
// the searchers, the early-stopping rules, and the scheduler's protocol on its database.
#include <cmath>
#include <regex>
#include <set>

#include <gtest/gtest.h>

#include <sys/stat.h>

#include <thread>

#include "launcher/sweep/early_stopping.h"
#include "launcher/sweep/line_rpc.h"
#include "launcher/sweep/scheduler.h"
#include "launcher/sweep/searcher.h"
#include "launcher/sweep/sweep_report.h"
#include "launcher/sweep/sweep_spec.h"

namespace iisan::launcher::sweep {
namespace {

namespace fs = std::filesystem;

fs::path Fresh(const std::string& name) {
  auto dir = fs::path(::testing::TempDir()) / ("sweep_logic_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

Json BaseSpec() {
  return Json::parse(R"({
    "name": "t",
    "base": {"train": {"epochs": 9}},
    "space": {
      "train.lr.recsys": {"loguniform": [1e-5, 1e-2]},
      "model.dropout": {"uniform": [0.0, 0.3]},
      "model.embedding_dim": {"choice": [32, 64]},
      "seed": {"int": [1, 1000]},
      "model.lora_rank": {"choice": [4, 8], "when": {"model.method": "lora"}}
    },
    "trials": 20, "seed": 7, "concurrency": 2,
    "early_stopping": {"rule": "asha", "reduction_factor": 3, "grace_period": 1, "max_epochs": 9}
  })");
}

std::string ErrorOf(const Json& document) {
  try {
    ParseSweepSpec(document, "spec.json");
  } catch (const std::exception& error) {
    return error.what();
  }
  return "";
}

TEST(SweepSpecTest, ChecksEveryKeyAndRangeAgainstTheSchema) {
  EXPECT_EQ(ErrorOf(BaseSpec()), "");
  auto unknown = BaseSpec();
  unknown["space"]["train.lr.recsis"] = {{"choice", {1e-3}}};
  EXPECT_NE(ErrorOf(unknown).find("train.lr.recsis"), std::string::npos) << ErrorOf(unknown);
  auto out_of_range = BaseSpec();
  out_of_range["space"]["model.dropout"] = {{"uniform", {0.0, 1.5}}};
  EXPECT_NE(ErrorOf(out_of_range).find("model.dropout"), std::string::npos) << ErrorOf(out_of_range);
  auto bad_log = BaseSpec();
  bad_log["space"]["train.lr.recsys"] = {{"loguniform", {0.0, 1e-2}}};
  EXPECT_NE(ErrorOf(bad_log).find("loguniform"), std::string::npos);
  auto bad_metric = BaseSpec();
  bad_metric["metric"] = "valid.hr@11";
  EXPECT_NE(ErrorOf(bad_metric).find("metric"), std::string::npos);
  auto grid_range = BaseSpec();
  grid_range["searcher"] = "grid";
  EXPECT_NE(ErrorOf(grid_range).find("grid searcher"), std::string::npos);
  auto bad_when = BaseSpec();
  bad_when["space"]["model.lora_rank"]["when"] = {{"model.method", "loraa"}};
  EXPECT_NE(ErrorOf(bad_when).find("model.method"), std::string::npos) << ErrorOf(bad_when);
  auto unknown_field = BaseSpec();
  unknown_field["trails"] = 3;
  EXPECT_NE(ErrorOf(unknown_field).find("trails"), std::string::npos);
  auto two_kinds = BaseSpec();
  two_kinds["space"]["model.dropout"]["choice"] = {0.1};
  EXPECT_NE(ErrorOf(two_kinds).find("exactly one"), std::string::npos);
}

TEST(SweepSpecTest, RoundTripsThroughJson) {
  const auto spec = ParseSweepSpec(BaseSpec(), "spec.json");
  const auto again = ParseSweepSpec(spec.ToJson(), "again");
  EXPECT_EQ(spec.ToJson(), again.ToJson());
}

TEST(SearcherTest, RandomDrawsDependOnlyOnSeedAndTrialAndStayInRange) {
  const auto spec = ParseSweepSpec(BaseSpec(), "spec.json");
  auto a = MakeSearcher(spec), b = MakeSearcher(spec);
  EXPECT_EQ(a->Budget(), 20);
  std::vector<Json> forward;
  for (int i = 0; i < 20; ++i) forward.push_back(*a->Suggest(i, {}));
  for (int i = 19; i >= 0; --i) EXPECT_EQ(*b->Suggest(i, {}), forward[static_cast<size_t>(i)]) << i;
  EXPECT_FALSE(a->Suggest(20, {}).has_value());
  std::set<double> lrs;
  for (const auto& params : forward) {
    const double lr = params["train.lr.recsys"].get<double>();
    EXPECT_GE(lr, 1e-5);
    EXPECT_LE(lr, 1e-2);
    lrs.insert(lr);
    const double dropout = params["model.dropout"].get<double>();
    EXPECT_GE(dropout, 0.0);
    EXPECT_LT(dropout, 0.3);
    const auto seed = params["seed"].get<int64_t>();
    EXPECT_GE(seed, 1);
    EXPECT_LE(seed, 1000);
    const auto dim = params["model.embedding_dim"].get<int>();
    EXPECT_TRUE(dim == 32 || dim == 64);
    // model.method is iisan in the base: the LoRA key is not searched.
    EXPECT_FALSE(params.contains("model.lora_rank")) << params.dump();
  }
  EXPECT_EQ(lrs.size(), 20u);
  // Another seed, other draws.
  auto other_json = BaseSpec();
  other_json["seed"] = 8;
  EXPECT_NE(*MakeSearcher(ParseSweepSpec(other_json, "x"))->Suggest(0, {}), forward[0]);
}

TEST(SearcherTest, GridEnumeratesCombinationsAndHonoursConditions) {
  const auto spec = ParseSweepSpec(Json::parse(R"({
    "base": {},
    "searcher": "grid",
    "space": {
      "model.method": {"grid": ["iisan", "lora"]},
      "model.lora_rank": {"grid": [4, 8], "when": {"model.method": "lora"}},
      "seed": {"choice": [1, 2]}
    }})"), "grid.json");
  auto searcher = MakeSearcher(spec);
  // iisan × {1, 2} (lora_rank dropped, duplicates merged) + lora × {4, 8} × {1, 2}.
  ASSERT_EQ(searcher->Budget(), 6);
  std::set<std::string> seen;
  int with_rank = 0;
  for (int i = 0; i < 6; ++i) {
    const auto params = *searcher->Suggest(i, {});
    seen.insert(params.dump());
    if (params.contains("model.lora_rank")) {
      ++with_rank;
      EXPECT_EQ(params["model.method"], "lora");
    }
  }
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_EQ(with_rank, 4);
}

TEST(EarlyStoppingTest, AshaRungsAndQuantileCutoff) {
  auto spec = ParseSweepSpec(BaseSpec(), "spec.json");
  EXPECT_EQ(AshaRungs(spec.early_stopping, 9), (std::vector<int>{1, 3}));
  EXPECT_EQ(AshaRungs(spec.early_stopping, 10), (std::vector<int>{1, 3, 9}));
  std::map<int, TrialProgress> trials;
  auto report = [&](int trial, int epoch, double value) {
    trials[trial].metric[epoch] = value;
    trials[trial].last_epoch = std::max(trials[trial].last_epoch, epoch);
  };
  report(0, 1, 0.10);
  EXPECT_EQ(Decide(spec, 9, 0, 1, trials), Decision::kContinue);  // no earlier trial
  report(1, 1, 0.05);
  EXPECT_EQ(Decide(spec, 9, 1, 1, trials), Decision::kStop);  // below trial 0
  report(2, 1, 0.20);
  EXPECT_EQ(Decide(spec, 9, 2, 1, trials), Decision::kContinue);
  // Not a rung: always continue.
  report(0, 2, 0.0);
  EXPECT_EQ(Decide(spec, 9, 0, 2, trials), Decision::kContinue);
  // Trial 3 reaches rung 3 before trial 2 did: it waits for it.
  report(3, 1, 0.30);
  report(3, 2, 0.30);
  report(3, 3, 0.31);
  report(0, 3, 0.12);
  trials[1].ended = true;  // stopped at rung 1
  EXPECT_EQ(Decide(spec, 9, 3, 3, trials), Decision::kWait);
  report(2, 2, 0.2);
  report(2, 3, 0.25);
  EXPECT_EQ(Decide(spec, 9, 3, 3, trials), Decision::kContinue);
  // The cutoff is the 2/3 quantile of the earlier trials' best so far (0.12, 0.25 -> 0.2067).
  // Trial 4's rung-3 cutoff: the 2/3 quantile of 0.12, 0.25, 0.31 (trial 1 ended at rung 1) = 0.27.
  report(4, 1, 0.5);
  report(4, 3, 0.2);
  EXPECT_EQ(Decide(spec, 9, 4, 3, trials), Decision::kContinue);  // best so far 0.5
  report(5, 1, 0.26);
  report(5, 3, 0.26);
  trials[4].ended = true;
  EXPECT_EQ(Decide(spec, 9, 5, 3, trials), Decision::kStop);  // 0.26 < 2/3 quantile of 0.12, 0.25, 0.31, 0.5
}

TEST(EarlyStoppingTest, AshaJudgesOnlyEarlierTrialsWhateverTheOrderOfReports) {
  auto spec = ParseSweepSpec(BaseSpec(), "spec.json");
  // Trial 1 reports first; trial 0 later with a better value: trial 1's decision waits for it.
  std::map<int, TrialProgress> trials;
  trials[0];
  trials[1].metric[1] = 0.1;
  trials[1].last_epoch = 1;
  EXPECT_EQ(Decide(spec, 9, 1, 1, trials), Decision::kWait);
  trials[0].metric[1] = 0.2;
  trials[0].last_epoch = 1;
  EXPECT_EQ(Decide(spec, 9, 1, 1, trials), Decision::kStop);
  EXPECT_EQ(Decide(spec, 9, 0, 1, trials), Decision::kContinue);
}

TEST(EarlyStoppingTest, MedianRuleNeedsMinTrialsAndComparesRunningMeans) {
  auto json = BaseSpec();
  json["early_stopping"] = {{"rule", "median"}, {"grace_period", 2}, {"min_trials", 2}, {"max_epochs", 9}};
  const auto spec = ParseSweepSpec(json, "median.json");
  std::map<int, TrialProgress> trials;
  for (int t = 0; t < 2; ++t) {
    for (int e = 1; e <= 3; ++e) trials[t].metric[e] = 0.1 * (t + 1);
    trials[t].last_epoch = 3;
  }
  trials[2].metric = {{1, 0.05}, {2, 0.05}};
  trials[2].last_epoch = 2;
  EXPECT_EQ(Decide(spec, 9, 2, 1, trials), Decision::kContinue);  // before the grace period
  EXPECT_EQ(Decide(spec, 9, 2, 2, trials), Decision::kStop);      // 0.05 < median(0.1, 0.2)
  trials[3].metric = {{1, 0.5}, {2, 0.5}};
  trials[3].last_epoch = 2;
  EXPECT_EQ(Decide(spec, 9, 3, 2, trials), Decision::kContinue);
  // Trial 1 has one earlier trial (0), below min_trials: it continues whatever its value.
  trials[1].metric = {{1, 0.0}, {2, 0.0}};
  EXPECT_EQ(Decide(spec, 9, 1, 2, trials), Decision::kContinue);
}

Json Request(const std::string& op) {
  Json request;
  request["op"] = op;
  return request;
}

Json Record(int epoch, double hr10) {
  Json valid;
  valid["HR@5"] = hr10 / 2;
  valid["NDCG@5"] = hr10 / 4;
  valid["HR@10"] = hr10;
  valid["NDCG@10"] = hr10 / 3;
  valid["HR@20"] = hr10;
  valid["NDCG@20"] = hr10 / 3;
  valid["users"] = 100;
  Json record;
  record["epoch"] = epoch;
  record["train_loss"] = 1.0;
  record["train_steps"] = 10;
  record["valid"] = valid;
  return record;
}

TEST(SweepStateTest, MalformedMessagesChangeNothingAndStaleAttemptsAreAbandoned) {
  const auto dir = Fresh("protocol");
  auto spec = ParseSweepSpec(BaseSpec(), "spec.json");
  spec.heartbeat_timeout_s = 10;
  SweepState state(spec, dir);
  auto pull = Request("pull");
  pull["worker"] = "w0";
  const auto first = state.Handle(pull, 1000);
  ASSERT_TRUE(first.contains("trial")) << first.dump();
  EXPECT_EQ(first["trial"]["id"], 0);
  EXPECT_EQ(first["trial"]["attempt"], 1);
  EXPECT_EQ(first["trial"]["config"]["train"]["resume"], "auto");
  EXPECT_EQ(first["trial"]["config"]["train"]["epochs"], 9);

  const auto before = state.Progress(1001).ToJson();
  for (const char* text : {R"({"op":"epoch"})", R"({"op":"epoch","trial":0,"attempt":1})",
                           R"({"op":"epoch","trial":0,"attempt":1,"record":{"epoch":1}})",
                           R"({"op":"epoch","trial":"0","attempt":1,"record":{}})",
                           R"({"op":"finish","trial":0,"attempt":1,"status":"great"})",
                           R"({"op":"finish","trial":0,"attempt":1,"status":"completed","caches":{"built":-1}})",
                           R"({"op":"pull"})", R"({"op":"pull","worker":7})", R"({"op":"nope"})", R"([1,2])",
                           R"({"op":"epoch","trial":99,"attempt":1,"record":{}})"}) {
    const auto reply = state.Handle(Json::parse(text), 1001);
    EXPECT_FALSE(reply.value("ok", true)) << text << " -> " << reply.dump();
    EXPECT_TRUE(reply.contains("error")) << text;
  }
  auto bad_epoch = Request("epoch");
  bad_epoch["trial"] = 0;
  bad_epoch["attempt"] = 1;
  bad_epoch["record"] = Record(10, 0.1);  // beyond max_epochs
  EXPECT_FALSE(state.Handle(bad_epoch, 1001).value("ok", true));
  EXPECT_EQ(state.Progress(1001).ToJson()["running"], before["running"]);
  EXPECT_EQ(state.Progress(1001).ToJson()["best"], before["best"]);

  // A good epoch report: trial 0 has no earlier trial, continue.
  auto epoch = Request("epoch");
  epoch["trial"] = 0;
  epoch["attempt"] = 1;
  epoch["record"] = Record(1, 0.2);
  EXPECT_EQ(state.Handle(epoch, 1002)["decision"], "continue");
  // The lease lapses: the trial goes back to pending and is handed out again as attempt 2.
  state.ExpireLeases(1020);
  const auto again = state.Handle(pull, 1021);
  ASSERT_TRUE(again.contains("trial"));
  EXPECT_EQ(again["trial"]["id"], 0);
  EXPECT_EQ(again["trial"]["attempt"], 2);
  // The first attempt's messages are now stale.
  EXPECT_TRUE(state.Handle(epoch, 1022).value("abandon", false));
  auto beat = Request("heartbeat");
  beat["trial"] = 0;
  beat["attempt"] = 1;
  EXPECT_TRUE(state.Handle(beat, 1022).value("abandon", false));
  beat["attempt"] = 2;
  EXPECT_FALSE(state.Handle(beat, 1022).value("abandon", false));
  EXPECT_EQ(state.Progress(1022).retries, 1);
}

TEST(SweepStateTest, ARestartedSchedulerKeepsEveryTrialEpochAndDecision) {
  const auto dir = Fresh("restart");
  auto spec = ParseSweepSpec(BaseSpec(), "spec.json");
  auto pull = Request("pull");
  pull["worker"] = "w0";
  {
    SweepState state(spec, dir);
    for (int t = 0; t < 2; ++t) ASSERT_TRUE(state.Handle(pull, 100).contains("trial"));
    auto epoch = Request("epoch");
    epoch["trial"] = 0;
    epoch["attempt"] = 1;
    epoch["record"] = Record(1, 0.3);
    EXPECT_EQ(state.Handle(epoch, 101)["decision"], "continue");
    epoch["trial"] = 1;
    epoch["record"] = Record(1, 0.1);
    EXPECT_EQ(state.Handle(epoch, 101)["decision"], "stop");
    auto finish = Request("finish");
    finish["trial"] = 1;
    finish["attempt"] = 1;
    finish["status"] = "stopped";
    EXPECT_TRUE(state.Handle(finish, 102).value("ok", false));
  }
  // Another spec in the same directory is refused, naming the field.
  auto other = BaseSpec();
  other["trials"] = 21;
  try {
    SweepState wrong(ParseSweepSpec(other, "other.json"), dir);
    ADD_FAILURE() << "a different spec was accepted";
  } catch (const std::exception& error) {
    EXPECT_NE(std::string(error.what()).find("trials"), std::string::npos) << error.what();
  }
  SweepState state(spec, dir);
  const auto progress = state.Progress(200);
  EXPECT_EQ(progress.running, 1);
  EXPECT_EQ(progress.pruned, 1);
  EXPECT_DOUBLE_EQ(*progress.best, 0.3);
  // Trial 0 is still running with attempt 1: its worker carries on after the restart.
  auto beat = Request("heartbeat");
  beat["trial"] = 0;
  beat["attempt"] = 1;
  EXPECT_FALSE(state.Handle(beat, 201).value("abandon", false));
  // The next pull hands out trial 2, not 1 again.
  EXPECT_EQ(state.Handle(pull, 202)["trial"]["id"], 2);
  // A re-sent epoch gets the decision recorded before the restart.
  auto epoch = Request("epoch");
  epoch["trial"] = 0;
  epoch["attempt"] = 1;
  epoch["record"] = Record(1, 0.3);
  EXPECT_EQ(state.Handle(epoch, 203)["decision"], "continue");
}

TEST(SweepStateTest, ConcurrencyCapsRunningTrialsAndDeathsAreBounded) {
  const auto dir = Fresh("bounded");
  auto json = BaseSpec();
  json["max_attempts"] = 2;
  json["heartbeat_timeout_s"] = 5;
  SweepState state(ParseSweepSpec(json, "spec.json"), dir);
  auto pull = Request("pull");
  pull["worker"] = "w";
  EXPECT_TRUE(state.Handle(pull, 0).contains("trial"));
  EXPECT_TRUE(state.Handle(pull, 0).contains("trial"));
  EXPECT_TRUE(state.Handle(pull, 0).contains("wait"));  // concurrency 2
  state.ExpireLeases(10);                               // both lapse: attempt 2 each
  EXPECT_EQ(state.Handle(pull, 10)["trial"]["attempt"], 2);
  EXPECT_EQ(state.Handle(pull, 10)["trial"]["attempt"], 2);
  state.ExpireLeases(20);  // lapse again: max_attempts reached, failed
  const auto progress = state.Progress(20);
  EXPECT_EQ(progress.failed, 2);
  EXPECT_EQ(progress.running, 0);
}

TEST(SchedulerServerTest, TcpNeedsTheTokenWhichOnlyTheOwnerCanRead) {
  const auto dir = Fresh("tcp");
  SweepState state(ParseSweepSpec(BaseSpec(), "spec.json"), dir);
  SchedulerOptions options;
  options.listen = "127.0.0.1:0";
  options.token = "s3cret-token";
  SchedulerServer server(state, options);
  std::thread io([&] { server.Run(); });
  const auto [endpoint, token] = FindScheduler(dir);
  EXPECT_EQ(endpoint, server.endpoint());
  EXPECT_EQ(token, "s3cret-token");
  struct stat info {};
  ASSERT_EQ(::stat((dir / "token").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  auto status = Request("status");
  const auto refused = CallLine(endpoint, status, std::chrono::seconds(10));
  EXPECT_FALSE(refused.value("ok", true)) << refused.dump();
  status["token"] = "s3cret-tokeN";
  EXPECT_FALSE(CallLine(endpoint, status, std::chrono::seconds(10)).value("ok", true));
  status["token"] = token;
  EXPECT_TRUE(CallLine(endpoint, status, std::chrono::seconds(10)).value("ok", false));
  server.Stop();
  io.join();
  // Without a token, TCP is refused at once.
  options.token.clear();
  EXPECT_THROW(SchedulerServer(state, options), ConfigError);
}

}  // namespace
}  // namespace iisan::launcher::sweep

namespace iisan::launcher::sweep {
namespace {

// A categorical key whose last values have no trials yet (a sweep still running, a grid in
// method order): every category's label stays on the 640-wide chart, in order.
TEST(SweepReportTest, EveryCategoryHasAPlaceOnTheChartWithOrWithoutTrials) {
  const std::vector<std::string> methods = {"iisan", "fft", "adapter", "lora", "bitfit"};
  const std::string svg = ScatterSvg("valid.hr@10 against model.method", "model.method", "valid.hr@10",
                                     {{0, 0.05}, {1, 0.09}, {2, 0.08}, {3, 0.03}}, false, false, methods);
  std::vector<double> xs;
  for (const auto& method : methods) {
    std::smatch match;
    ASSERT_TRUE(std::regex_search(svg, match, std::regex("<text x=\"([0-9.]+)\"[^>]*>" + method + "</text>")))
        << method << "\n" << svg;
    xs.push_back(std::stod(match[1].str()));
  }
  for (size_t i = 0; i < xs.size(); ++i) {
    EXPECT_GT(xs[i], 70.0) << methods[i];
    EXPECT_LT(xs[i], 620.0) << methods[i];
    if (i) {
      EXPECT_GT(xs[i], xs[i - 1]) << methods[i];
    }
  }
}

}  // namespace
}  // namespace iisan::launcher::sweep
