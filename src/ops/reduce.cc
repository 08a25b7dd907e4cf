#include "ops/registry.h"

namespace kiln {

void RegisterReduceOps(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
