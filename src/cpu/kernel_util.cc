#include "cpu/kernel_util.h"

#include <cstring>

namespace kiln::cpu {

namespace {
bool IsHalf(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }
}  // namespace

CpuKernelFn WithFloat32Compute(CpuKernelFn kernel) {
  return [kernel](KernelContext& ctx) {
    bool any_half = false;
    for (int i = 0; i < ctx.num_inputs(); ++i)
      any_half |= ctx.has_input(i) && IsHalf(ctx.input(i).dtype());
    for (int i = 0; i < ctx.num_outputs(); ++i)
      any_half |= ctx.has_output(i) && IsHalf(ctx.output(i).dtype());
    if (!any_half) {
      kernel(ctx);
      return;
    }
    std::vector<Tensor> widened_inputs(static_cast<size_t>(ctx.num_inputs()));
    std::vector<const Tensor*> inputs(static_cast<size_t>(ctx.num_inputs()), nullptr);
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      if (!ctx.has_input(i)) continue;
      const Tensor& in = ctx.input(i);
      if (IsHalf(in.dtype())) {
        widened_inputs[static_cast<size_t>(i)] = in.CastTo(DType::kFloat32);
        inputs[static_cast<size_t>(i)] = &widened_inputs[static_cast<size_t>(i)];
      } else {
        inputs[static_cast<size_t>(i)] = &in;
      }
    }
    std::vector<Tensor> wide_outputs(static_cast<size_t>(ctx.num_outputs()));
    std::vector<Tensor*> outputs(static_cast<size_t>(ctx.num_outputs()), nullptr);
    for (int i = 0; i < ctx.num_outputs(); ++i) {
      if (!ctx.has_output(i)) continue;
      Tensor& out = ctx.output(i);
      if (IsHalf(out.dtype())) {
        wide_outputs[static_cast<size_t>(i)] = Tensor(DType::kFloat32, out.dims());
        outputs[static_cast<size_t>(i)] = &wide_outputs[static_cast<size_t>(i)];
      } else {
        outputs[static_cast<size_t>(i)] = &out;
      }
    }
    KernelContext wide(ctx.node(), inputs, outputs);
    kernel(wide);
    for (int i = 0; i < ctx.num_outputs(); ++i) {
      if (!ctx.has_output(i) || !wide_outputs[static_cast<size_t>(i)].defined()) continue;
      Tensor narrowed = wide_outputs[static_cast<size_t>(i)].CastTo(ctx.output(i).dtype());
      std::memcpy(ctx.output(i).raw_data(), narrowed.raw_data(), narrowed.nbytes());
    }
  };
}

}  // namespace kiln::cpu
