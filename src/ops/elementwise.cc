#include "ops/registry.h"

namespace kiln {

void RegisterElementwiseOps(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
