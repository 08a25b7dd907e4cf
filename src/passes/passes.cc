// The default optimization pipeline.
#include "passes/passes.h"

namespace kiln::passes {

void Optimize(ir::Graph& graph) {
  RemoveIdentities(graph);
  InferShapes(graph);
  FoldConstants(graph);
  FoldBatchNorm(graph);
  EliminateDeadCode(graph);
  // Folding can make more shapes known; this also reports any conflict that
  // constant folding's best-effort refinement skipped over.
  InferShapes(graph);
  graph.Validate();
}

}  // namespace kiln::passes
