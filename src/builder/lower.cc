#include "builder/lower.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "builder/pattern_util.h"
#include "ops/registry.h"

namespace kiln::builder {
namespace {

std::vector<ir::Node*> Snapshot(const ir::Graph& graph) {
  std::vector<ir::Node*> nodes;
  for (const auto& n : graph.nodes()) nodes.push_back(n.get());
  return nodes;
}

// Re-runs registry inference for a node whose input types changed.
void Reinfer(ir::Node& node) {
  std::vector<const ir::TensorType*> types;
  std::vector<const Tensor*> values;
  for (const ir::Value* v : node.inputs) {
    types.push_back(v ? &v->type : nullptr);
    values.push_back(v && v->is_constant() ? &v->constant : nullptr);
  }
  std::vector<ir::TensorType> out = InferNode(node, types, values);
  for (size_t i = 0; i < node.outputs.size(); ++i)
    if (node.outputs[i]) node.outputs[i]->type = out[i];
}

ir::Node* AddCast(ir::Graph& graph, ir::Value* from, ir::Value* to, DType dtype) {
  ir::Node* cast = graph.AddNode("Cast", graph.UniqueName(from->name + "_cast"), {from}, {to});
  cast->attrs.set("to", static_cast<int64_t>(dtype));
  if (cast->opset < 13) cast->opset = 13;
  return cast;
}

// Ops that keep float32 whatever the engine precision (their float inputs
// are scales or quantization parameters, or they create values).
const std::set<std::string> kKeepFloat32Ops = {
    "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "Range", "ConstantOfShape",
    "EyeLike", "Shape", "Size", "Einsum"};

// Float inputs that are not of the data type T (scales, ROIs).
bool KeepInputFloat32(const ir::Node& node, size_t input) {
  if (node.op_type == "Resize") return input == 1 || input == 2;
  if (node.op_type == "Upsample") return input == 1;
  return false;
}

// Unary float ops whose GPU layer computes in float32 and converts on store
// to whatever dtype its output value has (cuda/layers/elementwise.cc).
const std::set<std::string> kStoreConvertingUnaryOps = {
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Sin", "Cos", "Softplus",
    "Softsign", "Mish", "ThresholdedRelu"};

// A 16-bit Gemm / KilnMatMul whose result a Cast widens to float32 (a
// classifier's logits): cuBLASLt writes float32 D from float16/bfloat16
// A and B, so the product writes the Cast's output itself. Its bias / C
// must then be float32 (cuBLASLt's bias has D's type): a constant one is
// converted; a computed C or a residual input blocks the fold.
bool WidenProductOutput(ir::Graph& graph, ir::Node* product, ir::Value* in, DType to) {
  const bool gemm = Is(product, "Gemm");
  if ((!gemm && product->op_type != "KilnMatMul") || to != DType::kFloat32 ||
      (in->type.dtype != DType::kFloat16 && in->type.dtype != DType::kBFloat16))
    return false;
  if (!gemm && product->has_input(3)) return false;  // The residual would be cuBLASLt's C.
  if (product->has_input(2) && !product->inputs[2]->is_constant()) return false;
  if (product->has_input(2)) {
    ir::Value* c = product->inputs[2];
    product->inputs[2] = graph.AddConstant(graph.UniqueName(c->name + "_float32"),
                                           c->constant.CastTo(DType::kFloat32));
  }
  return true;
}

// Three Cast patterns that cost a kernel each and fold into one:
//   Cast(to f16/bf16) of Cast(to f32) of x: one Cast from x. The GPU Cast
//     converts every source to float32 before rounding to 16 bits, so the
//     result is bit-identical (BERT's int64 mask -> float32 -> float16).
//   Cast(float -> float) of a unary float op (Tanh, Relu, ...): the op writes
//     the Cast's dtype itself, skipping the intermediate rounding as a fused
//     LayerNorm output does (BERT's pooler Tanh -> float32 output).
//   Cast(to f32) of a 16-bit matrix product (WidenProductOutput).
int FoldCastChains(ir::Graph& graph) {
  int folded = 0;
  std::set<const ir::Node*> removed;  // Snapshot entries no longer valid.
  for (ir::Node* cast : Snapshot(graph)) {
    if (removed.count(cast) || cast->op_type != "Cast" || cast->inputs.size() != 1 ||
        !cast->inputs[0] || cast->outputs.size() != 1 || !cast->outputs[0])
      continue;
    ir::Value* in = cast->inputs[0];
    ir::Value* out = cast->outputs[0];
    ir::Node* producer = in->producer;
    if (!producer || producer->outputs.size() != 1 || producer->outputs[0] != in ||
        SoleConsumer(graph, in) != cast)
      continue;
    const DType to = out->type.dtype;
    if (Is(producer, "Cast") && producer->inputs.size() == 1 && producer->inputs[0] &&
        in->type.dtype == DType::kFloat32 && (to == DType::kFloat16 || to == DType::kBFloat16)) {
      cast->inputs[0] = producer->inputs[0];
      removed.insert(producer);
      graph.RemoveNode(producer);
      ++folded;
    } else if ((kStoreConvertingUnaryOps.count(producer->op_type) && IsOnnx(*producer) &&
                IsFloatingPoint(in->type.dtype) && IsFloatingPoint(to)) ||
               WidenProductOutput(graph, producer, in, to)) {
      graph.RemoveNode(cast);
      producer->outputs[0] = out;
      out->producer = producer;
      in->producer = nullptr;
      ++folded;
    }
  }
  return folded;
}

}  // namespace

void SpecializeShapes(ir::Graph& graph, const std::map<std::string, std::vector<int64_t>>& shapes,
                      const std::function<void(const std::string&)>& log) {
  for (const auto& [name, dims] : shapes) {
    bool found = std::any_of(graph.inputs().begin(), graph.inputs().end(),
                             [&](const ir::Value* v) { return v->name == name; });
    KILN_CHECK(found, "--shapes names '", name, "', which is not an input of the model");
  }
  for (ir::Value* v : graph.inputs()) {
    KILN_CHECK(v->type.has_rank(), "input '", v->name, "' has no declared rank");
    ir::Shape& shape = *v->type.shape;
    auto it = shapes.find(v->name);
    if (it != shapes.end()) {
      const std::vector<int64_t>& dims = it->second;
      KILN_CHECK(dims.size() == shape.size(), "input '", v->name, "' has shape ",
                 ir::ShapeToString(shape), " but --shapes gives ", DimsToString(dims));
      for (size_t i = 0; i < dims.size(); ++i) {
        KILN_CHECK(dims[i] >= 0, "input '", v->name, "': negative dim in ", DimsToString(dims));
        KILN_CHECK(!shape[i].is_known() || shape[i].value == dims[i], "input '", v->name,
                   "' has shape ", ir::ShapeToString(shape), "; --shapes gives ",
                   DimsToString(dims), " (dim ", i, " is fixed by the model)");
        shape[i] = ir::Dim::Known(dims[i]);
      }
      continue;
    }
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i].is_known()) continue;
      if (log)
        log(StrCat("input '", v->name, "': dynamic dim ", i, " (", shape[i].ToString(),
                   ") set to 1; use --shapes ", v->name, "=... to choose"));
      shape[i] = ir::Dim::Known(1);
    }
  }
  // Intermediate values keep symbolic dims from import; forget them so
  // inference recomputes everything from the now concrete inputs.
  std::set<const ir::Value*> keep(graph.inputs().begin(), graph.inputs().end());
  for (const auto& v : graph.values())
    if (!keep.count(v.get()) && !v->is_constant()) v->type.shape.reset();
}

