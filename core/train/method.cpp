// Method names and the reference's per-method hyperparameters.
#include "core/train/method.h"

#include <stdexcept>

namespace iisan::train {

const std::vector<Method>& AllMethods() {
  static const std::vector<Method> methods = {Method::kIisan, Method::kIisanUncached, Method::kFft,
                                              Method::kAdapter, Method::kLora, Method::kBitfit};
  return methods;
}

std::string MethodName(Method method) {
  switch (method) {
    case Method::kIisan: return "iisan";
    case Method::kIisanUncached: return "iisan-uncached";
    case Method::kFft: return "fft";
    case Method::kAdapter: return "adapter";
    case Method::kLora: return "lora";
    case Method::kBitfit: return "bitfit";
  }
  throw std::logic_error("MethodName: unhandled Method value");
}

std::string MethodLabel(Method method) {
  switch (method) {
    case Method::kIisan: return "IISAN (cached)";
    case Method::kIisanUncached: return "IISAN (uncached)";
    case Method::kFft: return "FFT";
    case Method::kAdapter: return "Adapter";
    case Method::kLora: return "LoRA";
    case Method::kBitfit: return "BitFit";
  }
  throw std::logic_error("MethodLabel: unhandled Method value");
}

Method ParseMethod(const std::string& name) {
  std::string choices;
  for (Method method : AllMethods()) {
    if (MethodName(method) == name) return method;
    choices += (choices.empty() ? "" : ", ") + MethodName(method);
  }
  throw std::runtime_error("method must be one of " + choices + "; got \"" + name + "\"");
}

bool UsesLiveBackbones(Method method) { return method != Method::kIisan; }

bool UsesSideNetwork(Method method) { return method == Method::kIisan || method == Method::kIisanUncached; }

MethodHyperparameters ReferenceHyperparameters(Method method) {
  MethodHyperparameters out;
  switch (method) {
    case Method::kIisan:
    case Method::kIisanUncached:
      out.batch_size = 64;
      out.lr = {2e-4, 5e-5, 1e-4, 1e-4, 1e-4};
      break;
    case Method::kFft:
      out.batch_size = 32;
      out.lr = {1e-4, 5e-5, 1e-4, 1e-4, 1e-4};
      break;
    case Method::kAdapter:
    case Method::kLora:
      out.batch_size = 32;
      out.lr = {2e-4, 5e-5, 1e-4, 4e-4, 4e-4};
      break;
    case Method::kBitfit:
      out.batch_size = 32;
      out.lr = {2e-4, 5e-5, 1e-4, 1e-4, 1e-4};
      break;
  }
  return out;
}

}  // namespace iisan::train
