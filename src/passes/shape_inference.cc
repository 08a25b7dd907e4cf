// InferShapes: forward type/shape inference through the op registry.
#include "ops/registry.h"
#include "passes/pass_util.h"
#include "passes/passes.h"

namespace kiln::passes {
namespace internal {

namespace {

// Known value > named symbol > unknown. Between two different symbols keep the
// inferred one: it is derived from the graph inputs, so it stays consistent
// with them (declared output symbols are often just different spellings).
ir::Dim MergeDim(const ir::Dim& declared, const ir::Dim& inferred, bool* conflict) {
  if (declared.is_known() && inferred.is_known()) {
    if (declared.value != inferred.value) *conflict = true;
    return declared;
  }
  if (declared.is_known()) return declared;
  if (inferred.is_known()) return inferred;
  return inferred.symbol.empty() ? declared : inferred;
}

}  // namespace

void MergeInferredType(ir::Value& value, const ir::TensorType& inferred, const ir::Node& node) {
  ir::TensorType& current = value.type;
  auto conflict_error = [&] {
    Fail(node.Describe(), ": output '", value.name, "' is declared as ", current.ToString(),
         " but inferred as ", inferred.ToString());
  };
  if (inferred.dtype != DType::kUndefined) {
    if (current.dtype != DType::kUndefined && current.dtype != inferred.dtype) conflict_error();
  }
  if (inferred.has_rank() && current.has_rank()) {
    if (inferred.rank() != current.rank()) conflict_error();
    bool conflict = false;
    ir::Shape merged(inferred.shape->size());
    for (size_t i = 0; i < merged.size(); ++i)
      merged[i] = MergeDim((*current.shape)[i], (*inferred.shape)[i], &conflict);
    if (conflict) conflict_error();
    current.shape = std::move(merged);
  } else if (inferred.has_rank()) {
    current.shape = inferred.shape;
  }
  if (inferred.dtype != DType::kUndefined) current.dtype = inferred.dtype;
}

void InferAndMerge(ir::Node& node) {
  std::vector<const ir::TensorType*> types(node.inputs.size(), nullptr);
  std::vector<const Tensor*> values(node.inputs.size(), nullptr);
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    const ir::Value* in = node.inputs[i];
    if (!in) continue;
    types[i] = &in->type;
    if (in->is_constant()) values[i] = &in->constant;
  }
  std::vector<ir::TensorType> inferred = InferNode(node, types, values);
  for (size_t i = 0; i < node.outputs.size() && i < inferred.size(); ++i)
    if (node.outputs[i]) MergeInferredType(*node.outputs[i], inferred[i], node);
}

std::vector<ir::Node*> NodeList(const ir::Graph& graph) {
  std::vector<ir::Node*> nodes;
  nodes.reserve(graph.nodes().size());
  for (const auto& n : graph.nodes()) nodes.push_back(n.get());
  return nodes;
}

}  // namespace internal

void InferShapes(ir::Graph& graph) {
  // Graph inputs have no producer, so they keep their declared types; every
  // node output is refined in topological order.
  for (ir::Node* node : internal::NodeList(graph)) internal::InferAndMerge(*node);
}

}  // namespace kiln::passes
