// The fine-tuning methods of the paper's comparison (IISAN.md §5, §6), selected by one config
// key (model.method), with the reference's batch sizes and learning rates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace iisan::train {

enum class Method {
  kIisan,          // IISAN on cached backbone states: no backbone runs while training
  kIisanUncached,  // IISAN fed by live frozen backbones (forward only, no autograd)
  kFft,            // full fine-tuning of both backbones (BERT's unused pooler stays frozen)
  kAdapter,        // Houlsby adapters, two per layer of both backbones
  kLora,           // LoRA r = 8 on query and value, pretrained weights kept and frozen
  kBitfit,         // every backbone bias
};

// "iisan", "iisan-uncached", "fft", "adapter", "lora", "bitfit"; anything else throws
// std::runtime_error listing them.
Method ParseMethod(const std::string& name);
std::string MethodName(Method method);
// "IISAN (cached)", "FFT", ... for tables.
std::string MethodLabel(Method method);
const std::vector<Method>& AllMethods();

// Whether the method runs the backbones during training (all but cached IISAN).
bool UsesLiveBackbones(Method method);
// Whether the item encoder is IISAN's side network (otherwise the §3.2 head).
bool UsesSideNetwork(Method method);

struct LearningRates {
  double recsys = 2e-4;
  double text = 5e-5;
  double image = 1e-4;
  double adapter_text = 1e-4;
  double adapter_image = 1e-4;
};

// The reference scripts' settings (IISAN.md §6): batch 64 for IISAN and 32 for the
// baselines; recsys LR 1e-4 for FFT and 2e-4 otherwise; adapter LR 1e-4 for IISAN's SANs and
// 4e-4 for Adapter and LoRA.
struct MethodHyperparameters {
  int64_t batch_size = 64;
  LearningRates lr;
};
MethodHyperparameters ReferenceHyperparameters(Method method);

}  // namespace iisan::train
