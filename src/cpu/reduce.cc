#include "ops/registry.h"

namespace kiln {

void RegisterReduceCpuKernels(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
