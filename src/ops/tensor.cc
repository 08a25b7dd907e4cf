#include "ops/registry.h"

namespace kiln {

void RegisterTensorOps(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
