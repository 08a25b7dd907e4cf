#include "ops/registry.h"

namespace kiln {

void RegisterTensorCpuKernels(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
