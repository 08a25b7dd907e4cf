#include "builder/fuse_attention.h"

#include <cstring>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "builder/pattern_util.h"

namespace kiln::builder {
namespace {

// True when v's only reader is `node` (reading it once) and v is not a
// graph output: v may then disappear into a fusion.
bool OnlyFeeds(const ir::Graph& graph, const ir::Value* v, const ir::Node* node) {
  if (SoleConsumer(graph, v) != node) return false;
  int reads = 0;
  for (const ir::Value* in : node->inputs) reads += in == v;
  return reads == 1;
}

// The node's only output (others absent or unused), else nullptr.
ir::Value* SingleOutput(const ir::Graph& graph, const ir::Node& n) {
  if (n.outputs.empty() || !n.outputs[0]) return nullptr;
  for (size_t i = 1; i < n.outputs.size(); ++i) {
    const ir::Value* extra = n.outputs[i];
    if (extra && (graph.IsGraphOutput(extra) || !graph.Consumers(extra).empty())) return nullptr;
  }
  return n.outputs[0];
}

int OpsetOf(const ir::Graph& graph, const ir::Node& n) {
  return n.opset > 0 ? n.opset : graph.opset_version;
}

bool IsTranspose(const ir::Node* n, const std::vector<int64_t>& perm) {
  return Is(n, "Transpose") && n->inputs.size() == 1 && n->inputs[0] && n->attrs.has("perm") &&
         n->attrs.GetInts("perm") == perm;
}

bool IsLowFloat(DType d) { return d == DType::kFloat16 || d == DType::kBFloat16; }

// A floating-point constant holding one element.
std::optional<double> ScalarConstant(const ir::Value* v) {
  if (!v || !v->is_constant() || v->constant.numel() != 1 || !IsFloatingPoint(v->constant.dtype()))
    return std::nullopt;
  return v->constant.GetAsDouble(0);
}

// A head-split input: the [b,s,h,d] value a head transpose reads, and the
// Reshape that produced it from [b,s,h*d] when that Reshape can go too.
struct HeadInput {
  ir::Value* split = nullptr;        // [b,s,h,d]
  ir::Node* reshape = nullptr;       // Reshape [b,s,h*d] -> split, removable; or nullptr.
  ir::Value* fused_input = nullptr;  // What KilnAttention reads.
};

// `transpose` is the (removed) head transpose reading `split`.
HeadInput ResolveHeadInput(const ir::Graph& graph, ir::Value* split, const ir::Node* transpose) {
  HeadInput h;
  h.split = split;
  h.fused_input = split;
  ir::Node* reshape = split->producer;
  if (!Is(reshape, "Reshape") || reshape->inputs.empty() || !reshape->inputs[0]) return h;
  if (!OnlyFeeds(graph, split, transpose) || SingleOutput(graph, *reshape) != split) return h;
  const auto in = KnownDims(reshape->inputs[0]);
  const auto out = KnownDims(split);
  if (!in || !out || in->size() != 3 || out->size() != 4) return h;
  if ((*in)[0] != (*out)[0] || (*in)[1] != (*out)[1] || (*in)[2] != (*out)[2] * (*out)[3]) return h;
  if (reshape->inputs[0]->type.dtype != split->type.dtype) return h;
  h.reshape = reshape;
  h.fused_input = reshape->inputs[0];
  return h;
}

// Dims of an attention mask right-aligned to [b, h, sq, sk]: the batch dim
// may be 1 or b, the head and query dims 1, the key dim sk.
bool MaskBroadcasts(const std::vector<int64_t>& mask, int64_t b, int64_t sk) {
  if (mask.empty() || mask.size() > 4) return false;
  const size_t offset = 4 - mask.size();
  for (size_t i = 0; i < mask.size(); ++i) {
    const size_t axis = offset + i;
    const int64_t d = mask[i];
    if (axis == 0 && d != 1 && d != b) return false;
    if ((axis == 1 || axis == 2) && d != 1) return false;
    if (axis == 3 && d != sk) return false;
  }
  return true;
}

// v = MatMul(..) or Div/Mul of a MatMul's output by a scalar constant.
bool ComesFromMatMul(const ir::Value* v) {
  const ir::Node* p = v->producer;
  if (Is(p, "MatMul")) return true;
  if (!(Is(p, "Div") || Is(p, "Mul")) || p->inputs.size() != 2 || !p->inputs[0] || !p->inputs[1])
    return false;
  for (size_t i = 0; i < 2; ++i)
    if (ScalarConstant(p->inputs[1 - i]) && Is(p->inputs[i]->producer, "MatMul")) return true;
  return false;
}

bool FuseAt(ir::Graph& graph, ir::Node* softmax, std::unordered_set<ir::Node*>& removed) {
  if (softmax->inputs.size() != 1 || !softmax->inputs[0]) return false;
  ir::Value* probs = SingleOutput(graph, *softmax);
  const auto score_dims = KnownDims(probs);
  if (!probs || !score_dims || score_dims->size() != 4) return false;
  const DType dtype = probs->type.dtype;
  if (!IsLowFloat(dtype)) return false;
  // Softmax over the last axis (opset < 13 flattens from `axis`, which is
  // the same thing when axis is the last one).
  const int64_t default_axis = OpsetOf(graph, *softmax) >= 13 ? -1 : 1;
  int64_t axis = softmax->attrs.GetInt("axis", default_axis);
  if (axis < 0) axis += 4;
  if (axis != 3) return false;

  std::vector<ir::Node*> absorbed = {softmax};
  // Walk back: [Add(mask)] <- [Div/Mul(scale)] <- MatMul.
  ir::Value* v = softmax->inputs[0];
  ir::Node* consumer = softmax;
  ir::Value* mask = nullptr;
  float scale = 1.f;
  auto step_back = [&](ir::Node* n) {
    absorbed.push_back(n);
    consumer = n;
  };
  if (!OnlyFeeds(graph, v, consumer)) return false;
  if (ir::Node* add = v->producer; Is(add, "Add") && add->inputs.size() == 2 && add->inputs[0] &&
                                   add->inputs[1] && SingleOutput(graph, *add) == v) {
    // The score side is the one the score MatMul (maybe scaled) produced.
    int score_side = -1;
    for (int i = 0; i < 2 && score_side < 0; ++i)
      if (ComesFromMatMul(add->inputs[static_cast<size_t>(i)])) score_side = i;
    if (score_side < 0) return false;
    mask = add->inputs[static_cast<size_t>(1 - score_side)];
    v = add->inputs[static_cast<size_t>(score_side)];
    if (mask == v) return false;
    step_back(add);
    if (!OnlyFeeds(graph, v, consumer)) return false;
  }
  if (ir::Node* s = v->producer;
      (Is(s, "Div") || Is(s, "Mul")) && s->inputs.size() == 2 && SingleOutput(graph, *s) == v) {
    std::optional<double> c;
    ir::Value* scores = nullptr;
    if (s->op_type == "Div") {
      c = ScalarConstant(s->inputs[1]);
      scores = s->inputs[0];
      if (c) c = *c == 0.0 ? std::nullopt : std::optional<double>(1.0 / *c);
    } else {
      for (int i = 0; i < 2 && !c; ++i) {
        c = ScalarConstant(s->inputs[static_cast<size_t>(i)]);
        if (c) scores = s->inputs[static_cast<size_t>(1 - i)];
      }
    }
    if (!c || !scores) return false;
    scale = static_cast<float>(*c);
    v = scores;
    step_back(s);
    if (!OnlyFeeds(graph, v, consumer)) return false;
  }
  ir::Node* mm1 = v->producer;
  if (!Is(mm1, "MatMul") || mm1->inputs.size() != 2 || !mm1->inputs[0] || !mm1->inputs[1] ||
      SingleOutput(graph, *mm1) != v || KnownDims(v) != score_dims || v->type.dtype != dtype)
    return false;
  step_back(mm1);

  // Q side.
  ir::Value* qt = mm1->inputs[0];
  ir::Node* q_transpose = qt->producer;
  if (!IsTranspose(q_transpose, {0, 2, 1, 3}) || !OnlyFeeds(graph, qt, mm1)) return false;
  absorbed.push_back(q_transpose);
  // K side: [b,s,h,d] -> [b,h,d,s] in one transpose or two.
  ir::Value* kt = mm1->inputs[1];
  ir::Node* k_transpose = kt->producer;
  if (!OnlyFeeds(graph, kt, mm1)) return false;
  ir::Value* k_split = nullptr;
  ir::Node* k_head_transpose = nullptr;  // The transpose that reads k_split.
  if (IsTranspose(k_transpose, {0, 2, 3, 1})) {
    absorbed.push_back(k_transpose);
    k_split = k_transpose->inputs[0];
    k_head_transpose = k_transpose;
  } else if (IsTranspose(k_transpose, {0, 1, 3, 2})) {
    ir::Value* kh = k_transpose->inputs[0];
    ir::Node* first = kh->producer;
    if (!IsTranspose(first, {0, 2, 1, 3}) || !OnlyFeeds(graph, kh, k_transpose)) return false;
    absorbed.push_back(k_transpose);
    absorbed.push_back(first);
    k_split = first->inputs[0];
    k_head_transpose = first;
  } else {
    return false;
  }

  // P @ V, then the head merge.
  ir::Node* mm2 = SoleConsumer(graph, probs);
  if (!Is(mm2, "MatMul") || mm2->inputs.size() != 2 || mm2->inputs[0] != probs ||
      mm2->inputs[1] == probs || !mm2->inputs[1])
    return false;
  ir::Value* context = SingleOutput(graph, *mm2);
  ir::Value* vt = mm2->inputs[1];
  ir::Node* v_transpose = vt->producer;
  if (!context || !IsTranspose(v_transpose, {0, 2, 1, 3}) || !OnlyFeeds(graph, vt, mm2))
    return false;
  absorbed.push_back(mm2);
  absorbed.push_back(v_transpose);
  ir::Node* out_transpose = SoleConsumer(graph, context);
  if (!IsTranspose(out_transpose, {0, 2, 1, 3})) return false;
  ir::Value* merged4 = SingleOutput(graph, *out_transpose);
  if (!merged4) return false;
  absorbed.push_back(out_transpose);

  // Shapes and dtypes.
  ir::Value* q_split = q_transpose->inputs[0];
  ir::Value* v_split = v_transpose->inputs[0];
  const auto qd = KnownDims(q_split), kd = KnownDims(k_split), vd = KnownDims(v_split);
  const auto od = KnownDims(merged4);
  if (!qd || !kd || !vd || !od || qd->size() != 4 || kd->size() != 4 || vd->size() != 4)
    return false;
  const int64_t b = (*qd)[0], sq = (*qd)[1], h = (*qd)[2], d = (*qd)[3];
  const int64_t sk = (*kd)[1];
  if (*kd != std::vector<int64_t>{b, sk, h, d} || *vd != std::vector<int64_t>{b, sk, h, d} ||
      *od != std::vector<int64_t>{b, sq, h, d} ||
      *score_dims != std::vector<int64_t>{b, h, sq, sk} ||
      KnownDims(context) != std::vector<int64_t>{b, h, sq, d})
    return false;
  if (b < 1 || sq < 1 || sk < 1 || h < 1 || !AttentionHeadDimSupported(d)) return false;
  for (const ir::Value* x : {q_split, k_split, v_split, context, merged4, mm1->outputs[0]})
    if (x->type.dtype != dtype) return false;
  for (const ir::Node* n : absorbed)
    for (const ir::Value* out : n->outputs)
      if (out && out->type.dtype != dtype) return false;
  if (mask) {
    const auto md = KnownDims(mask);
    if (!md || mask->type.dtype != dtype || !MaskBroadcasts(*md, b, sk)) return false;
  }

  // The fused node's inputs and output.
  HeadInput q = ResolveHeadInput(graph, q_split, q_transpose);
  HeadInput k = ResolveHeadInput(graph, k_split, k_head_transpose);
  HeadInput vv = ResolveHeadInput(graph, v_split, v_transpose);
  for (const HeadInput* hi : {&q, &k, &vv})
    if (hi->reshape) absorbed.push_back(hi->reshape);
  ir::Value* output = merged4;
  if (ir::Node* merge = SoleConsumer(graph, merged4);
      Is(merge, "Reshape") && merge->inputs[0] == merged4 && SingleOutput(graph, *merge)) {
    ir::Value* flat = merge->outputs[0];
    if (KnownDims(flat) == std::vector<int64_t>{b, sq, h * d} && flat->type.dtype == dtype) {
      absorbed.push_back(merge);
      output = flat;
    }
  }

  const std::string name = mm1->name;
  const int opset = mm1->opset;
  std::vector<ir::Value*> inputs = {q.fused_input, k.fused_input, vv.fused_input};
  if (mask) inputs.push_back(mask);
  for (ir::Node* n : absorbed) {
    removed.insert(n);
    graph.RemoveNode(n);
  }
  ir::Node* fused = graph.AddNode("KilnAttention", name, inputs, {output});
  fused->attrs.set("num_heads", h);
  fused->attrs.set("scale", scale);
  fused->opset = opset;
  return true;
}

// The KilnMatMul producing attention input v, when it can join a packed QKV
// projection: v feeds only `attention`, B is a constant [K, N] (transB 0),
// the bias (if any) a constant [N], no activation and no residual.
ir::Node* PackableProjection(const ir::Graph& graph, const ir::Value* v, const ir::Node* attention) {
  ir::Node* mm = v ? v->producer : nullptr;
  if (!mm || mm->op_type != "KilnMatMul" || !OnlyFeeds(graph, v, attention)) return nullptr;
  if (mm->inputs.size() < 2 || mm->inputs.size() > 3 || !mm->has_input(0) || !mm->has_input(1))
    return nullptr;
  if (mm->attrs.GetInt("transB", 0) != 0 || !mm->attrs.GetString("activation", "").empty())
    return nullptr;
  const ir::Value* b = mm->inputs[1];
  if (!b->is_constant() || b->constant.rank() != 2) return nullptr;
  if (mm->has_input(2)) {
    const ir::Value* bias = mm->inputs[2];
    if (!bias->is_constant() || bias->constant.rank() != 1 ||
        bias->constant.dtype() != b->constant.dtype())
      return nullptr;
  }
  const std::optional<std::vector<int64_t>> dims = KnownDims(v);
  if (!dims || dims->size() != 3) return nullptr;
  return mm;
}

// Column-concatenation of row-major [rows, cols_i] constants of one dtype.
Tensor ConcatColumns(const std::vector<const Tensor*>& parts) {
  const int64_t rows = parts[0]->rank() == 2 ? parts[0]->dim(0) : 1;
  int64_t cols = 0;
  for (const Tensor* t : parts) cols += t->dims().back();
  std::vector<int64_t> dims = parts[0]->dims();
  dims.back() = cols;
  Tensor out(parts[0]->dtype(), dims);
  const size_t elem = DTypeSize(out.dtype());
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t r = 0; r < rows; ++r) {
    for (const Tensor* t : parts) {
      const size_t row_bytes = static_cast<size_t>(t->dims().back()) * elem;
      std::memcpy(dst, static_cast<const char*>(t->raw_data()) + static_cast<size_t>(r) * row_bytes,
                  row_bytes);
      dst += row_bytes;
    }
  }
  return out;
}

bool PackAt(ir::Graph& graph, ir::Node* attention) {
  if (attention->attrs.GetInt("packed_qkv", 0) != 0 || attention->inputs.size() < 3) return false;
  ir::Value* q = attention->inputs[0];
  ir::Value* k = attention->inputs[1];
  ir::Value* v = attention->inputs[2];
  if (!q || !k || !v || q == k || k == v || q == v) return false;
  ir::Node* mm[3] = {PackableProjection(graph, q, attention), PackableProjection(graph, k, attention),
                     PackableProjection(graph, v, attention)};
  if (!mm[0] || !mm[1] || !mm[2]) return false;
  const ir::Value* a = mm[0]->inputs[0];
  const std::vector<int64_t> dims = *KnownDims(q);
  const bool biased = mm[0]->has_input(2);
  for (ir::Node* m : mm) {
    if (m->inputs[0] != a || m->has_input(2) != biased) return false;
    if (m->inputs[1]->constant.dims() != mm[0]->inputs[1]->constant.dims() ||
        m->inputs[1]->constant.dtype() != mm[0]->inputs[1]->constant.dtype())
      return false;
    if (KnownDims(m->outputs[0]) != dims || m->outputs[0]->type.dtype != q->type.dtype) return false;
  }
  const std::string stem = mm[0]->name.empty() ? std::string("qkv") : mm[0]->name;
  std::vector<ir::Value*> inputs = {
      mm[0]->inputs[0],
      graph.AddConstant(graph.UniqueName(stem + "_qkv_weight"),
                        ConcatColumns({&mm[0]->inputs[1]->constant, &mm[1]->inputs[1]->constant,
                                       &mm[2]->inputs[1]->constant}))};
  if (biased)
    inputs.push_back(graph.AddConstant(
        graph.UniqueName(stem + "_qkv_bias"),
        ConcatColumns({&mm[0]->inputs[2]->constant, &mm[1]->inputs[2]->constant,
                       &mm[2]->inputs[2]->constant})));
  std::vector<int64_t> packed_dims = dims;
  packed_dims.back() *= 3;
  ir::Value* packed = graph.AddValue(graph.UniqueName(stem + "_qkv"),
                                     {q->type.dtype, ir::ShapeFromDims(packed_dims)});
  ir::Attributes attrs = mm[0]->attrs;
  const int opset = mm[0]->opset;
  const std::string name = graph.UniqueName(stem + "_qkv");
  for (ir::Node* m : mm) graph.RemoveNode(m);
  ir::Node* fused = graph.AddNode("KilnMatMul", name, inputs, {packed});
  fused->attrs = std::move(attrs);
  fused->opset = opset;
  std::vector<ir::Value*> att_inputs = {packed};
  if (attention->inputs.size() > 3) att_inputs.push_back(attention->inputs[3]);
  attention->inputs = att_inputs;
  attention->attrs.set("packed_qkv", int64_t{1});
  return true;
}

}  // namespace

int PackAttentionQkv(ir::Graph& graph) {
  std::vector<ir::Node*> attentions;
  for (const auto& n : graph.nodes())
    if (n->op_type == "KilnAttention") attentions.push_back(n.get());
  int packed = 0;
  for (ir::Node* n : attentions) packed += PackAt(graph, n) ? 1 : 0;
  if (packed) {
    graph.SortTopologically();
    graph.RemoveUnusedValues();
  }
  return packed;
}

bool AttentionHeadDimSupported(int64_t head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 128;
}

int FuseAttention(ir::Graph& graph) {
  std::vector<ir::Node*> snapshot;
  for (const auto& n : graph.nodes())
    if (Is(n.get(), "Softmax")) snapshot.push_back(n.get());
  std::unordered_set<ir::Node*> removed;
  int fused = 0;
  for (ir::Node* n : snapshot) {
    if (removed.count(n)) continue;
    if (FuseAt(graph, n, removed)) ++fused;
  }
  if (fused) {
    graph.SortTopologically();
    graph.RemoveUnusedValues();
  }
  return fused;
}

}  // namespace kiln::builder
