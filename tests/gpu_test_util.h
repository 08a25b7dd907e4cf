// Helpers for GPU tests: run one node through its GPU layer and compare with
// the CPU reference backend. Every GPU test starts with KILN_REQUIRE_GPU(),
// which skips (visibly, with the reason) where no device is present.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cuda/device.h"
#include "cuda/layer.h"
#include "ir/graph.h"
#include "kiln/tensor.h"

#define KILN_REQUIRE_GPU()                                                  \
  do {                                                                      \
    std::string kiln_why_;                                                  \
    if (!::kiln::cuda::DeviceAvailable(&kiln_why_))                         \
      GTEST_SKIP() << "no GPU: " << kiln_why_;                              \
  } while (0)

namespace kiln::testing {

struct GpuNodeOptions {
  int opset = 17;
  int num_outputs = 1;
  // Inputs that are constants (weights, shape operands): the layer sees
  // their host values at creation, as in a built engine.
  std::vector<bool> constant_inputs;
  gpu::PrecisionOptions precision;
  // Run every tactic the layer offers, not only the first.
  bool all_tactics = true;
  // The outputs' types for ops without registry inference (fused GPU-only
  // ops such as KilnSumLayerNorm); empty: inferred.
  std::vector<ir::TensorType> output_types;
  // The outputs' memory layouts (default row-major); NHWC outputs of rank 4
  // are returned in logical NCHW order.
  std::vector<gpu::Layout> output_layouts;
};

// Runs op_type on `inputs` (host tensors, already in the dtype the layer
// should see; undefined = omitted optional input) through the registered GPU
// layer, with row-major layouts. Outputs are poisoned with NaN bytes before
// each run. Returns the outputs of each tactic run: result[tactic][output].
std::vector<std::vector<Tensor>> RunNodeOnGpu(const std::string& op_type,
                                              const std::vector<Tensor>& inputs,
                                              const ir::Attributes& attrs,
                                              const GpuNodeOptions& options = {});

// Runs the node on the CPU backend (inputs converted to float32 where they
// are float16/bfloat16, so the reference is computed in float32) and on the
// GPU, and expects every output of every tactic to match within
// |gpu - cpu| <= atol + rtol * |cpu| (exact for integer/bool outputs), with
// no NaN left where the reference has none.
void ExpectGpuMatchesCpu(const std::string& op_type, const std::vector<Tensor>& inputs,
                         const ir::Attributes& attrs, const GpuNodeOptions& options = {},
                         double rtol = 1e-5, double atol = 1e-6);

// Mean milliseconds per layer.Enqueue(args) on args.stream: `warmup`
// launches, then `iterations` timed with CUDA events (for DISABLED_ timing tests).
double TimeEnqueueMs(const gpu::Layer& layer, const gpu::LaunchArgs& args, int warmup = 3,
                     int iterations = 20);

}  // namespace kiln::testing
