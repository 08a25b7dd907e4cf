#include "ops/registry.h"

namespace kiln {

void RegisterElementwiseCpuKernels(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
