// EliminateDeadCode and RemoveIdentities.
#include <algorithm>
#include <unordered_set>

#include "passes/pass_util.h"
#include "passes/passes.h"

namespace kiln::passes {
namespace {

// Dropout is an identity at inference unless its mask is used or it is
// switched to training mode (opset 12+: a third input, which must then be a
// constant false to be removable).
bool IsInferenceDropout(const ir::Graph& graph, const ir::Node& node) {
  if (node.outputs.size() > 1 && node.outputs[1] != nullptr) {
    const ir::Value* mask = node.outputs[1];
    if (graph.IsGraphOutput(mask) || !graph.Consumers(mask).empty()) return false;
  }
  if (node.has_input(2)) {
    const ir::Value* training = node.inputs[2];
    if (!training->is_constant() || training->constant.numel() != 1) return false;
    if (training->constant.GetAsInt64(0) != 0) return false;
  }
  return true;
}

bool IsRemovableIdentity(const ir::Graph& graph, const ir::Node& node) {
  if (!node.domain.empty() && node.domain != "ai.onnx") return false;
  if (!node.has_input(0) || node.outputs.empty() || node.outputs[0] == nullptr) return false;
  if (node.op_type == "Identity") return true;
  if (node.op_type == "Dropout") return IsInferenceDropout(graph, node);
  return false;
}

}  // namespace

int EliminateDeadCode(ir::Graph& graph) {
  // Walk backwards from the graph outputs; a node is live when a live node
  // or a graph output uses one of its outputs.
  std::unordered_set<const ir::Value*> live(graph.outputs().begin(), graph.outputs().end());
  std::vector<ir::Node*> nodes = internal::NodeList(graph);
  int removed = 0;
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    ir::Node* node = *it;
    bool used = std::any_of(node->outputs.begin(), node->outputs.end(),
                            [&](const ir::Value* v) { return v && live.count(v); });
    if (used) {
      live.insert(node->inputs.begin(), node->inputs.end());
    } else {
      graph.RemoveNode(node);
      ++removed;
    }
  }
  graph.RemoveUnusedValues();
  return removed;
}

int RemoveIdentities(ir::Graph& graph) {
  int removed = 0;
  for (ir::Node* node : internal::NodeList(graph)) {
    if (!IsRemovableIdentity(graph, *node)) continue;
    ir::Value* in = node->inputs[0];
    ir::Value* out = node->outputs[0];
    if (!graph.IsGraphOutput(out)) {
      graph.ReplaceAllUses(out, in);
      graph.RemoveNode(node);
      ++removed;
      continue;
    }
    // `out` is a graph output and must keep its name. Rename the other way:
    // the producer of `in` writes `out` directly, and `in`'s consumers read
    // `out`. A graph input or output feeding it has a name of its own to keep.
    if (in->is_graph_input || graph.IsGraphOutput(in)) continue;
    if (in->is_constant()) {
      graph.RemoveNode(node);
      out->constant = in->constant;
      out->type = in->type;
      ++removed;
      continue;
    }
    ir::Node* producer = in->producer;
    if (!producer) continue;
    graph.RemoveNode(node);
    graph.ReplaceAllUses(in, out);
    std::replace(producer->outputs.begin(), producer->outputs.end(), in, out);
    in->producer = nullptr;
    out->producer = producer;
    // Keep whatever is known about either side.
    if (out->type.dtype == DType::kUndefined) out->type.dtype = in->type.dtype;
    if (!out->type.has_rank()) out->type.shape = in->type.shape;
    ++removed;
  }
  if (removed) graph.RemoveUnusedValues();
  return removed;
}

}  // namespace kiln::passes
