#include "builder/conv_space_to_depth.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "builder/lower.h"
#include "builder/pattern_util.h"
#include "ops/nn.h"
#include "ops/tensor.h"
#include "passes/pass_util.h"

namespace kiln::builder {
namespace {

// SpaceToDepth's block: 2x2 pixels turn a stride-2 convolution into stride 1.
constexpr int64_t kBlock = 2;
// Tensor-core convolutions want the channel count to be a multiple of this.
constexpr int64_t kChannelMultiple = 8;
// Opset of the Pad / SpaceToDepth nodes the rewrite creates (pads as an
// input, bfloat16 allowed).
constexpr int kRewriteOpset = 13;

bool IsFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A node name not yet used in the graph (Validate requires unique names).
std::string UniqueNodeName(const ir::Graph& graph, const std::string& base) {
  auto used = [&](const std::string& name) {
    for (const auto& n : graph.nodes())
      if (n->name == name) return true;
    return false;
  };
  if (!used(base)) return base;
  for (int i = 1;; ++i) {
    std::string candidate = StrCat(base, "_", i);
    if (!used(candidate)) return candidate;
  }
}

// ---- ConvSpaceToDepth ----

// W [K, C, kh, kw] -> W' [K, 4*C', ceil(kh/2), ceil(kw/2)] with
// W'[k, (i*2 + j)*C' + c, a, b] = W[k, c, 2a + i, 2b + j], zero elsewhere.
// Moves bytes, so it is exact for every dtype.
Tensor SpaceToDepthWeights(const Tensor& w, int64_t padded_channels) {
  const int64_t K = w.dim(0), C = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  const int64_t ka = CeilDiv(kh, kBlock), kb = CeilDiv(kw, kBlock);
  const int64_t out_c = kBlock * kBlock * padded_channels;
  Tensor out(w.dtype(), {K, out_c, ka, kb});
  std::memset(out.raw_data(), 0, out.nbytes());
  const size_t es = DTypeSize(w.dtype());
  const char* src = static_cast<const char*>(w.raw_data());
  char* dst = static_cast<char*>(out.raw_data());
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < kh; ++r)
        for (int64_t s = 0; s < kw; ++s) {
          const int64_t i = r % kBlock, a = r / kBlock, j = s % kBlock, b = s / kBlock;
          const int64_t oc = (i * kBlock + j) * padded_channels + c;
          std::memcpy(dst + static_cast<size_t>(((k * out_c + oc) * ka + a) * kb + b) * es,
                      src + static_cast<size_t>(((k * C + c) * kh + r) * kw + s) * es, es);
        }
  return out;
}

bool RewriteConv(ir::Graph& graph, ir::Node* conv) {
  if (conv->inputs.size() < 2 || conv->inputs.size() > 3 || !conv->has_input(0) ||
      !conv->has_input(1) || conv->outputs.size() != 1 || !conv->outputs[0])
    return false;
  ir::Value* x = conv->inputs[0];
  ir::Value* w = conv->inputs[1];
  ir::Value* y = conv->outputs[0];
  const std::optional<std::vector<int64_t>> x_dims = KnownDims(x), y_dims = KnownDims(y);
  if (!x_dims || !y_dims || x_dims->size() != 4 || y_dims->size() != 4) return false;
  if (!w->is_constant() || w->constant.rank() != 4) return false;
  const DType dtype = x->type.dtype;
  if (!IsFloat(dtype) || w->constant.dtype() != dtype || y->type.dtype != dtype) return false;
  const ir::Attributes& attrs = conv->attrs;
  if (attrs.GetInt("group", 1) != 1) return false;
  const int64_t N = (*x_dims)[0], C = (*x_dims)[1], H = (*x_dims)[2], W = (*x_dims)[3];
  const Tensor& weights = w->constant;
  const int64_t K = weights.dim(0), kh = weights.dim(2), kw = weights.dim(3);
  if (C < 1 || C > kSpaceToDepthMaxInputChannels || weights.dim(1) != C) return false;
  if (kh < kBlock || kw < kBlock) return false;

  const std::optional<nn::WindowGeometry> geometry =
      TryWindowGeometry(attrs, {H, W}, {kh, kw}, false);
  if (!geometry) return false;
  const nn::WindowGeometry& g = *geometry;
  if (g.strides != std::vector<int64_t>{kBlock, kBlock} ||
      g.dilations != std::vector<int64_t>{1, 1})
    return false;
  if (g.output != std::vector<int64_t>{(*y_dims)[2], (*y_dims)[3]} || (*y_dims)[0] != N ||
      (*y_dims)[1] != K)
    return false;
  const int64_t out_h = g.output[0], out_w = g.output[1];
  if (out_h < 1 || out_w < 1 || N < 1) return false;
  const int64_t ka = CeilDiv(kh, kBlock), kb = CeilDiv(kw, kBlock);
  // Space-to-depth grid the stride-1 convolution reads, and the pads that
  // produce it (the end pads cover what the even-sized kernel reads).
  const int64_t grid_h = out_h + ka - 1, grid_w = out_w + kb - 1;
  const int64_t top = g.pads_begin[0], left = g.pads_begin[1];
  const int64_t bottom = kBlock * grid_h - H - top, right = kBlock * grid_w - W - left;
  if (top < 0 || left < 0 || bottom < 0 || right < 0) return false;
  // 4*C' a multiple of kChannelMultiple.
  const int64_t block_area = kBlock * kBlock;
  const int64_t padded_c =
      CeilDiv(C * block_area, kChannelMultiple) * kChannelMultiple / block_area;

  const std::string name = conv->name;
  const std::string stem = name.empty() ? std::string("conv") : name;
  ir::Value* bias = conv->has_input(2) ? conv->inputs[2] : nullptr;
  ir::Attributes new_attrs;
  new_attrs.set("kernel_shape", std::vector<int64_t>{ka, kb});
  new_attrs.set("strides", std::vector<int64_t>{1, 1});
  new_attrs.set("pads", std::vector<int64_t>{0, 0, 0, 0});
  new_attrs.set("dilations", std::vector<int64_t>{1, 1});
  new_attrs.set("group", int64_t{1});
  const int conv_opset = conv->opset;
  graph.RemoveNode(conv);

  ir::Value* pads =
      graph.AddConstant(graph.UniqueName(stem + "_s2d_pads"),
                        Tensor::FromInt64s({8}, {0, 0, top, left, 0, padded_c - C, bottom, right}));
  ir::Value* padded =
      graph.AddValue(graph.UniqueName(stem + "_s2d_padded"),
                     {dtype, ir::ShapeFromDims({N, padded_c, kBlock * grid_h, kBlock * grid_w})});
  ir::Node* pad =
      graph.AddNode("Pad", UniqueNodeName(graph, stem + "_s2d_pad"), {x, pads}, {padded});
  pad->attrs.set("mode", std::string("constant"));
  pad->opset = kRewriteOpset;

  ir::Value* blocks =
      graph.AddValue(graph.UniqueName(stem + "_s2d_blocks"),
                     {dtype, ir::ShapeFromDims({N, block_area * padded_c, grid_h, grid_w})});
  ir::Node* s2d =
      graph.AddNode("SpaceToDepth", UniqueNodeName(graph, stem + "_s2d"), {padded}, {blocks});
  s2d->attrs.set("blocksize", kBlock);
  s2d->opset = kRewriteOpset;

  ir::Value* new_w =
      graph.AddConstant(graph.UniqueName(w->name + "_s2d"), SpaceToDepthWeights(weights, padded_c));
  std::vector<ir::Value*> inputs = {blocks, new_w};
  if (bias) inputs.push_back(bias);
  ir::Node* new_conv = graph.AddNode("Conv", name, inputs, {y});
  new_conv->attrs = std::move(new_attrs);
  new_conv->opset = conv_opset;
  return true;
}

// ---- FusePadSpaceToDepth ----

// The pads of a zero-filling constant Pad over a rank-4 value, else nullopt.
std::optional<std::vector<int64_t>> ZeroPadPads(const ir::Node& pad) {
  const int rank = 4;
  const bool as_inputs = pad.opset >= 11;
  const Tensor* pads = nullptr;
  const Tensor* axes = nullptr;
  if (as_inputs) {
    if (!pad.has_input(1) || !pad.inputs[1]->is_constant()) return std::nullopt;
    pads = &pad.inputs[1]->constant;
    if (pad.has_input(2)) {
      const ir::Value* value = pad.inputs[2];
      if (!value->is_constant()) return std::nullopt;
      if (value->constant.numel() > 1) return std::nullopt;
      if (value->constant.numel() == 1) {
        const double v = value->constant.GetAsDouble(0);
        if (v != 0.0 || std::signbit(v)) return std::nullopt;
      }
    }
    if (pad.has_input(3)) {
      if (!pad.inputs[3]->is_constant()) return std::nullopt;
      axes = &pad.inputs[3]->constant;
    }
  } else {
    const float v = pad.attrs.GetFloat("value", 0.f);
    if (v != 0.f || std::signbit(v)) return std::nullopt;
  }
  tensor_ops::PadArgs args;
  try {
    args = tensor_ops::GetPadArgs(pad, rank, pads, axes);
  } catch (const Error&) {
    return std::nullopt;
  }
  if (args.mode != tensor_ops::PadMode::kConstant) return std::nullopt;
  for (int64_t p : args.pads)
    if (p < 0) return std::nullopt;
  if (args.pads[0] != 0 || args.pads[4] != 0) return std::nullopt;  // Batch.
  return args.pads;
}

bool IsRowMajor(const std::unordered_map<const ir::Value*, gpu::Layout>& layouts,
                const ir::Value* v) {
  auto it = layouts.find(v);
  return it == layouts.end() || it->second == gpu::Layout::kRowMajor;
}

bool FuseChain(ir::Graph& graph, ir::Node* s2d,
               std::unordered_map<const ir::Value*, gpu::Layout>& layouts,
               std::unordered_set<const ir::Node*>& removed) {
  if (s2d->inputs.size() != 1 || !s2d->has_input(0) || s2d->outputs.size() != 1 || !s2d->outputs[0])
    return false;
  const int64_t blocksize = s2d->attrs.GetInt("blocksize", 0);
  if (blocksize < 1) return false;
  ir::Value* padded = s2d->inputs[0];
  ir::Node* pad = padded->producer;
  if (!Is(pad, "Pad") || pad->outputs.size() != 1 || SoleConsumer(graph, padded) != s2d)
    return false;
  std::optional<std::vector<int64_t>> pads = ZeroPadPads(*pad);
  if (!pads) return false;
  ir::Value* source = pad->inputs[0];
  ir::Value* result = s2d->outputs[0];
  const std::optional<std::vector<int64_t>> in_dims = KnownDims(source),
                                            out_dims = KnownDims(result);
  if (!in_dims || !out_dims || in_dims->size() != 4 || out_dims->size() != 4) return false;
  if (!IsFloat(source->type.dtype) || !IsRowMajor(layouts, source) ||
      !IsRowMajor(layouts, padded) || !IsRowMajor(layouts, result))
    return false;
  std::vector<ir::Node*> absorbed = {pad, s2d};
  // Read past a float Cast and an image input's normalization (the padding
  // stays 0, as after normalization).
  const StemSource stem = TraceStemSource(
      graph, source, pad, [&](const ir::Value* v) { return IsRowMajor(layouts, v); });
  absorbed.insert(absorbed.end(), stem.absorbed.begin(), stem.absorbed.end());
  source = stem.value;
  const ir::Node* normalize = stem.normalize;
  // A KilnToNHWC reading only the result: write its output instead.
  if (ir::Node* to_nhwc = SoleConsumer(graph, result);
      to_nhwc && to_nhwc->op_type == "KilnToNHWC" && to_nhwc->outputs.size() == 1 &&
      to_nhwc->outputs[0] && IsFloat(to_nhwc->outputs[0]->type.dtype) &&
      KnownDims(to_nhwc->outputs[0]) == out_dims) {
    absorbed.push_back(to_nhwc);
    result = to_nhwc->outputs[0];
  }
  if (!IsFloat(result->type.dtype)) return false;

  const std::string name = s2d->name;
  ir::Attributes attrs;
  attrs.set("pads", *pads);
  attrs.set("blocksize", blocksize);
  if (normalize) {
    attrs.set("mean", normalize->attrs.GetFloats("mean"));
    attrs.set("std", normalize->attrs.GetFloats("std"));
  }
  for (ir::Node* n : absorbed) {
    removed.insert(n);
    graph.RemoveNode(n);
  }
  ir::Node* fused = graph.AddNode("KilnPadSpaceToDepth", name, {source}, {result});
  fused->attrs = std::move(attrs);
  return true;
}

}  // namespace

int ConvSpaceToDepth(ir::Graph& graph) {
  int rewritten = 0;
  for (ir::Node* n : passes::internal::NodeList(graph))
    if (Is(n, "Conv") && RewriteConv(graph, n)) ++rewritten;
  if (rewritten) {
    graph.SortTopologically();
    graph.RemoveUnusedValues();
  }
  return rewritten;
}

int FusePadSpaceToDepth(ir::Graph& graph,
                        std::unordered_map<const ir::Value*, gpu::Layout>& layouts) {
  int fused = 0;
  std::unordered_set<const ir::Node*> removed;  // Snapshot entries no longer alive.
  for (ir::Node* n : passes::internal::NodeList(graph)) {
    if (removed.count(n)) continue;
    if (Is(n, "SpaceToDepth") && FuseChain(graph, n, layouts, removed)) ++fused;
  }
  if (fused) {
    graph.SortTopologically();
    graph.RemoveUnusedValues();
    PruneLayouts(graph, layouts);
  }
  return fused;
}

}  // namespace kiln::builder
