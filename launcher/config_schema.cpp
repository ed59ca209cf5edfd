// The config schema: every key the framework understands, with its type, default, allowed range
// or choices, one line of help and the Config field it lives in. The single source of defaults
// and validation (`iisan config schema` prints it). train.batch_size and train.lr.* default to 0,
// which means the reference's value for model.method (IISAN.md §6: batch 64 for IISAN, 32 for the
// baselines).
#include "launcher/config_schema.h"

#include <cctype>
#include <limits>

namespace iisan::launcher::schema {
namespace {

// The getter and setter of one Config field, from its member path (`train.lr.recsys`).
#define IISAN_CONFIG_FIELD(member)                                  \
  [](const Config& config) { return Json(config.member); },         \
      [](Config& config, const Json& value) { value.get_to(config.member); }

using Reader = std::function<Json(const Config&)>;
using Writer = std::function<void(Config&, const Json&)>;

constexpr int64_t kMebi = int64_t{1} << 20;

KeySpec String(std::string key, std::string value, std::string help, Reader read, Writer write) {
  KeySpec spec;
  spec.key = std::move(key);
  spec.type = KeyType::kString;
  spec.default_value = std::move(value);
  spec.help = std::move(help);
  spec.read = std::move(read);
  spec.write = std::move(write);
  return spec;
}

KeySpec Choice(std::string key, std::string value, std::vector<std::string> choices, std::string help, Reader read,
               Writer write) {
  auto spec = String(std::move(key), std::move(value), std::move(help), std::move(read), std::move(write));
  spec.choices = std::move(choices);
  return spec;
}

KeySpec Integer(std::string key, int64_t value, int64_t min, uint64_t max, std::string help, Reader read,
                Writer write) {
  KeySpec spec;
  spec.key = std::move(key);
  spec.type = KeyType::kInteger;
  spec.default_value = value;
  spec.min_integer = min;
  spec.max_integer = max;
  spec.help = std::move(help);
  spec.read = std::move(read);
  spec.write = std::move(write);
  return spec;
}

KeySpec IntegerList(std::string key, std::vector<int> value, int64_t min, uint64_t max, size_t max_items,
                    std::string help, Reader read, Writer write) {
  auto spec = Integer(std::move(key), 0, min, max, std::move(help), std::move(read), std::move(write));
  spec.type = KeyType::kIntegerList;
  spec.default_value = value;
  spec.max_items = max_items;
  return spec;
}

KeySpec Number(std::string key, double value, double min, double max, std::string help, Reader read, Writer write) {
  KeySpec spec;
  spec.key = std::move(key);
  spec.type = KeyType::kNumber;
  spec.default_value = value;
  spec.min_number = min;
  spec.max_number = max;
  spec.help = std::move(help);
  spec.read = std::move(read);
  spec.write = std::move(write);
  return spec;
}

KeySpec Boolean(std::string key, bool value, std::string help, Reader read, Writer write) {
  KeySpec spec;
  spec.key = std::move(key);
  spec.type = KeyType::kBoolean;
  spec.default_value = value;
  spec.help = std::move(help);
  spec.read = std::move(read);
  spec.write = std::move(write);
  return spec;
}

// cpu, cuda, or cuda:N with N a device ordinal in [0, 1023] (no sign, no leading zeros).
bool IsDeviceName(const std::string& name) {
  if (name == "cpu" || name == "cuda") return true;
  if (name.rfind("cuda:", 0) != 0) return false;
  const std::string ordinal = name.substr(5);
  if (ordinal.empty() || ordinal.size() > 4 || (ordinal.size() > 1 && ordinal[0] == '0')) return false;
  for (char c : ordinal) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return std::stoi(ordinal) <= 1023;
}

std::vector<KeySpec> Build() {
  std::vector<KeySpec> keys = {
      String("name", "", "run name: the run directory is run_root/name (empty: train-<timestamp>)",
             IISAN_CONFIG_FIELD(name)),
      String("run_root", "runs", "folder that holds the run directories", IISAN_CONFIG_FIELD(run_root)),
      Integer("seed", 12345, 0, std::numeric_limits<uint64_t>::max(),
              "seed of the trained weights' initialisation, the user order and dropout (random backbone weights: "
              "model.backbone_init_seed)",
              IISAN_CONFIG_FIELD(seed)),

      String("data.dir", "", "dataset folder (users.tsv, items.tsv, images/)", IISAN_CONFIG_FIELD(data.dir)),
      Integer("data.min_seq_len", 5, 3, 100000, "users with fewer interactions are dropped (train, valid, test need 3)",
              IISAN_CONFIG_FIELD(data.min_seq_len)),
      Integer("data.max_seq_len", 10, 1, 4096, "longest history the user encoder sees",
              IISAN_CONFIG_FIELD(data.max_seq_len)),

      Choice("model.method", "iisan", {"iisan", "iisan-uncached", "fft", "adapter", "lora", "bitfit"},
             "training method: cached IISAN, IISAN on live backbones, or a fine-tuning baseline",
             IISAN_CONFIG_FIELD(model.method)),
      Choice("model.modality", "text+image", {"text", "image", "text+image"}, "item modalities the model encodes",
             IISAN_CONFIG_FIELD(model.modality)),
      String("model.text_backbone", "", "Hugging Face BERT-family folder (config.json, vocab.txt, model.safetensors)",
             IISAN_CONFIG_FIELD(model.text_backbone)),
      String("model.image_backbone", "",
             "Hugging Face ViT-family folder (config.json, preprocessor_config.json, model.safetensors)",
             IISAN_CONFIG_FIELD(model.image_backbone)),
      Integer("model.backbone_init_seed", 12345, 0, std::numeric_limits<uint64_t>::max(),
              "seed of a backbone's random weights when its folder has no model.safetensors (text: this seed, image: "
              "this seed + 1); part of the cache key only then, and independent of seed, so a seed sweep shares one "
              "cache",
              IISAN_CONFIG_FIELD(model.backbone_init_seed)),
      IntegerList("model.kept_layers", {}, 0, 1024, 1025,
                  "hidden-state indices the side network reads, each in [0, layers] (empty: 0 and every other layer); "
                  "the cache stores only these, so they are part of its key",
                  IISAN_CONFIG_FIELD(model.kept_layers)),
      Choice("model.iisan_towers", "intra+inter", {"intra+inter", "intra", "inter"},
             "IISAN's SAN towers (the paper's ablation, the reference's --modality): intra+inter (an intra-modal tower "
             "per modality and the inter-modal tower; with one modality, its intra tower only), intra (intra-modal "
             "towers only), inter (the inter-modal tower only; needs model.modality=text+image)",
             IISAN_CONFIG_FIELD(model.iisan_towers)),
      Choice("model.fusion", "gated", {"gated", "add"},
             "how each IISAN SAN block's input joins the backbone's layer state and the tower's running state (the "
             "reference's fusion_method): gated (learnable scalar gates, IISAN.md §3.3) or add (plain sums, no gate "
             "parameters); the towers' outputs are concatenated into com_dense either way",
             IISAN_CONFIG_FIELD(model.fusion)),
      Choice("model.iisan_schedule", "auto", {"auto", "separate", "stacked"},
             "how the IISAN side network runs its towers: separate (one after the other, the reference's order), "
             "stacked (block k of every tower in one batched matrix product: the same arithmetic in about a third "
             "of the kernels, equal to rounding) or auto (stacked on a GPU, separate on the CPU)",
             IISAN_CONFIG_FIELD(model.iisan_schedule)),
      Integer("model.bottleneck", 64, 1, 65536, "width of the side network's adapter bottleneck",
              IISAN_CONFIG_FIELD(model.bottleneck)),
      Integer("model.embedding_dim", 64, 1, 65536, "item and user embedding width",
              IISAN_CONFIG_FIELD(model.embedding_dim)),
      Number("model.gate_temperature", 0.1, 1e-6, 1e6, "temperature of the side network's layer gates",
             IISAN_CONFIG_FIELD(model.gate_temperature)),
      Integer("model.user_blocks", 2, 1, 256, "transformer blocks of the user encoder",
              IISAN_CONFIG_FIELD(model.user_blocks)),
      Integer("model.user_heads", 2, 1, 1024, "attention heads of the user encoder (must divide embedding_dim)",
              IISAN_CONFIG_FIELD(model.user_heads)),
      Number("model.dropout", 0.1, 0.0, 1.0, "dropout probability of the user encoder",
             IISAN_CONFIG_FIELD(model.dropout)),
      Integer("model.title_max_tokens", 30, 1, 65536, "title tokens kept, [CLS] and [SEP] included",
              IISAN_CONFIG_FIELD(model.title_max_tokens)),
      Integer("model.adapter_bottleneck", 64, 1, 65536, "bottleneck width of the adapter baseline",
              IISAN_CONFIG_FIELD(model.adapter_bottleneck)),
      Integer("model.lora_rank", 8, 1, 65536, "rank of the LoRA baseline's factors", IISAN_CONFIG_FIELD(model.lora_rank)),
      Number("model.lora_alpha", 1.0, 0.0, 1e6, "LoRA scaling numerator (the update is scaled by alpha / rank)",
             IISAN_CONFIG_FIELD(model.lora_alpha)),

      String("cache.path", "", "explicit cache file (empty: cache.dir/<key>.h5)", IISAN_CONFIG_FIELD(cache.path)),
      String("cache.dir", "cache", "folder of content-addressed caches", IISAN_CONFIG_FIELD(cache.dir)),
      Integer("cache.batch_size", 512, 1, kMebi, "items per backbone forward while building the cache",
              IISAN_CONFIG_FIELD(cache.batch_size)),
      Integer("cache.chunk_items", 1024, 1, kMebi, "items per resumable chunk of a cache build",
              IISAN_CONFIG_FIELD(cache.chunk_items)),
      Integer("cache.threads", 0, 0, 4096, "host threads preparing cache inputs (0: one per core)",
              IISAN_CONFIG_FIELD(cache.threads)),
      Choice("cache.dtype", "auto", {"auto", "float32", "bfloat16"},
             "dtype of the cached states: the backbones compute in it while caching, the cache file stores it and "
             "training keeps the table in it on the device (auto: bfloat16 when train.device is CUDA, float32 on the "
             "CPU); the resolved value is part of the cache key and of the run's config.json",
             IISAN_CONFIG_FIELD(cache.dtype)),
      String("cache.service", "", "cache service address (unix:PATH or HOST:PORT; empty: build here)",
             IISAN_CONFIG_FIELD(cache.service)),
      String("cache.token", "", "shared-secret token of the cache service (redacted in written configs; "
             "IISAN_CACHE_TOKEN is used when this is empty)",
             IISAN_CONFIG_FIELD(cache.token)),
      Number("cache.service_timeout_s", 60.0, 10.0, 1e6,
             "seconds a job waits for the cache service to let it in, and between two lines of its reply (it "
             "sends one every 5 s while a build runs)",
             IISAN_CONFIG_FIELD(cache.service_timeout_s)),

      String("train.device", "cpu", "training device: cpu, cuda or cuda:N", IISAN_CONFIG_FIELD(train.device)),
      Integer("train.batch_size", 0, 0, kMebi, "users per step, at least 2 (0: the method's reference, 64 or 32)",
              IISAN_CONFIG_FIELD(train.batch_size)),
      Integer("train.epochs", 100, 1, 1000000, "most epochs to train", IISAN_CONFIG_FIELD(train.epochs)),
      Integer("train.patience", 10, 0, 1000000, "stop after patience + 1 epochs without a new best validation HR@10",
              IISAN_CONFIG_FIELD(train.patience)),
      Integer("train.max_steps_per_epoch", 0, 0, int64_t{1} << 40, "cap on steps per epoch (0: a full pass)",
              IISAN_CONFIG_FIELD(train.max_steps_per_epoch)),
      Choice("train.matmul_precision", "auto", {"auto", "float32", "tf32"},
             "float32 matrix products on CUDA: float32 (full precision, SIMT kernels), tf32 (tensor cores, 10-bit "
             "mantissa inputs, float32 accumulation) or auto (tf32 on CUDA, float32 on the CPU, which has no tf32)",
             IISAN_CONFIG_FIELD(train.matmul_precision)),
      Boolean("train.cuda_graph", true, "on CUDA, capture the cached IISAN step as a CUDA graph",
              IISAN_CONFIG_FIELD(train.cuda_graph)),
      Choice("train.resume", "false", {"false", "true", "auto"},
             "continue run_root/name from its last checkpoint: true (it must have one), auto (when it has one, "
             "else start it; for requeued jobs) or false",
             IISAN_CONFIG_FIELD(train.resume)),
      Integer("train.max_requeues", 5, 0, 1000,
              "times a Slurm job stopped by SIGUSR2/SIGTERM requeues itself to continue (0: never)",
              IISAN_CONFIG_FIELD(train.max_requeues)),
      Integer("train.checkpoint_every", 1, 0, 1000000, "epochs between resumable checkpoints (0: none)",
              IISAN_CONFIG_FIELD(train.checkpoint_every)),
      Integer("train.check_sync_every", 0, 0, int64_t{1} << 40,
              "steps between checks that the ranks' weights agree (0: never)",
              IISAN_CONFIG_FIELD(train.check_sync_every)),
      Integer("train.profile_steps", 0, 0, 1000,
              "profile this many training steps of the first epoch, from its 11th step (after warm-up and CUDA "
              "graph capture), and the evaluation pass after that epoch, kernel by kernel (CPU ops on the CPU) with "
              "the Kineto profiler, into run_dir/profile/ (0: off)",
              IISAN_CONFIG_FIELD(train.profile_steps)),
      Number("train.collective_timeout_s", 300.0, 0.001, 1e6, "seconds a collective may stall before every rank aborts",
             IISAN_CONFIG_FIELD(train.collective_timeout_s)),
      Number("train.bucket_mb", 4.0, 0.001, 16384.0, "gradient all-reduce bucket size, MiB",
             IISAN_CONFIG_FIELD(train.bucket_mb)),
      Number("train.lr.recsys", 0.0, 0.0, 1000.0, "learning rate of the side network and user encoder (0: reference)",
             IISAN_CONFIG_FIELD(train.lr.recsys)),
      Number("train.lr.text", 0.0, 0.0, 1000.0, "learning rate of the text backbone's trained weights (0: reference)",
             IISAN_CONFIG_FIELD(train.lr.text)),
      Number("train.lr.image", 0.0, 0.0, 1000.0, "learning rate of the image backbone's trained weights (0: reference)",
             IISAN_CONFIG_FIELD(train.lr.image)),
      Number("train.lr.adapter_text", 0.0, 0.0, 1000.0, "learning rate of text adapters / LoRA (0: reference)",
             IISAN_CONFIG_FIELD(train.lr.adapter_text)),
      Number("train.lr.adapter_image", 0.0, 0.0, 1000.0, "learning rate of image adapters / LoRA (0: reference)",
             IISAN_CONFIG_FIELD(train.lr.adapter_image)),
      Number("train.lr.scale", 1.0, 1e-6, 1e6,
             "multiplies every learning rate above once 0s are resolved to the reference's (one knob that tunes a "
             "method's learning rates together, keeping their ratios)",
             IISAN_CONFIG_FIELD(train.lr.scale)),

      Integer("eval.batch_size", kMebi, 1, kMebi,
              "most users scored per evaluation matmul (the default caps nothing: eval.memory_mb sizes the chunks)",
              IISAN_CONFIG_FIELD(eval.batch_size)),
      Integer("eval.memory_mb", 128, 1, kMebi,
              "device memory (MiB) for one chunk of evaluation: of users (their user-encoder activations, their scores "
              "against every item and the comparisons that rank them) and of cached IISAN's items being embedded; a "
              "chunk holds as many as fit",
              IISAN_CONFIG_FIELD(eval.memory_mb)),
      IntegerList("eval.ks", {5, 10, 20}, 1, 100000, 64, "cut-offs K of HR@K and NDCG@K (must contain 10)",
                  IISAN_CONFIG_FIELD(eval.ks)),
      Boolean("eval.count_repeated_targets", false,
              "rank a target that repeats an item of the user's history (false: every history item is excluded, so "
              "such a target always misses, as in the reference, IISAN.md §9.9)",
              IISAN_CONFIG_FIELD(eval.count_repeated_targets)),
  };
  for (auto& spec : keys) {
    if (spec.key == "train.device") {
      spec.pattern = "cpu, cuda or cuda:N (N in [0, 1023])";
      spec.matches = IsDeviceName;
    }
    if (spec.key == "cache.token") spec.secret = true;
  }
  return keys;
}

#undef IISAN_CONFIG_FIELD

}  // namespace

const char* KeyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kString:
      return "string";
    case KeyType::kInteger:
      return "integer";
    case KeyType::kNumber:
      return "number";
    case KeyType::kBoolean:
      return "boolean";
    case KeyType::kIntegerList:
      return "list of integers";
  }
  return "?";
}

const std::vector<KeySpec>& Keys() {
  static const std::vector<KeySpec> keys = Build();
  return keys;
}

}  // namespace iisan::launcher::schema
