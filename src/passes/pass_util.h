// Helpers shared by the passes in this folder (not part of the passes API).
#pragma once

#include <vector>

#include "ir/graph.h"

namespace kiln::passes::internal {

// Merges an inferred type into a value's existing (declared or previously
// inferred) type, keeping the more specific of each part: a known dtype over
// undefined, a rank over none, a known dim over a symbol over unknown. Throws,
// naming `node` and the value, when both sides know a dtype, rank or dim and
// they differ.
void MergeInferredType(ir::Value& value, const ir::TensorType& inferred, const ir::Node& node);

// Runs the node's inference on the current value types (and constant values)
// and merges the results into its outputs.
void InferAndMerge(ir::Node& node);

// Snapshot of the node pointers so passes can remove nodes while iterating.
std::vector<ir::Node*> NodeList(const ir::Graph& graph);

}  // namespace kiln::passes::internal