void FreezeInputs(ir::Graph& graph, const std::map<std::string, Tensor>& values) {
  for (const auto& [name, value] : values) {
    auto it = std::find_if(graph.inputs().begin(), graph.inputs().end(),
                           [&](const ir::Value* v) { return v->name == name; });
    KILN_CHECK(it != graph.inputs().end(), "frozen input '", name, "' is not an input of the model");
    ir::Value* input = *it;
    const ir::TensorType& declared = input->type;
    KILN_CHECK(declared.dtype == value.dtype(), "frozen input '", name, "' is ",
               declared.ToString(), ", the value given is ", value.TypeString());
    if (declared.has_rank()) {
      KILN_CHECK(declared.rank() == value.rank(), "frozen input '", name, "' is ",
                 declared.ToString(), ", the value given is ", value.TypeString());
      for (int i = 0; i < value.rank(); ++i) {
        const ir::Dim& d = (*declared.shape)[static_cast<size_t>(i)];
        KILN_CHECK(!d.is_known() || d.value == value.dim(i), "frozen input '", name, "' is ",
                   declared.ToString(), ", the value given is ", value.TypeString());
      }
    }
    ir::Value* constant = graph.AddConstant(graph.UniqueName(name + "_frozen"), value);
    graph.inputs().erase(it);
    input->is_graph_input = false;
    graph.ReplaceAllUses(input, constant);
  }
  graph.RemoveUnusedValues();
}

