// The autograd function behind AllGatherWithGradient.
#include "distributed/all_gather_autograd.h"

#include <torch/torch.h>

namespace iisan::distributed {
namespace {

class AllGatherFunction : public torch::autograd::Function<AllGatherFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& tensor, Communicator* comm) {
    // The communicator outlives the step's graph, so a pointer in the context is safe.
    ctx->saved_data["comm"] = reinterpret_cast<int64_t>(comm);
    return comm->AllGather(tensor.contiguous());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    auto summed = grads[0].contiguous().clone();
    comm->AllReduce(summed, ReduceOp::kSum);
    return {summed[comm->rank()], torch::Tensor()};
  }
};

}  // namespace

torch::Tensor AllGatherWithGradient(Communicator& comm, const torch::Tensor& tensor) {
  return AllGatherFunction::apply(tensor, &comm);
}

}  // namespace iisan::distributed
