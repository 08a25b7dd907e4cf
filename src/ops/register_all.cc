#include "ops/registry.h"

namespace kiln {

// Definitions (ops/<family>.cc): opset ranges, inference, FLOPs.
void RegisterElementwiseOps(OpRegistry& registry);
void RegisterNnOps(OpRegistry& registry);
void RegisterTensorOps(OpRegistry& registry);
void RegisterReduceOps(OpRegistry& registry);
void RegisterImageOps(OpRegistry& registry);  // Kiln-internal (builder), no CPU kernels.
// CPU reference kernels (cpu/<family>.cc).
void RegisterElementwiseCpuKernels(OpRegistry& registry);
void RegisterNnCpuKernels(OpRegistry& registry);
void RegisterTensorCpuKernels(OpRegistry& registry);
void RegisterReduceCpuKernels(OpRegistry& registry);

void RegisterAllOps(OpRegistry& registry) {
  RegisterElementwiseOps(registry);
  RegisterNnOps(registry);
  RegisterTensorOps(registry);
  RegisterReduceOps(registry);
  RegisterImageOps(registry);
  RegisterElementwiseCpuKernels(registry);
  RegisterNnCpuKernels(registry);
  RegisterTensorCpuKernels(registry);
  RegisterReduceCpuKernels(registry);
}

}  // namespace kiln