void CheckShapesConcrete(const ir::Graph& graph) {
  for (const auto& node : graph.nodes())
    for (const ir::Value* v : node->outputs) {
      if (!v) continue;
      KILN_CHECK(v->type.dtype != DType::kUndefined && v->type.has_rank() &&
                     ir::IsFullyKnown(*v->type.shape),
                 node->Describe(), ": output '", v->name, "' has shape ", v->type.ToString(),
                 " that depends on run-time data; GPU engines need shapes known at build time");
    }
}

void PruneLayouts(const ir::Graph& graph,
                  std::unordered_map<const ir::Value*, gpu::Layout>& layouts) {
  std::set<const ir::Value*> alive;
  for (const auto& v : graph.values()) alive.insert(v.get());
  for (auto it = layouts.begin(); it != layouts.end();)
    it = alive.count(it->first) ? std::next(it) : layouts.erase(it);
}

ir::Value* DetachProducer(ir::Graph& graph, ir::Value* v) {
  ir::Node* producer = v->producer;
  KILN_CHECK(producer, "DetachProducer: value '", v->name, "' has no producer");
  ir::Value* fresh = graph.AddValue(graph.UniqueName(v->name + "_inner"), v->type);
  for (ir::Value*& out : producer->outputs)
    if (out == v) out = fresh;
  fresh->producer = producer;
  v->producer = nullptr;
  for (const auto& n : graph.nodes())
    for (ir::Value*& in : n->inputs)
      if (in == v) in = fresh;
  return fresh;
}

void AssignPrecision(ir::Graph& graph, DType low) {
  if (low == DType::kFloat32) return;
  std::map<const ir::Value*, ir::Value*> low_version;   // float32 value → its low copy
  std::map<const ir::Value*, ir::Value*> high_version;  // low value → float32 copy
  std::set<const ir::Value*> lowered;                   // values whose dtype changed to low

  auto to_low = [&](ir::Value* v) -> ir::Value* {
    auto it = low_version.find(v);
    if (it != low_version.end()) return it->second;
    ir::Value* nv;
    if (v->is_constant()) {
      nv = graph.AddConstant(graph.UniqueName(v->name + "_lowp"), v->constant.CastTo(low));
    } else {
      nv = graph.AddValue(graph.UniqueName(v->name + "_lowp"), {low, v->type.shape});
      AddCast(graph, v, nv, low);
    }
    low_version[v] = nv;
    return nv;
  };
  auto to_high = [&](ir::Value* v) -> ir::Value* {
    auto it = high_version.find(v);
    if (it != high_version.end()) return it->second;
    ir::Value* nv = graph.AddValue(graph.UniqueName(v->name + "_fp32"), {DType::kFloat32, v->type.shape});
    AddCast(graph, v, nv, DType::kFloat32);
    high_version[v] = nv;
    return nv;
  };

  for (ir::Node* node : Snapshot(graph)) {
    bool runs_low = !kKeepFloat32Ops.count(node->op_type);
    if (runs_low) {
      // A node computes in floating point if one of its data inputs is float.
      runs_low = false;
      for (size_t i = 0; i < node->inputs.size(); ++i) {
        const ir::Value* v = node->inputs[i];
        if (v && !KeepInputFloat32(*node, i) &&
            (v->type.dtype == DType::kFloat32 || lowered.count(v)))
          runs_low = true;
      }
    }
    std::vector<ir::Value*> original = node->inputs;
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      ir::Value* v = node->inputs[i];
      if (!v) continue;
      bool want_low = runs_low && !KeepInputFloat32(*node, i);
      if (want_low && v->type.dtype == DType::kFloat32) node->inputs[i] = to_low(v);
      if (!want_low && lowered.count(v)) node->inputs[i] = to_high(v);
    }
    try {
      Reinfer(*node);
    } catch (const Error&) {
      // The op does not take low precision here: run it in float32.
      node->inputs = original;
      for (size_t i = 0; i < node->inputs.size(); ++i)
        if (node->inputs[i] && lowered.count(node->inputs[i]))
          node->inputs[i] = to_high(node->inputs[i]);
      Reinfer(*node);
    }
    for (ir::Value* out : node->outputs)
      if (out && out->type.dtype == low) lowered.insert(out);
  }
  // Graph outputs keep their float32 dtype and name.
  for (ir::Value*& out : graph.outputs()) {
    if (!lowered.count(out) || !out->producer) continue;
    ir::Value* inner = DetachProducer(graph, out);
    out->type.dtype = DType::kFloat32;
    AddCast(graph, inner, out, DType::kFloat32);
  }
  graph.SortTopologically();
  graph.RemoveUnusedValues();
}

