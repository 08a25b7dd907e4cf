// Target-independent graph passes. Each takes the graph by reference, keeps
// it valid and topologically sorted, and is safe to run more than once.
#pragma once

#include "ir/graph.h"

namespace kiln::passes {

// Fills every value's TensorType from the op registry's inference, using
// constant values where inference needs them (Reshape's shape, ...). Throws,
// naming the node, on a type or shape conflict.
void InferShapes(ir::Graph& graph);
// Evaluates nodes whose inputs are all constant on the CPU backend and turns
// their outputs into constants; Shape of a fully known input folds too, so
// Shape/Gather/Concat/Reshape chains collapse once shapes are known.
// Returns the number of nodes folded.
int FoldConstants(ir::Graph& graph);
// Removes nodes whose outputs nothing uses, then unused values.
int EliminateDeadCode(ir::Graph& graph);
// Removes Identity and inference-mode Dropout nodes, rewiring consumers.
int RemoveIdentities(ir::Graph& graph);
// Folds BatchNormalization into a preceding Conv (or Gemm) whose output has
// no other consumer: scales the weights and bias.
int FoldBatchNorm(ir::Graph& graph);

// The default pipeline run after import: identities, shape inference,
// constant folding, batch-norm folding, dead code, shape inference again.
void Optimize(ir::Graph& graph);

}  // namespace kiln::passes
