// The `iisan` command line: data, cache, train, eval, describe, report, demo, config.
#include <iostream>

#include <CLI/CLI.hpp>
#include <glog/logging.h>

#include "launcher/commands.h"
#include "launcher/report.h"
#include "launcher/startup_clock.h"
#include "launcher/sweep/sweep_report.h"
#include "launcher/sweep/sweep_run.h"

namespace {

struct ConfigArgs {
  std::string file;
  std::vector<std::string> overrides;
};

void AddConfigOptions(CLI::App* command, ConfigArgs& args) {
  command->add_option("--config,-c", args.file, "JSON config file (every key has a default)");
  command->add_option("--set,-s", args.overrides, "override a config key: --set train.batch_size=32")
      ->allow_extra_args(false);
}

}  // namespace

int main(int argc, char** argv) {
  // `iisan train` reports its start-up from here: the loading of the shared libraries included.
  const auto process_start = iisan::launcher::StartupClock::ProcessStart();
  google::InitGoogleLogging(argv[0]);
  // A crash (SIGSEGV, SIGBUS, SIGABRT, …) logs its stack trace before the process dies.
  google::InstallFailureSignalHandler();
  FLAGS_logtostderr = false;
  FLAGS_alsologtostderr = true;
  FLAGS_colorlogtostderr = false;
  // No log files until a run directory exists (then its log/ folder receives them).
  for (int severity = google::GLOG_INFO; severity < google::NUM_SEVERITIES; ++severity) {
    google::SetLogDestination(severity, "");
  }

  CLI::App app{"iisan: IISAN multimodal sequential recommendation (cached side networks on frozen backbones)"};
  app.require_subcommand(1);

  auto* data = app.add_subcommand("data", "dataset tools")->require_subcommand(1);
  std::string stats_dir;
  auto* stats = data->add_subcommand("stats", "users, items and interactions after preprocessing");
  stats->add_option("dir", stats_dir, "folder with users.tsv and items.tsv")->required();
  iisan::launcher::SynthCommandOptions synth;
  auto* synth_cmd = data->add_subcommand("synth", "write the built-in synthetic multimodal dataset");
  synth_cmd->add_option("dir", synth.dir, "output folder")->required();
  synth_cmd->add_option("--users", synth.users, "number of users")->capture_default_str();
  synth_cmd->add_option("--items", synth.items, "number of items")->capture_default_str();
  synth_cmd->add_option("--categories", synth.categories, "latent item categories")->capture_default_str();
  synth_cmd->add_option("--image-size", synth.image_size, "image side in pixels")->capture_default_str();
  synth_cmd->add_option("--seed", synth.seed, "generator seed")->capture_default_str();
  synth_cmd->add_flag("--overwrite", synth.overwrite, "replace an existing folder");

  std::string images_dir;
  int images_size = 224, images_threads = 0;
  uint64_t images_seed = 7;
  auto* images_cmd = data->add_subcommand("images", "generate a JPEG for every item that has no image");
  images_cmd->add_option("dir", images_dir, "dataset folder (users.tsv, items.tsv); images go to DIR/images")->required();
  images_cmd->add_option("--size", images_size, "image side in pixels")->capture_default_str();
  images_cmd->add_option("--seed", images_seed, "generator seed")->capture_default_str();
  images_cmd->add_option("--threads", images_threads, "encoder threads (0 = all cores)")->capture_default_str();

  auto* cache = app.add_subcommand("cache", "frozen-backbone state cache")->require_subcommand(1);
  ConfigArgs cache_args;
  std::string cache_stats_out;
  auto* cache_build = cache->add_subcommand("build", "run the frozen backbones over every item once (resumable; "
                                                     "sharded across ranks under mpirun, srun or iisan launch)");
  AddConfigOptions(cache_build, cache_args);
  cache_build->add_option("--stats-out", cache_stats_out, "also write the build's timing and FLOPs as JSON here");
  auto* cache_key = cache->add_subcommand("key", "print the config's cache key and cache path");
  AddConfigOptions(cache_key, cache_args);
  auto* cache_ls = cache->add_subcommand("ls", "list the caches and partial builds in cache.dir");
  AddConfigOptions(cache_ls, cache_args);
  int verify_rows = 16;
  uint64_t verify_seed = 1;
  double verify_tolerance = 0;
  auto* cache_verify = cache->add_subcommand("verify", "recompute a random sample of rows and compare with the cache");
  AddConfigOptions(cache_verify, cache_args);
  cache_verify->add_option("--rows", verify_rows, "rows to recompute")->capture_default_str();
  cache_verify->add_option("--seed", verify_seed, "seed of the row sample")->capture_default_str();
  cache_verify->add_option("--tolerance", verify_tolerance, "allowed difference, absolute and relative to the row's "
                                                            "largest value (0: 1e-4 for float32, 2e-2 for bfloat16)")->capture_default_str();
  std::string rm_target;
  auto* cache_rm = cache->add_subcommand("rm", "remove a cache of cache.dir (by key, or its <key>.h5 path) with its partial build and stats");
  AddConfigOptions(cache_rm, cache_args);
  cache_rm->add_option("target", rm_target, "cache key or path")->required();
  iisan::launcher::ServeOptions serve;
  auto* cache_serve = cache->add_subcommand("serve", "serve cache builds to jobs (single flight per key) on a Unix "
                                                     "socket or TCP");
  AddConfigOptions(cache_serve, cache_args);
  cache_serve->add_option("--socket", serve.socket, "Unix socket path (default: cache.dir/service.sock)");
  cache_serve->add_option("--listen", serve.listen, "HOST:PORT for TCP; an address other than loopback needs --token");
  cache_serve->add_option("--token", serve.token, "shared secret every request must carry (default: cache.token, "
                                                 "else IISAN_CACHE_TOKEN)");
  cache_serve->add_option("--workers", serve.workers, "threads for requests and builds")->capture_default_str();
  cache_serve->add_option("--max-request-bytes", serve.max_request_bytes, "longest request line accepted")
      ->capture_default_str();
  cache_serve->add_option("--idle-timeout", serve.idle_timeout_s, "seconds a connection may take to send a request "
                                                                 "or take a reply before it is closed")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 1e6));
  cache_serve->add_option("--max-connections", serve.max_connections, "connections served at once; more are refused")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));

  ConfigArgs train_args;
  auto* train = app.add_subcommand("train", "train a model (model.method: iisan, iisan-uncached, fft, adapter, lora, "
                                             "bitfit); writes a run directory");
  AddConfigOptions(train, train_args);

  std::string eval_dir;
  std::vector<std::string> eval_overrides;
  auto* eval = app.add_subcommand("eval", "evaluate a run's best checkpoint on valid and test");
  eval->add_option("run_dir", eval_dir, "run directory")->required();
  eval->add_option("--set,-s", eval_overrides, "override a key of the run's config.json, e.g. --set "
                                               "cache.token=TOKEN (run directories do not keep it; "
                                               "IISAN_CACHE_TOKEN works too)")
      ->allow_extra_args(false);

  iisan::launcher::DescribeOptions describe;
  auto* describe_cmd = app.add_subcommand("describe", "trainable and frozen parameters per module");
  describe_cmd->add_option("--method", describe.method, "iisan, iisan-uncached, fft, adapter, lora or bitfit")
      ->capture_default_str();
  describe_cmd->add_option("--text-backbone", describe.text_backbone, "folder with the text backbone's config.json");
  describe_cmd->add_option("--image-backbone", describe.image_backbone, "folder with the image backbone's config.json");
  describe_cmd->add_option("--modality", describe.modality, "text, image or text+image")->capture_default_str();

  std::string demo_dir = "runs/demo";
  std::vector<std::string> demo_overrides;
  auto* demo = app.add_subcommand("demo", "synthetic data -> cache -> IISAN training -> test table");
  demo->add_option("--workdir", demo_dir, "where the demo writes data, cache and runs")->capture_default_str();
  demo->add_option("--set,-s", demo_overrides, "override a config key");

  int launch_nproc = 1;
  std::vector<std::string> launch_args;
  auto* launch = app.add_subcommand("launch", "run N local ranks of an iisan command (data parallel, no MPI needed)");
  launch->add_option("--nproc", launch_nproc, "number of ranks")->required();
  launch->add_option("args", launch_args, "the iisan command and its arguments, after --")->required();

  auto* config_cmd = app.add_subcommand("config", "the configuration: resolved values and the schema of every key")
                     ->require_subcommand(1);
  ConfigArgs show_args;
  auto* config_show = config_cmd->add_subcommand("show", "print the resolved config as JSON (cache.token redacted)");
  AddConfigOptions(config_show, show_args);
  auto* config_schema = config_cmd->add_subcommand("schema", "print every config key: type, default, range or choices, "
                                                         "help (JSON)");

  auto* report = app.add_subcommand("report", "tables and charts from finished runs")->require_subcommand(1);
  std::vector<std::filesystem::path> report_runs;
  std::filesystem::path report_out = ".";
  auto* report_efficiency = report->add_subcommand(
      "efficiency", "training time, trainable parameters, peak memory and TPME of runs (efficiency.md/.svg)");
  report_efficiency->add_option("run_dirs", report_runs, "run directories, each with a summary.json")->required();
  report_efficiency->add_option("--out,-o", report_out, "folder for efficiency.md and efficiency.svg")
      ->capture_default_str();
  auto* report_metrics = report->add_subcommand(
      "metrics", "each run's epochs from its metrics.jsonl (finished, running or killed runs)");
  report_metrics->add_option("run_dirs", report_runs, "run directories, each with a metrics.jsonl")->required();

  auto* sweep = app.add_subcommand("sweep", "hyperparameter sweeps: search, early stopping, trials packed onto GPUs")
                    ->require_subcommand(1);
  iisan::launcher::sweep::SweepRunOptions sweep_run;
  auto* sweep_run_cmd = sweep->add_subcommand("run", "run (or resume) the sweep of SPEC.json to the end");
  sweep_run_cmd->add_option("spec", sweep_run.spec_file, "sweep spec (JSON: base, space, metric, searcher, trials, "
                                                         "concurrency, seed, early_stopping)")->required();
  sweep_run_cmd->add_option("--dir", sweep_run.dir, "sweep directory (default: <run_root>/sweeps/<name>); rerun with "
                                                    "the same directory to resume");
  sweep_run_cmd->add_option("--db", sweep_run.db, "sweep database (default: DIR/sweep.db; must be on a local disk)");
  sweep_run_cmd->add_option("--executor", sweep_run.executor, "local, slurm or inprocess")->capture_default_str();
  sweep_run_cmd->add_option("--trials-per-gpu", sweep_run.trials_per_gpu, "local executor: worker processes per GPU")
      ->capture_default_str();
  sweep_run_cmd->add_option("--mps", sweep_run.mps, "local executor, several trials per GPU: start CUDA MPS (auto, on, "
                                                    "off)")->capture_default_str();
  sweep_run_cmd->add_option("--listen", sweep_run.listen, "scheduler on TCP HOST:PORT with a token (workers on other "
                                                          "hosts); default: a Unix socket in the sweep directory");
  sweep_run_cmd->add_option("--slurm-template", sweep_run.slurm_template, "slurm executor: the worker script "
                                                                          "(default: slurm/sweep.sbatch)");
  sweep_run_cmd->add_option("--sbatch-arg", sweep_run.sbatch_args, "slurm executor: an extra sbatch option "
                                                                   "(repeatable), e.g. --sbatch-arg=--gpus=0");
  sweep_run_cmd->add_option("--progress-every", sweep_run.progress_every_s, "seconds between progress lines")
      ->capture_default_str();
  iisan::launcher::sweep::SweepWorkerOptions sweep_worker;
  auto* sweep_worker_cmd = sweep->add_subcommand("worker", "run trials of a sweep until it is done (the executors "
                                                           "start these)");
  sweep_worker_cmd->add_option("dir", sweep_worker.dir, "sweep directory")->required();
  sweep_worker_cmd->add_option("--name", sweep_worker.name, "worker name in the scheduler's log");
  sweep_worker_cmd->add_option("--reconnect", sweep_worker.reconnect_s, "seconds to keep trying to reach the "
                                                                        "scheduler")->capture_default_str();
  std::filesystem::path sweep_dir, sweep_report_out;
  auto* sweep_status_cmd = sweep->add_subcommand("status", "progress of a running sweep");
  sweep_status_cmd->add_option("dir", sweep_dir, "sweep directory")->required();
  auto* sweep_report_cmd = sweep->add_subcommand("report", "table, charts and the best config of a sweep");
  sweep_report_cmd->add_option("dir", sweep_dir, "sweep directory")->required();
  sweep_report_cmd->add_option("--out,-o", sweep_report_out, "output folder (default: DIR/report)");

  CLI11_PARSE(app, argc, argv);

  try {
    if (stats->parsed()) {
      iisan::launcher::DataStats(stats_dir, std::cout);
    } else if (synth_cmd->parsed()) {
      iisan::launcher::DataSynth(synth, std::cout);
    } else if (images_cmd->parsed()) {
      iisan::launcher::DataImages(images_dir, images_size, images_seed, images_threads, std::cout);
    } else if (cache->parsed()) {
      const auto config = iisan::launcher::LoadConfig(cache_args.file, cache_args.overrides);
      if (cache_build->parsed()) iisan::launcher::CacheBuild(config, cache_stats_out, std::cout);
      if (cache_key->parsed()) iisan::launcher::CacheKey(config, std::cout);
      if (cache_ls->parsed()) iisan::launcher::CacheList(config, std::cout);
      if (cache_verify->parsed()) {
        iisan::launcher::CacheVerify(config, verify_rows, verify_seed, verify_tolerance, std::cout);
      }
      if (cache_rm->parsed()) iisan::launcher::CacheRemove(config, rm_target, std::cout);
      if (cache_serve->parsed()) iisan::launcher::CacheServe(config, serve, std::cout);
    } else if (train->parsed()) {
      iisan::launcher::StartupClock startup(process_start);
      startup.Mark("libraries");
      const auto config = iisan::launcher::LoadConfig(train_args.file, train_args.overrides);
      startup.Mark("config");
      return iisan::launcher::TrainCommand(config, std::cout, &startup);
    } else if (eval->parsed()) {
      iisan::launcher::Evaluate(eval_dir, eval_overrides, std::cout);
    } else if (describe_cmd->parsed()) {
      iisan::launcher::Describe(describe, std::cout);
    } else if (launch->parsed()) {
      return iisan::launcher::Launch(launch_nproc, launch_args, std::cerr);
    } else if (report_efficiency->parsed()) {
      iisan::launcher::ReportEfficiency(report_runs, report_out, std::cout);
    } else if (report_metrics->parsed()) {
      iisan::launcher::ReportMetrics(report_runs, std::cout);
    } else if (config_show->parsed()) {
      const auto resolved = iisan::launcher::LoadConfig(show_args.file, show_args.overrides);
      std::cout << iisan::launcher::ConfigToJson(resolved).dump(2) << "\n";
    } else if (config_schema->parsed()) {
      std::cout << iisan::launcher::ConfigSchemaJson().dump(2) << "\n";
    } else if (sweep_run_cmd->parsed()) {
      return iisan::launcher::sweep::SweepRun(sweep_run, std::cout);
    } else if (sweep_worker_cmd->parsed()) {
      return iisan::launcher::sweep::SweepWorker(sweep_worker);
    } else if (sweep_status_cmd->parsed()) {
      iisan::launcher::sweep::SweepStatus(sweep_dir, std::cout);
    } else if (sweep_report_cmd->parsed()) {
      iisan::launcher::sweep::SweepReport(sweep_dir, sweep_report_out, std::cout);
    } else if (demo->parsed()) {
      iisan::launcher::Demo(demo_dir, demo_overrides, std::cout);
    }
  } catch (const std::exception& error) {
    std::cerr << "iisan: error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