std::unordered_map<const ir::Value*, gpu::Layout> AssignLayouts(ir::Graph& graph,
                                                                bool nhwc_convolutions) {
  std::unordered_map<const ir::Value*, gpu::Layout> layout;
  auto is_nhwc = [&](const ir::Value* v) {
    auto it = layout.find(v);
    return it != layout.end() && it->second == gpu::Layout::kNHWC;
  };
  auto rank_of = [](const ir::Value* v) { return v && v->type.has_rank() ? v->type.rank() : -1; };
  std::map<const ir::Value*, ir::Value*> nhwc_version, row_major_version;
  auto convert = [&](ir::Value* v, bool to_nhwc) -> ir::Value* {
    auto& cache = to_nhwc ? nhwc_version : row_major_version;
    auto it = cache.find(v);
    if (it != cache.end()) return it->second;
    ir::Value* nv = graph.AddValue(graph.UniqueName(v->name + (to_nhwc ? "_nhwc" : "_nchw")), v->type);
    graph.AddNode(to_nhwc ? "KilnToNHWC" : "KilnToRowMajor", graph.UniqueName(nv->name + "_layout"),
                  {v}, {nv});
    if (to_nhwc) layout[nv] = gpu::Layout::kNHWC;
    cache[v] = nv;
    return nv;
  };
  // A constant in NHWC memory order (weights: K,C,R,S → K,R,S,C).
  auto constant_nhwc = [&](ir::Value* v) -> ir::Value* {
    auto it = nhwc_version.find(v);
    if (it != nhwc_version.end()) return it->second;
    const Tensor& t = v->constant;
    const std::vector<int64_t>& d = t.dims();
    Tensor p(t.dtype(), d);
    const size_t es = DTypeSize(t.dtype());
    const int64_t n = d[0], c = d[1], h = d[2], w = d[3];
    const char* src = static_cast<const char*>(t.raw_data());
    char* dst = static_cast<char*>(p.raw_data());
    for (int64_t in = 0; in < n; ++in)
      for (int64_t ic = 0; ic < c; ++ic)
        for (int64_t ih = 0; ih < h; ++ih)
          for (int64_t iw = 0; iw < w; ++iw)
            std::memcpy(dst + static_cast<size_t>(((in * h + ih) * w + iw) * c + ic) * es,
                        src + static_cast<size_t>(((in * c + ic) * h + ih) * w + iw) * es, es);
    ir::Value* nv = graph.AddConstant(graph.UniqueName(v->name + "_nhwc"), p);
    layout[nv] = gpu::Layout::kNHWC;
    nhwc_version[v] = nv;
    return nv;
  };
  auto make_nhwc = [&](ir::Value* v) -> ir::Value* {
    if (is_nhwc(v)) return v;
    return v->is_constant() ? constant_nhwc(v) : convert(v, true);
  };

  const gpu::GpuLayerRegistry& registry = gpu::GpuLayerRegistry::Global();
  for (ir::Node* node : Snapshot(graph)) {
    if (node->op_type == "KilnToNHWC" || node->op_type == "KilnToRowMajor") continue;
    const bool is_conv = node->op_type == "Conv" || node->op_type == "KilnConv";
    bool go_nhwc = false;
    if (is_conv && nhwc_convolutions && rank_of(node->inputs[0]) == 4) {
      go_nhwc = true;
    } else {
      const gpu::GpuOpDef* def = registry.Find(node->op_type);
      bool any_nhwc = std::any_of(node->inputs.begin(), node->inputs.end(),
                                  [&](const ir::Value* v) { return v && is_nhwc(v); });
      go_nhwc = def && def->accepts_nhwc && any_nhwc;
    }
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      ir::Value* v = node->inputs[i];
      if (!v) continue;
      if (go_nhwc && rank_of(v) == 4) {
        node->inputs[i] = make_nhwc(v);
      } else if (is_nhwc(v)) {
        node->inputs[i] = convert(v, false);
      }
    }
    if (go_nhwc)
      for (ir::Value* out : node->outputs)
        if (out && rank_of(out) == 4) layout[out] = gpu::Layout::kNHWC;
    // The fused stem (fuse_conv_pool.h) reads row-major and writes NHWC.
    if (node->op_type == "KilnConvPool") layout[node->outputs[0]] = gpu::Layout::kNHWC;
  }
  for (ir::Value*& out : graph.outputs()) {
    if (!is_nhwc(out)) continue;
    if (out->producer) {
      ir::Value* inner = DetachProducer(graph, out);
      layout[inner] = gpu::Layout::kNHWC;
      layout.erase(out);
      graph.AddNode("KilnToRowMajor", graph.UniqueName(out->name + "_layout"), {inner}, {out});
    } else {
      out = convert(out, false);
    }
  }
  graph.SortTopologically();
  graph.RemoveUnusedValues();
  PruneLayouts(graph, layout);
  return layout;
}

