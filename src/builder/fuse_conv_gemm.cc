#include "builder/fuse_conv_gemm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "builder/pattern_util.h"

namespace kiln::builder {
namespace {

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

// A binary node reading v once; returns the other input.
ir::Value* OtherInput(const ir::Node& n, const ir::Value* v) {
  if (n.inputs.size() != 2 || !n.inputs[0] || !n.inputs[1]) return nullptr;
  if (n.inputs[0] == v && n.inputs[1] != v) return n.inputs[1];
  if (n.inputs[1] == v && n.inputs[0] != v) return n.inputs[0];
  return nullptr;
}

// ---- Activations ----

// 0.5 x (1 + erf(x / sqrt(2))), what exporters spell out with Div/Mul/Add/Erf.
double ExactGelu(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// The value computed from `v` by a small region of elementwise nodes (Div,
// Mul, Add, Sub, Erf with scalar constants) that equals exact GELU, with the
// region's nodes; nullopt otherwise. The region is grown from v's consumers
// to a fixed point; exactly one of its values may be read outside it, and
// the function it computes is checked numerically, so every way exporters
// write GELU (x * 0.5 * (1 + erf(x / 1.414)), (x * (erf(x * 0.7071) + 1)) * 0.5,
// ...) matches while anything else does not.
std::optional<std::pair<ir::Value*, std::vector<ir::Node*>>> MatchErfGelu(const ir::Graph& graph,
                                                                           ir::Value* v) {
  static const std::unordered_set<std::string> kOps = {"Div", "Mul", "Add", "Sub", "Erf"};
  constexpr size_t kMaxNodes = 8;
  if (graph.IsGraphOutput(v)) return std::nullopt;
  std::unordered_set<const ir::Value*> region_values = {v};
  std::vector<ir::Node*> nodes;  // In the order they joined: a topological order.
  auto scalar = [](const ir::Value* x) {
    return x && x->is_constant() && x->constant.numel() == 1 && IsFloatingPoint(x->constant.dtype());
  };
  for (bool grew = true; grew && nodes.size() <= kMaxNodes;) {
    grew = false;
    for (const ir::Value* x : std::vector<const ir::Value*>(region_values.begin(), region_values.end())) {
      for (ir::Node* c : graph.Consumers(x)) {
        if (std::find(nodes.begin(), nodes.end(), c) != nodes.end()) continue;
        if (!IsOnnx(*c) || !kOps.count(c->op_type) || c->outputs.size() != 1 || !c->outputs[0])
          continue;
        const size_t arity = c->op_type == "Erf" ? 1 : 2;
        if (c->inputs.size() != arity) continue;
        bool ready = true;
        for (const ir::Value* in : c->inputs) ready = ready && (region_values.count(in) || scalar(in));
        if (!ready) continue;
        nodes.push_back(c);
        region_values.insert(c->outputs[0]);
        grew = true;
      }
    }
  }
  if (nodes.empty() || nodes.size() > kMaxNodes) return std::nullopt;
  // Exactly one value leaves the region, and v itself only feeds it.
  ir::Value* out = nullptr;
  for (const ir::Value* x : region_values) {
    bool escapes = graph.IsGraphOutput(x);
    for (ir::Node* c : graph.Consumers(x))
      escapes = escapes || std::find(nodes.begin(), nodes.end(), c) == nodes.end();
    if (!escapes) continue;
    if (x == v || out) return std::nullopt;
    out = const_cast<ir::Value*>(x);
  }
  if (!out || out->type.dtype != v->type.dtype) return std::nullopt;
  for (double x : {-5.0, -2.5, -1.0, -0.4, 0.3, 1.0, 2.2, 4.5}) {
    std::unordered_map<const ir::Value*, double> val = {{v, x}};
    auto get = [&](const ir::Value* in) { return in->is_constant() ? in->constant.GetAsDouble(0) : val.at(in); };
    for (const ir::Node* n : nodes) {
      const double a = get(n->inputs[0]);
      const double b = n->inputs.size() > 1 ? get(n->inputs[1]) : 0.0;
      double r = 0;
      if (n->op_type == "Erf") r = std::erf(a);
      else if (n->op_type == "Mul") r = a * b;
      else if (n->op_type == "Add") r = a + b;
      else if (n->op_type == "Sub") r = a - b;
      else r = a / b;
      val[n->outputs[0]] = r;
    }
    // Constants are stored in float16/bfloat16 by now: allow their rounding.
    const double want = ExactGelu(x);
    if (!(std::fabs(val.at(out) - want) <= 2e-3 * (1.0 + std::fabs(want)))) return std::nullopt;
  }
  return std::make_pair(out, nodes);
}

struct Activation {
  std::string name;
  float alpha = 0.f, beta = 0.f;
  bool has_alpha = false, has_beta = false;
  std::vector<ir::Node*> nodes;  // Consumed nodes.
  ir::Value* output = nullptr;
};

// An activation applied to v by nodes that only v's value flows through.
// `conv` selects the KilnConv set; otherwise the KilnMatMul set.
std::optional<Activation> MatchActivation(const ir::Graph& graph, ir::Value* v, bool conv) {
  if (!v || graph.IsGraphOutput(v)) return std::nullopt;
  const std::vector<ir::Node*> consumers = graph.Consumers(v);
  Activation act;
  if (conv && consumers.size() == 2) {
    // SiLU: Mul(v, Sigmoid(v)).
    ir::Node* sig = Is(consumers[0], "Sigmoid") ? consumers[0] : consumers[1];
    ir::Node* mul = sig == consumers[0] ? consumers[1] : consumers[0];
    if (!Is(sig, "Sigmoid") || !Is(mul, "Mul") || sig->inputs.size() != 1 || sig->inputs[0] != v)
      return std::nullopt;
    ir::Value* s = SingleOutput(graph, *sig);
    if (!s || SoleConsumer(graph, s) != mul || OtherInput(*mul, v) != s) return std::nullopt;
    ir::Value* out = SingleOutput(graph, *mul);
    if (!out) return std::nullopt;
    act.name = "SiLU";
    act.nodes = {sig, mul};
    act.output = out;
    return act;
  }
  if (!conv && (v->type.dtype == DType::kFloat16 || v->type.dtype == DType::kBFloat16)) {
    // Exact GELU spelled out with Erf: in float16/bfloat16 storage cuBLASLt's
    // tanh-form epilogue is as good (|difference| <= 4.8e-4, under half a
    // float16 ulp wherever it is that large), so it becomes the epilogue.
    if (auto gelu = MatchErfGelu(graph, v)) {
      act.name = "Gelu";
      act.output = gelu->first;
      act.nodes = gelu->second;
      return act;
    }
  }
  if (consumers.size() != 1) return std::nullopt;
  ir::Node* n = consumers[0];
  if (!IsOnnx(*n) || n->inputs.empty() || n->inputs[0] != v) return std::nullopt;
  for (size_t i = 1; i < n->inputs.size(); ++i)
    if (n->inputs[i] == v) return std::nullopt;
  ir::Value* out = SingleOutput(graph, *n);
  if (!out) return std::nullopt;
  const std::string& op = n->op_type;
  const ir::Attributes& attrs = n->attrs;
  if (op == "Relu") {
    if (n->inputs.size() != 1) return std::nullopt;
  } else if (op == "Gelu" && !conv) {
    // The tanh form is cuBLASLt's GELU epilogue; the exact form becomes it
    // in float16/bfloat16 (see above) and stays a node in float32.
    const bool low = v->type.dtype == DType::kFloat16 || v->type.dtype == DType::kBFloat16;
    if (n->inputs.size() != 1 || (attrs.GetString("approximate", "none") != "tanh" && !low))
      return std::nullopt;
  } else if (conv && (op == "Sigmoid" || op == "Tanh" || op == "HardSwish")) {
    if (n->inputs.size() != 1) return std::nullopt;
  } else if (conv && op == "LeakyRelu") {
    if (n->inputs.size() != 1) return std::nullopt;
    act.alpha = attrs.GetFloat("alpha", 0.01f);
    act.has_alpha = true;
  } else if (conv && op == "HardSigmoid") {
    if (n->inputs.size() != 1) return std::nullopt;
    act.alpha = attrs.GetFloat("alpha", 0.2f);
    act.beta = attrs.GetFloat("beta", 0.5f);
    act.has_alpha = act.has_beta = true;
  } else if (conv && op == "Clip") {
    float lo = -std::numeric_limits<float>::infinity();
    float hi = std::numeric_limits<float>::infinity();
    if (OpsetOf(graph, *n) < 11) {
      if (n->inputs.size() != 1) return std::nullopt;
      lo = attrs.GetFloat("min", lo);
      hi = attrs.GetFloat("max", hi);
    } else {
      if (n->inputs.size() > 3) return std::nullopt;
      for (size_t i = 1; i < n->inputs.size(); ++i) {
        const ir::Value* bound = n->inputs[i];
        if (!bound) continue;
        if (!bound->is_constant() || bound->constant.numel() != 1 ||
            !IsFloatingPoint(bound->constant.dtype()))
          return std::nullopt;
        (i == 1 ? lo : hi) = static_cast<float>(bound->constant.GetAsDouble(0));
      }
    }
    act.alpha = lo;
    act.beta = hi;
    act.has_alpha = act.has_beta = true;
  } else {
    return std::nullopt;
  }
  act.name = op;
  act.nodes = {n};
  act.output = out;
  return act;
}

// ---- Constant helpers ----

// Per-channel values (axis 1 of an output of out_dims) of a constant that
// broadcasts over the output without changing its shape: every dim 1 except
// possibly the one aligned with axis 1, which may be the channel count.
std::optional<std::vector<float>> ChannelBias(const Tensor& c, const std::vector<int64_t>& out_dims) {
  if (!IsFloatingPoint(c.dtype()) || out_dims.size() < 2) return std::nullopt;
  const int big = static_cast<int>(out_dims.size()), r = c.rank();
  if (r > big) return std::nullopt;
  const int channel_axis = 1 - (big - r);  // Axis of c aligned with output axis 1 (may be < 0).
  const int64_t channels = out_dims[1];
  bool per_channel = false;
  for (int i = 0; i < r; ++i) {
    const int64_t d = c.dim(i);
    if (i == channel_axis && d == channels && d != 1) {
      per_channel = true;
    } else if (d != 1) {
      return std::nullopt;
    }
  }
  const std::vector<float> values = c.ToFloatVector();
  std::vector<float> out(static_cast<size_t>(channels));
  for (int64_t k = 0; k < channels; ++k) out[static_cast<size_t>(k)] = values[per_channel ? static_cast<size_t>(k) : 0];
  return out;
}

Tensor MakeTensor(DType dtype, const std::vector<float>& values) {
  Tensor f = Tensor::FromFloats({static_cast<int64_t>(values.size())}, values);
  return dtype == DType::kFloat32 ? f : f.CastTo(dtype);
}

ir::Value* NewConstant(ir::Graph& graph, const std::string& base, Tensor tensor) {
  return graph.AddConstant(graph.UniqueName(base), std::move(tensor));
}

void RemoveNodes(ir::Graph& graph, const std::vector<ir::Node*>& nodes,
                 std::unordered_set<ir::Node*>& removed) {
  for (ir::Node* n : nodes) {
    removed.insert(n);
    graph.RemoveNode(n);
  }
}

void TrimTrailingNulls(std::vector<ir::Value*>& inputs) {
  while (!inputs.empty() && inputs.back() == nullptr) inputs.pop_back();
}

// ---- Conv ----

bool FuseConv(ir::Graph& graph, ir::Node* conv, std::unordered_set<ir::Node*>& removed) {
  if (conv->inputs.size() < 2 || !conv->has_input(0) || !conv->has_input(1) ||
      conv->inputs.size() > 3)
    return false;
  ir::Value* v = SingleOutput(graph, *conv);
  const std::optional<std::vector<int64_t>> out_dims = KnownDims(v);
  if (!v || !out_dims || out_dims->size() < 3) return false;
  const DType dtype = v->type.dtype;
  if (!IsFloatingPoint(dtype)) return false;
  const int64_t channels = (*out_dims)[1];

  ir::Value* bias = conv->has_input(2) ? conv->inputs[2] : nullptr;
  std::optional<std::vector<float>> bias_values;  // Set when the bias changes.
  ir::Value* residual = nullptr;
  std::vector<ir::Node*> absorbed;
  std::optional<Activation> act;

  // Adds: constant per-channel biases and at most one residual.
  while (true) {
    ir::Node* add = SoleConsumer(graph, v);
    if (!Is(add, "Add")) break;
    ir::Value* other = OtherInput(*add, v);
    ir::Value* out = other ? SingleOutput(graph, *add) : nullptr;
    if (!out || out->type.dtype != dtype || KnownDims(out) != out_dims) break;
    if (other->is_constant()) {
      std::optional<std::vector<float>> add_values = ChannelBias(other->constant, *out_dims);
      if (!add_values) break;
      if (!bias_values) {
        if (bias) {
          if (!bias->is_constant() || bias->constant.numel() != channels ||
              !IsFloatingPoint(bias->constant.dtype()))
            break;
          bias_values = bias->constant.ToFloatVector();
        } else {
          bias_values = std::vector<float>(static_cast<size_t>(channels), 0.f);
        }
      }
      for (int64_t k = 0; k < channels; ++k)
        (*bias_values)[static_cast<size_t>(k)] += (*add_values)[static_cast<size_t>(k)];
    } else {
      if (residual || other->type.dtype != dtype || KnownDims(other) != out_dims) break;
      residual = other;
    }
    absorbed.push_back(add);
    v = out;
  }
  act = MatchActivation(graph, v, /*conv=*/true);
  if (act) {
    absorbed.insert(absorbed.end(), act->nodes.begin(), act->nodes.end());
    v = act->output;
  }
  if (absorbed.empty()) return false;

  const std::string name = conv->name;
  const std::string stem = name.empty() ? std::string("conv") : name;
  ir::Attributes attrs = conv->attrs;
  const int opset = conv->opset;
  std::vector<ir::Value*> inputs = {conv->inputs[0], conv->inputs[1], bias, residual};
  if (bias_values) {
    const DType bias_dtype = bias ? bias->constant.dtype() : dtype;
    inputs[2] = NewConstant(graph, stem + "_fused_bias", MakeTensor(bias_dtype, *bias_values));
  }
  attrs.set("activation", act ? act->name : std::string());
  if (act && act->has_alpha) attrs.set("activation_alpha", act->alpha);
  if (act && act->has_beta) attrs.set("activation_beta", act->beta);
  absorbed.insert(absorbed.begin(), conv);
  RemoveNodes(graph, absorbed, removed);
  TrimTrailingNulls(inputs);
  ir::Node* fused = graph.AddNode("KilnConv", name, inputs, {v});
  fused->attrs = std::move(attrs);
  fused->opset = opset;
  return true;
}

// ---- MatMul / Gemm ----

// A bias of [N] or [1, .., 1, N] for an output of out_dims (last dim N).
bool IsRowBias(const ir::Value* c, const std::vector<int64_t>& out_dims) {
  const std::optional<std::vector<int64_t>> dims = KnownDims(c);
  if (!dims || dims->empty() || dims->size() > out_dims.size()) return false;
  if (dims->back() != out_dims.back()) return false;
  for (size_t i = 0; i + 1 < dims->size(); ++i)
    if ((*dims)[i] != 1) return false;
  return true;
}

// Input for KilnMatMul's bias: c itself when 1-D, else a 1-D constant copy.
ir::Value* BiasInput(ir::Graph& graph, ir::Value* c, const std::string& stem) {
  if (c->type.rank() == 1) return c;
  if (!c->is_constant()) return c;  // [1, N] non-constant: the layer accepts it.
  return NewConstant(graph, stem + "_fused_bias", c->constant.Reshaped({c->constant.numel()}));
}

void SetMatMulActivation(ir::Attributes& attrs, const std::optional<Activation>& act) {
  attrs.set("activation", act ? act->name : std::string());
  if (act && act->name == "Gelu") attrs.set("gelu_approximate", std::string("tanh"));
}

bool FuseMatMul(ir::Graph& graph, ir::Node* mm, std::unordered_set<ir::Node*>& removed) {
  if (mm->inputs.size() != 2 || !mm->has_input(0) || !mm->has_input(1)) return false;
  ir::Value* b = mm->inputs[1];
  if (!b->is_constant() || b->constant.rank() != 2) return false;
  ir::Value* v = SingleOutput(graph, *mm);
  const std::optional<std::vector<int64_t>> out_dims = KnownDims(v);
  if (!v || !out_dims || out_dims->empty() || !KnownDims(mm->inputs[0])) return false;
  if (!IsFloatingPoint(v->type.dtype)) return false;
  const int64_t n = b->constant.dim(1);
  if (out_dims->back() != n) return false;

  std::vector<ir::Node*> absorbed;
  ir::Value* bias = nullptr;
  if (ir::Node* add = SoleConsumer(graph, v); Is(add, "Add")) {
    ir::Value* other = OtherInput(*add, v);
    ir::Value* out = other ? SingleOutput(graph, *add) : nullptr;
    if (out && other->is_constant() && other->type.dtype == v->type.dtype &&
        IsRowBias(other, *out_dims) && KnownDims(out) == out_dims) {
      bias = other;
      absorbed.push_back(add);
      v = out;
    }
  }
  // A residual: Add of a same-shaped tensor, cuBLASLt's C (beta = 1).
  ir::Value* residual = nullptr;
  if (ir::Node* add = SoleConsumer(graph, v); Is(add, "Add")) {
    ir::Value* other = OtherInput(*add, v);
    ir::Value* out = other ? SingleOutput(graph, *add) : nullptr;
    if (out && !other->is_constant() && other->type.dtype == v->type.dtype &&
        KnownDims(other) == out_dims && KnownDims(out) == out_dims) {
      residual = other;
      absorbed.push_back(add);
      v = out;
    }
  }
  std::optional<Activation> act = MatchActivation(graph, v, /*conv=*/false);
  if (act) {
    absorbed.insert(absorbed.end(), act->nodes.begin(), act->nodes.end());
    v = act->output;
  }
  if (absorbed.empty()) return false;

  const std::string name = mm->name;
  const std::string stem = name.empty() ? std::string("matmul") : name;
  const int opset = mm->opset;
  std::vector<ir::Value*> inputs = {mm->inputs[0], b, bias ? BiasInput(graph, bias, stem) : nullptr,
                                    residual};
  TrimTrailingNulls(inputs);
  ir::Attributes attrs;
  attrs.set("transB", int64_t{0});
  SetMatMulActivation(attrs, act);
  absorbed.insert(absorbed.begin(), mm);
  RemoveNodes(graph, absorbed, removed);
  ir::Node* fused = graph.AddNode("KilnMatMul", name, inputs, {v});
  fused->attrs = std::move(attrs);
  fused->opset = opset;
  return true;
}

bool FuseGemm(ir::Graph& graph, ir::Node* gemm, std::unordered_set<ir::Node*>& removed) {
  if (gemm->inputs.size() < 2 || gemm->inputs.size() > 3 || !gemm->has_input(0) ||
      !gemm->has_input(1))
    return false;
  const ir::Attributes& ga = gemm->attrs;
  if (ga.GetInt("transA", 0) != 0 || ga.GetFloat("alpha", 1.f) != 1.f) return false;
  ir::Value* v = SingleOutput(graph, *gemm);
  const std::optional<std::vector<int64_t>> out_dims = KnownDims(v);
  if (!v || !out_dims || out_dims->size() != 2 || !IsFloatingPoint(v->type.dtype)) return false;
  ir::Value* c = gemm->has_input(2) ? gemm->inputs[2] : nullptr;
  if (c) {
    const float beta = ga.GetFloat("beta", 1.f);
    if (beta == 0.f) {
      c = nullptr;  // C is ignored.
    } else if (beta != 1.f || c->type.dtype != v->type.dtype || !IsRowBias(c, *out_dims)) {
      return false;
    }
  }
  std::optional<Activation> act = MatchActivation(graph, v, /*conv=*/false);
  if (!act) return false;

  const std::string name = gemm->name;
  const std::string stem = name.empty() ? std::string("gemm") : name;
  const int opset = gemm->opset;
  std::vector<ir::Value*> inputs = {gemm->inputs[0], gemm->inputs[1]};
  if (c) inputs.push_back(BiasInput(graph, c, stem));
  ir::Attributes attrs;
  attrs.set("transB", int64_t{ga.GetInt("transB", 0) != 0 ? 1 : 0});
  SetMatMulActivation(attrs, act);
  std::vector<ir::Node*> absorbed = {gemm};
  absorbed.insert(absorbed.end(), act->nodes.begin(), act->nodes.end());
  RemoveNodes(graph, absorbed, removed);
  ir::Node* fused = graph.AddNode("KilnMatMul", name, inputs, {act->output});
  fused->attrs = std::move(attrs);
  fused->opset = opset;
  return true;
}

template <typename Fn>
int RunFusion(ir::Graph& graph, Fn&& try_fuse) {
  std::vector<ir::Node*> snapshot;
  for (const auto& n : graph.nodes()) snapshot.push_back(n.get());
  std::unordered_set<ir::Node*> removed;
  int fused = 0;
  for (ir::Node* n : snapshot) {
    if (removed.count(n)) continue;
    if (try_fuse(n, removed)) ++fused;
  }
  if (fused) {
    graph.SortTopologically();
    graph.RemoveUnusedValues();
  }
  return fused;
}

}  // namespace

int FuseConvEpilogues(ir::Graph& graph) {
  return RunFusion(graph, [&](ir::Node* n, std::unordered_set<ir::Node*>& removed) {
    return Is(n, "Conv") && FuseConv(graph, n, removed);
  });
}

int FuseGemmEpilogues(ir::Graph& graph) {
  return RunFusion(graph, [&](ir::Node* n, std::unordered_set<ir::Node*>& removed) {
    if (Is(n, "MatMul")) return FuseMatMul(graph, n, removed);
    if (Is(n, "Gemm")) return FuseGemm(graph, n, removed);
    return false;
  });
}

}  // namespace kiln::builder
