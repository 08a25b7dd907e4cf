// FoldConstants: evaluates constant subgraphs once at build time.
#include <algorithm>
#include <optional>
#include <set>
#include <string>

#include "cpu/executor.h"
#include "ops/registry.h"
#include "passes/pass_util.h"
#include "passes/passes.h"

namespace kiln::passes {
namespace {

// A folded result larger than this (and larger than the node's inputs) stays
// a node: ConstantOfShape/Expand/Tile would otherwise bloat the model.
constexpr size_t kMaxFoldedBytes = size_t{256} << 20;

bool IsNondeterministic(const ir::Node& node) {
  static const std::set<std::string> kRandomOps = {"RandomNormal",  "RandomNormalLike",
                                                   "RandomUniform", "RandomUniformLike",
                                                   "Multinomial",   "Bernoulli"};
  return kRandomOps.count(node.op_type) != 0;
}

bool AllInputsConstant(const ir::Node& node) {
  return std::all_of(node.inputs.begin(), node.inputs.end(),
                     [](const ir::Value* v) { return v == nullptr || v->is_constant(); });
}

const ir::Shape* FullyKnownShape(const ir::Value* v) {
  if (!v || !v->type.has_rank() || !ir::IsFullyKnown(*v->type.shape)) return nullptr;
  return &*v->type.shape;
}

// The dims a Shape node reports (its opset-15 start/end applied), known or
// not; nullopt when the input's rank is unknown.
std::optional<ir::Shape> ShapeNodeDims(const ir::Node& node) {
  if (node.op_type != "Shape" || node.inputs.size() != 1 || !node.inputs[0]) return std::nullopt;
  const ir::TensorType& type = node.inputs[0]->type;
  if (!type.has_rank()) return std::nullopt;
  const int64_t rank = type.rank();
  int64_t start = node.opset >= 15 ? node.attrs.GetInt("start", 0) : 0;
  int64_t end = node.opset >= 15 ? node.attrs.GetInt("end", rank) : rank;
  // Negative indices count from the back; both clamp to [0, rank].
  if (start < 0) start += rank;
  if (end < 0) end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  return ir::Shape(type.shape->begin() + start, type.shape->begin() + end);
}

// Shape or Size of an input whose shape is fully known, even though its
// value is not. Returns an undefined tensor otherwise.
Tensor FoldShapeOrSize(const ir::Node& node) {
  if (node.op_type == "Size") {
    const ir::Shape* shape = FullyKnownShape(node.inputs.empty() ? nullptr : node.inputs[0]);
    if (!shape) return {};
    Tensor t(DType::kInt64, {});
    t.data<int64_t>()[0] = Product(ir::KnownDims(*shape));
    return t;
  }
  std::optional<ir::Shape> dims = ShapeNodeDims(node);
  if (!dims || !ir::IsFullyKnown(*dims)) return {};
  return Tensor::FromInt64s({static_cast<int64_t>(dims->size())}, ir::KnownDims(*dims));
}

// Gather(Shape(x), constant indices) where just the selected dims are known:
// x.shape[2] of a [batch, seq, 768] tensor is 768 even with symbolic batch.
Tensor FoldGatherOfShape(const ir::Node& node) {
  if (node.op_type != "Gather" || node.inputs.size() != 2 || !node.inputs[0] || !node.inputs[1] ||
      !node.inputs[1]->is_constant() || !node.inputs[0]->producer)
    return {};
  std::optional<ir::Shape> dims = ShapeNodeDims(*node.inputs[0]->producer);
  const int64_t axis = node.attrs.GetInt("axis", 0);
  if (!dims || (axis != 0 && axis != -1)) return {};
  const Tensor& indices = node.inputs[1]->constant;
  if (!IsInteger(indices.dtype())) return {};
  const int64_t n = static_cast<int64_t>(dims->size());
  std::vector<int64_t> values;
  for (int64_t i = 0; i < indices.numel(); ++i) {
    int64_t index = indices.GetAsInt64(i);
    if (index < 0) index += n;
    // Out-of-range indices stay for the kernel to report.
    if (index < 0 || index >= n || !(*dims)[static_cast<size_t>(index)].is_known()) return {};
    values.push_back((*dims)[static_cast<size_t>(index)].value);
  }
  return Tensor::FromInt64s(indices.dims(), values);
}

// Evaluates a node whose inputs are all constant. Returns false (leaving the
// node alone) when the result would be too large or the CPU backend cannot
// evaluate it; run time then reports any real problem with the node.
bool EvaluateConstantNode(const ir::Node& node, std::vector<Tensor>* results) {
  std::vector<const Tensor*> args(node.inputs.size(), nullptr);
  std::vector<ir::TensorType> arg_types(node.inputs.size());
  std::vector<const ir::TensorType*> type_ptrs(node.inputs.size(), nullptr);
  size_t input_bytes = 0;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    if (!node.inputs[i]) continue;
    args[i] = &node.inputs[i]->constant;
    arg_types[i] = ir::TensorType::Of(*args[i]);
    type_ptrs[i] = &arg_types[i];
    input_bytes += args[i]->nbytes();
  }
  try {
    const OpDef& def = OpRegistry::Global().Lookup(node);
    if (!def.cpu_kernel) return false;
    // Size the outputs before computing them.
    // Sizes in double: a corrupt shape must not overflow into a small number.
    double output_bytes = 0;
    for (const ir::TensorType& t : InferNode(node, type_ptrs, args)) {
      if (t.dtype == DType::kUndefined || !t.has_rank()) continue;
      double bytes = static_cast<double>(DTypeSize(t.dtype));
      for (const ir::Dim& d : *t.shape) bytes *= d.is_known() ? static_cast<double>(d.value) : 1.0;
      output_bytes += bytes;
    }
    if (output_bytes > static_cast<double>(kMaxFoldedBytes) &&
        output_bytes > static_cast<double>(input_bytes))
      return false;
    *results = cpu::EvaluateNode(node, args);
  } catch (const Error&) {
    return false;
  }
  // Every requested output must have come back, or its value would dangle.
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    if (node.outputs[i] && (i >= results->size() || !(*results)[i].defined())) {
      results->clear();
      return false;
    }
  }
  return true;
}

}  // namespace