int MergeCastsIntoLayoutChanges(ir::Graph& graph,
                                std::unordered_map<const ir::Value*, gpu::Layout>& layouts) {
  int merged = 0;
  for (ir::Node* node : Snapshot(graph)) {
    if (node->op_type != "KilnToNHWC" && node->op_type != "KilnToRowMajor") continue;
    // Cast → layout change: read the Cast's input directly.
    ir::Value* in = node->inputs[0];
    ir::Node* cast = in->producer;
    if (cast && cast->op_type == "Cast" && IsFloatingPoint(cast->inputs[0]->type.dtype) &&
        graph.Consumers(in).size() == 1 && !graph.IsGraphOutput(in)) {
      node->inputs[0] = cast->inputs[0];
      graph.RemoveNode(cast);
      ++merged;
    }
    // Layout change → Cast: write the Cast's output directly.
    ir::Value* out = node->outputs[0];
    std::vector<ir::Node*> consumers = graph.Consumers(out);
    if (consumers.size() == 1 && consumers[0]->op_type == "Cast" && !graph.IsGraphOutput(out) &&
        IsFloatingPoint(consumers[0]->outputs[0]->type.dtype)) {
      ir::Node* after = consumers[0];
      ir::Value* final_value = after->outputs[0];
      graph.RemoveNode(after);
      node->outputs[0] = final_value;
      final_value->producer = node;
      out->producer = nullptr;
      layouts.erase(final_value);
      if (layouts.count(out)) layouts[final_value] = layouts[out];
      ++merged;
    }
  }
  graph.RemoveUnusedValues();
  PruneLayouts(graph, layouts);
  return merged;
}

int FuseOutputCasts(ir::Graph& graph) {
  int fused = 0;
  for (ir::Node* cast : Snapshot(graph)) {
    if (cast->op_type != "Cast" || cast->inputs.size() != 1 || !cast->inputs[0] ||
        cast->outputs.size() != 1 || !cast->outputs[0])
      continue;
    ir::Value* in = cast->inputs[0];
    ir::Value* out = cast->outputs[0];
    const DType from = in->type.dtype;
    if ((from != DType::kFloat16 && from != DType::kBFloat16) || out->type.dtype != DType::kFloat32)
      continue;
    ir::Node* producer = in->producer;
    if (!producer || producer->op_type != "LayerNormalization" || producer->outputs.empty() ||
        producer->outputs[0] != in || graph.IsGraphOutput(in))
      continue;
    // Other readers may only pick elements (Gather, e.g. BERT's pooler taking
    // token 0): they read the float32 value and a Cast of their (small)
    // result restores the low-precision value they produced.
    std::vector<ir::Node*> pickers;
    bool ok = true;
    for (ir::Node* c : graph.Consumers(in)) {
      if (c == cast) continue;
      const bool picker = c->op_type == "Gather" && c->inputs.size() == 2 && c->inputs[0] == in &&
                          c->inputs[1] != in && c->outputs.size() == 1 && c->outputs[0];
      ok = ok && picker;
      pickers.push_back(c);
    }
    if (!ok) continue;
    graph.RemoveNode(cast);
    producer->outputs[0] = out;
    out->producer = producer;
    in->producer = nullptr;
    for (ir::Node* picker : pickers) {
      ir::Value* picked = picker->outputs[0];
      ir::Value* wide = graph.AddValue(graph.UniqueName(picked->name + "_float32"),
                                       {DType::kFloat32, picked->type.shape});
      picker->inputs[0] = out;
      picker->outputs[0] = wide;
      wide->producer = picker;
      picked->producer = nullptr;
      AddCast(graph, wide, picked, from);
    }
    ++fused;
  }
  fused += FoldCastChains(graph);
  if (fused) graph.RemoveUnusedValues();
  return fused;
}

}  // namespace kiln::builder
