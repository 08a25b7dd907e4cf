#include "passes/passes.h"

namespace kiln::passes {

void Optimize(ir::Graph& graph) { (void)graph; }

}  // namespace kiln::passes