int FoldConstants(ir::Graph& graph) {
  int folded = 0;
  // One forward sweep reaches the fixed point: nodes are topologically
  // sorted, so a node's inputs have already been folded (or refined) when it
  // is visited.
  for (ir::Node* node : internal::NodeList(graph)) {
    std::vector<Tensor> results;
    Tensor from_shape;
    if (node->op_type == "Shape" || node->op_type == "Size") from_shape = FoldShapeOrSize(*node);
    if (node->op_type == "Gather") from_shape = FoldGatherOfShape(*node);
    if (from_shape.defined()) results.push_back(std::move(from_shape));
    if (results.empty() && !IsNondeterministic(*node) && AllInputsConstant(*node))
      EvaluateConstantNode(*node, &results);
    if (results.empty()) {
      // Not foldable, but earlier folds may make its output types more
      // precise (a Reshape whose shape just became constant), which enables
      // Shape folds further down. Conflicts are reported by InferShapes.
      try {
        internal::InferAndMerge(*node);
      } catch (const Error&) {
      }
      continue;
    }
    for (size_t i = 0; i < node->outputs.size(); ++i) {
      ir::Value* out = node->outputs[i];
      if (!out) continue;
      out->constant = std::move(results[i]);
      out->type = ir::TensorType::Of(out->constant);
    }
    graph.RemoveNode(node);
    ++folded;
  }
  if (folded) graph.RemoveUnusedValues();
  return folded;
}

}  // namespace kiln::passes
