#include "builder/fuse_layernorm.h"

#include <cstring>
#include <unordered_set>
#include <utility>
#include <vector>

#include "builder/pattern_util.h"
#include "ops/registry.h"

namespace kiln::builder {
namespace {

constexpr size_t kMaxTerms = 4;  // As the GPU kernel's SumTerms.

// A summand of the LayerNorm's input and the node that reads it.
struct Term {
  ir::Value* value;
  ir::Node* reader;
};

// Whether `dims`, right-aligned to `out`, are 1s followed by exactly out's
// trailing dims, the last being n: the term's rows repeat along the leading
// dims of the output.
bool IsRowBroadcast(const std::vector<int64_t>& dims, const std::vector<int64_t>& out) {
  if (dims.empty() || dims.size() > out.size() || dims.back() != out.back()) return false;
  const size_t offset = out.size() - dims.size();
  size_t i = 0;
  while (i + 1 < dims.size() && dims[i] == 1) ++i;
  for (; i < dims.size(); ++i)
    if (dims[i] != out[offset + i]) return false;
  return true;
}

// Walks the Add tree under `v` (read by `reader`), collecting its leaves into
// `terms` and its Adds into `adds`. Only full-shape sums read once expand.
bool CollectTerms(const ir::Graph& graph, ir::Value* v, ir::Node* reader,
                  const std::vector<int64_t>& out_dims, DType dtype, std::vector<Term>& terms,
                  std::vector<ir::Node*>& adds) {
  if (!v || v->type.dtype != dtype) return false;
  const auto dims = KnownDims(v);
  if (!dims) return false;
  ir::Node* p = v->producer;
  if (Is(p, "Add") && p->opset >= 7 && p->inputs.size() == 2 && p->outputs.size() == 1 &&
      *dims == out_dims && SoleConsumer(graph, v) == reader) {
    adds.push_back(p);
    return CollectTerms(graph, p->inputs[0], p, out_dims, dtype, terms, adds) &&
           CollectTerms(graph, p->inputs[1], p, out_dims, dtype, terms, adds);
  }
  if (!IsRowBroadcast(*dims, out_dims) || terms.size() == kMaxTerms) return false;
  terms.push_back({v, reader});
  return true;
}

// A Gather of rows (axis 0) of a constant [V, n] table by indices shaped like
// the output's rows, read only by `t.reader`.
bool IsRowGather(const ir::Graph& graph, const Term& t, const std::vector<int64_t>& out_dims) {
  ir::Node* g = t.value->producer;
  if (!Is(g, "Gather") || g->inputs.size() != 2 || !g->inputs[0] || !g->inputs[1] ||
      g->attrs.GetInt("axis", 0) != 0 || SoleConsumer(graph, t.value) != t.reader)
    return false;
  const ir::Value* table = g->inputs[0];
  const ir::Value* indices = g->inputs[1];
  const auto table_dims = KnownDims(table);
  const auto index_dims = KnownDims(indices);
  if (!table->is_constant() || !table_dims || table_dims->size() != 2 ||
      (*table_dims)[1] != out_dims.back() || !index_dims)
    return false;
  if (indices->type.dtype != DType::kInt64 && indices->type.dtype != DType::kInt32) return false;
  return *index_dims == std::vector<int64_t>(out_dims.begin(), out_dims.end() - 1);
}

// A constant whose rows of n are all equal, as one [1, n] constant; else v.
ir::Value* CollapseRepeatedRows(ir::Graph& graph, ir::Value* v, int64_t n) {
  if (!v->is_constant()) return v;
  const Tensor& t = v->constant;
  const int64_t rows = t.numel() / n;
  if (rows <= 1) return v;
  const size_t row_bytes = static_cast<size_t>(n) * DTypeSize(t.dtype());
  const auto* bytes = static_cast<const unsigned char*>(t.raw_data());
  for (int64_t r = 1; r < rows; ++r)
    if (std::memcmp(bytes, bytes + static_cast<size_t>(r) * row_bytes, row_bytes) != 0) return v;
  Tensor row(t.dtype(), {1, n});
  std::memcpy(row.raw_data(), bytes, row_bytes);
  return graph.AddConstant(graph.UniqueName(v->name + "_row"), std::move(row));
}

bool TryFuse(ir::Graph& graph, ir::Node* ln, std::unordered_set<ir::Node*>& removed) {
  if (!Is(ln, "LayerNormalization") || ln->inputs.size() < 2 || !ln->has_input(0) ||
      !ln->has_input(1) || ln->outputs.empty() || !ln->outputs[0])
    return false;
  for (size_t i = 1; i < ln->outputs.size(); ++i) {  // Mean / InvStdDev must be unused.
    const ir::Value* stat = ln->outputs[i];
    if (stat && (graph.IsGraphOutput(stat) || !graph.Consumers(stat).empty())) return false;
  }
  ir::Value* x = ln->inputs[0];
  ir::Value* y = ln->outputs[0];
  const auto out_dims = KnownDims(x);
  const DType dtype = x->type.dtype;
  if (!out_dims || out_dims->empty() || y->type.dtype != dtype) return false;
  const int rank = static_cast<int>(out_dims->size());
  const int64_t axis = ln->attrs.GetInt("axis", -1);
  if (axis != -1 && axis != rank - 1) return false;
  const int64_t n = out_dims->back();
  const size_t elem = DTypeSize(dtype);
  const bool half = dtype == DType::kFloat16 || dtype == DType::kBFloat16;
  if (!(half || dtype == DType::kFloat32) || n % 8 != 0 || n * static_cast<int64_t>(elem) > 4096)
    return false;
  for (size_t i = 1; i <= 2 && i < ln->inputs.size(); ++i) {
    const ir::Value* p = ln->inputs[i];
    if (!p) continue;
    const auto dims = KnownDims(p);
    if (!dims || p->type.dtype != dtype || Product(*dims) != n) return false;
  }
  if (!x->producer || !Is(x->producer, "Add")) return false;

  std::vector<Term> terms;
  std::vector<ir::Node*> adds;
  if (!CollectTerms(graph, x, ln, *out_dims, dtype, terms, adds) || adds.empty()) return false;
  ir::Node* gather = nullptr;
  for (size_t i = 0; i < terms.size(); ++i) {
    if (gather || !IsRowGather(graph, terms[i], *out_dims)) continue;
    gather = terms[i].value->producer;
    std::swap(terms[i], terms[0]);
  }

  std::vector<ir::Value*> inputs = {ln->inputs[1], ln->has_input(2) ? ln->inputs[2] : nullptr,
                                    gather ? gather->inputs[1] : nullptr};
  for (size_t i = 0; i < terms.size(); ++i) {
    if (i == 0 && gather)
      inputs.push_back(gather->inputs[0]);
    else
      inputs.push_back(CollapseRepeatedRows(graph, terms[i].value, n));
  }
  const std::string name = ln->name;
  const int opset = ln->opset;
  const float epsilon = ln->attrs.GetFloat("epsilon", 1e-5f);
  std::vector<ir::Node*> absorbed = adds;
  absorbed.push_back(ln);
  if (gather) absorbed.push_back(gather);
  for (ir::Node* node : absorbed) {
    removed.insert(node);
    graph.RemoveNode(node);
  }
  ir::Node* fused = graph.AddNode("KilnSumLayerNorm", name, inputs, {y});
  fused->attrs.set("epsilon", epsilon);
  fused->opset = opset;
  return true;
}

}  // namespace

int FuseSumLayerNorm(ir::Graph& graph) {
  std::vector<ir::Node*> snapshot;
  for (const auto& n : graph.nodes()) snapshot.push_back(n.get());
  std::unordered_set<ir::Node*> removed;
  int fused = 0;
  for (ir::Node* n : snapshot)
    if (!removed.count(n) && TryFuse(graph, n, removed)) ++fused;
  if (fused) {
    graph.SortTopologically();
    graph.RemoveUnusedValues();
  }
  return fused;
}

}  // namespace kiln::builder
