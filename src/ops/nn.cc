#include "ops/registry.h"

namespace kiln {

void RegisterNnOps(OpRegistry& registry) { (void)registry; }

}  // namespace kiln
