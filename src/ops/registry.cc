#include "ops/registry.h"

#include <algorithm>

namespace kiln {

InferContext::InferContext(const ir::Node& node, std::vector<const ir::TensorType*> input_types,
                           std::vector<const Tensor*> input_values)
    : node_(node),
      input_types_(std::move(input_types)),
      input_values_(std::move(input_values)),
      outputs_(node.outputs.size()) {
  input_values_.resize(input_types_.size(), nullptr);
}

bool InferContext::has_input(int i) const {
  return i >= 0 && i < num_inputs() && input_types_[static_cast<size_t>(i)] != nullptr;
}

const ir::TensorType& InferContext::input_type(int i) const {
  KILN_CHECK(has_input(i), "missing required input ", i);
  return *input_types_[static_cast<size_t>(i)];
}

const Tensor* InferContext::input_value(int i) const {
  if (!has_input(i)) return nullptr;
  const Tensor* t = input_values_[static_cast<size_t>(i)];
  return (t && t->defined()) ? t : nullptr;
}

void InferContext::set_output(int i, ir::TensorType type) {
  KILN_CHECK(i >= 0 && i < num_outputs(), "output index ", i, " out of range (", num_outputs(),
             " outputs)");
  outputs_[static_cast<size_t>(i)] = std::move(type);
}

const Tensor& KernelContext::input(int i) const {
  KILN_CHECK(has_input(i), "missing required input ", i);
  return *inputs_[static_cast<size_t>(i)];
}

Tensor& KernelContext::output(int i) const {
  KILN_CHECK(has_output(i), "output ", i, " is not requested");
  return *outputs_[static_cast<size_t>(i)];
}

const OpRegistry& OpRegistry::Global() {
  static const OpRegistry* registry = [] {
    auto* r = new OpRegistry();
    RegisterAllOps(*r);
    return r;
  }();
  return *registry;
}

OpDef& OpRegistry::Define(const std::string& name) {
  OpDef& def = defs_[name];
  def.name = name;
  return def;
}

const OpDef* OpRegistry::Find(const std::string& name) const {
  auto it = defs_.find(name);
  return it == defs_.end() ? nullptr : &it->second;
}

const OpDef& OpRegistry::Lookup(const ir::Node& node) const {
  KILN_CHECK(node.domain.empty() || node.domain == "ai.onnx", node.Describe(),
             ": operator domain '", node.domain, "' is not supported");
  const OpDef* def = Find(node.op_type);
  KILN_CHECK(def != nullptr && def->infer, node.Describe(), ": unsupported operator '",
             node.op_type, "'");
  KILN_CHECK(node.opset >= def->min_opset && node.opset <= def->max_opset, node.Describe(),
             ": opset ", node.opset, " is not supported (kiln implements ", node.op_type,
             " for opsets ", def->min_opset, " to ", def->max_opset, ")");
  return *def;
}

std::vector<std::string> OpRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, def] : defs_) names.push_back(name);
  return names;
}

std::vector<ir::TensorType> InferNode(const ir::Node& node,
                                      const std::vector<const ir::TensorType*>& input_types,
                                      const std::vector<const Tensor*>& input_values) {
  const OpDef& def = OpRegistry::Global().Lookup(node);
  InferContext ctx(node, input_types, input_values);
  try {
    def.infer(ctx);
  } catch (const Error& e) {
    Fail(node.Describe(), ": ", e.what());
  }
  return std::move(ctx.outputs());
}

int NormalizeAxis(int64_t axis, int rank, const ir::Node& node) {
  KILN_CHECK(axis >= -rank && axis < std::max(rank, 1), node.Describe(), ": axis ", axis,
             " is out of range for rank ", rank);
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

ir::Shape BroadcastShapes(const ir::Shape& a, const ir::Shape& b, const ir::Node& node) {
  size_t rank = std::max(a.size(), b.size());
  ir::Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const ir::Dim* da = i < rank - a.size() ? nullptr : &a[i - (rank - a.size())];
    const ir::Dim* db = i < rank - b.size() ? nullptr : &b[i - (rank - b.size())];
    if (!da) { out[i] = *db; continue; }
    if (!db) { out[i] = *da; continue; }
    if (da->is_known() && da->value == 1) { out[i] = *db; continue; }
    if (db->is_known() && db->value == 1) { out[i] = *da; continue; }
    if (*da == *db) { out[i] = *da; continue; }
    if (da->is_known() && db->is_known()) {
      Fail(node.Describe(), ": cannot broadcast shapes ", ir::ShapeToString(a), " and ",
           ir::ShapeToString(b));
    }
    // One side unknown or differently named: the known side wins when > 1.
    out[i] = da->is_known() ? *da : db->is_known() ? *db : ir::Dim::Unknown();
  }
  return out;
}

std::vector<int64_t> BroadcastDims(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  size_t rank = std::max(a.size(), b.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    KILN_CHECK(da == db || da == 1 || db == 1, "cannot broadcast ", DimsToString(a), " and ",
               DimsToString(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

int64_t Product(const std::vector<int64_t>& dims, size_t begin, size_t end) {
  end = std::min(end, dims.size());
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= dims[i];
  return p;
}

}  // namespace kiln
