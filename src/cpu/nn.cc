#include "ops/registry.h"

namespace kiln {

void RegisterNnCpuKernels(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
