#include "builder/fuse_conv_pool.h"

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "builder/pattern_util.h"
#include "cuda/kernels/conv_pool.h"
#include "passes/pass_util.h"

namespace kiln::builder {
namespace {

namespace ck = gpu::conv_pool_kernels;

// W [K, C, kh, kw] -> float16 [K, PaddedK(kh, kw)] with
// out[k, (ky*kw + kx)*4 + c] = W[k, c, ky, kx], zeros elsewhere.
Tensor PackWeights(const Tensor& w) {
  const int64_t K = w.dim(0), C = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  const int64_t k_padded = ck::PaddedK(static_cast<int>(kh), static_cast<int>(kw));
  const Tensor w32 = w.CastTo(DType::kFloat32);
  Tensor packed(DType::kFloat32, {K, k_padded});
  std::memset(packed.raw_data(), 0, packed.nbytes());
  const float* src = w32.data<float>();
  float* dst = packed.data<float>();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx)
          dst[k * k_padded + (ky * kw + kx) * 4 + c] = src[((k * C + c) * kh + ky) * kw + kx];
  return packed.CastTo(DType::kFloat16);
}

bool Fuse(ir::Graph& graph, ir::Node* pool) {
  // The MaxPool: 3x3, stride 2, leading pads 0/1, only Y used.
  if (pool->inputs.size() != 1 || !pool->has_input(0) || pool->outputs.empty() ||
      !pool->outputs[0])
    return false;
  for (size_t i = 1; i < pool->outputs.size(); ++i)
    if (pool->outputs[i] && (graph.IsGraphOutput(pool->outputs[i]) ||
                             !graph.Consumers(pool->outputs[i]).empty()))
      return false;
  ir::Value* pooled_in = pool->inputs[0];
  ir::Value* y = pool->outputs[0];
  const auto in_dims = KnownDims(pooled_in), y_dims = KnownDims(y);
  if (!in_dims || !y_dims || in_dims->size() != 4 || y_dims->size() != 4) return false;
  if (pooled_in->type.dtype != DType::kFloat16 || y->type.dtype != DType::kFloat16) return false;
  if (pool->attrs.GetInts("kernel_shape", {}) != std::vector<int64_t>{3, 3} ||
      pool->attrs.GetInt("storage_order", 0) != 0)
    return false;
  const auto pool_geometry =
      TryWindowGeometry(pool->attrs, {(*in_dims)[2], (*in_dims)[3]}, {3, 3},
                        pool->attrs.GetInt("ceil_mode", 0) != 0);
  if (!pool_geometry || pool_geometry->strides != std::vector<int64_t>{2, 2} ||
      pool_geometry->dilations != std::vector<int64_t>{1, 1} ||
      pool_geometry->output != std::vector<int64_t>{(*y_dims)[2], (*y_dims)[3]})
    return false;
  for (int64_t p : pool_geometry->pads_begin)
    if (p < 0 || p > 1) return false;

  // [Relu ->] the Conv.
  std::vector<ir::Node*> absorbed = {pool};
  bool relu = false;
  ir::Value* conv_out = pooled_in;
  if (ir::Node* r = conv_out->producer; Is(r, "Relu") && SoleConsumer(graph, conv_out) == pool &&
                                        r->has_input(0) && r->outputs.size() == 1) {
    relu = true;
    absorbed.push_back(r);
    conv_out = r->inputs[0];
  }
  ir::Node* conv = conv_out->producer;
  if (!Is(conv, "Conv") || conv->outputs.size() != 1 || conv_out->type.dtype != DType::kFloat16 ||
      SoleConsumer(graph, conv_out) != absorbed.back() || conv->inputs.size() < 2 ||
      !conv->has_input(0) || !conv->has_input(1) || KnownDims(conv_out) != in_dims)
    return false;
  ir::Value* x = conv->inputs[0];
  ir::Value* w = conv->inputs[1];
  ir::Value* b = conv->has_input(2) ? conv->inputs[2] : nullptr;
  const auto x_dims = KnownDims(x);
  if (!x_dims || x_dims->size() != 4 || x->type.dtype != DType::kFloat16) return false;
  if (!w->is_constant() || w->constant.rank() != 4 || (b && !b->is_constant())) return false;
  const Tensor& weights = w->constant;
  const int64_t K = weights.dim(0), C = weights.dim(1), kh = weights.dim(2), kw = weights.dim(3);
  if (conv->attrs.GetInt("group", 1) != 1 || C != (*x_dims)[1] || C < 1 ||
      C > ck::kMaxInputChannels || K % 16 != 0 || K > ck::kMaxOutputChannels || kh < 1 ||
      kh > ck::kMaxKernel || kw < 1 || kw > ck::kMaxKernel || K != (*in_dims)[1])
    return false;
  if (b && b->constant.numel() != K) return false;
  const auto conv_geometry =
      TryWindowGeometry(conv->attrs, {(*x_dims)[2], (*x_dims)[3]}, {kh, kw}, false);
  if (!conv_geometry || conv_geometry->strides != std::vector<int64_t>{2, 2} ||
      conv_geometry->dilations != std::vector<int64_t>{1, 1} ||
      conv_geometry->output != std::vector<int64_t>{(*in_dims)[2], (*in_dims)[3]})
    return false;
  for (int64_t p : conv_geometry->pads_begin)
    if (p < 0) return false;
  for (int64_t p : conv_geometry->pads_end)
    if (p < 0) return false;
  absorbed.push_back(conv);

  // The source: the float Cast's input, or the uint8 images a
  // KilnNormalizeImage read only for this stem (the kernel reads float32,
  // float16 or uint8).
  const StemSource stem = TraceStemSource(graph, x, conv, [](const ir::Value* v) {
    return v->type.dtype != DType::kBFloat16;
  });
  absorbed.insert(absorbed.end(), stem.absorbed.begin(), stem.absorbed.end());
  ir::Value* source = stem.value;
  const ir::Node* normalize = stem.normalize;

  const std::string name = pool->name.empty() ? conv->name : conv->name + "_" + pool->name;
  ir::Attributes attrs;
  attrs.set("kernel_shape", std::vector<int64_t>{kh, kw});
  const nn::WindowGeometry& cg = *conv_geometry;
  const nn::WindowGeometry& pg = *pool_geometry;
  attrs.set("pads", std::vector<int64_t>{cg.pads_begin[0], cg.pads_begin[1], cg.pads_end[0],
                                         cg.pads_end[1]});
  attrs.set("pool_pads", std::vector<int64_t>{pg.pads_begin[0], pg.pads_begin[1], pg.pads_end[0],
                                              pg.pads_end[1]});
  attrs.set("relu", int64_t{relu ? 1 : 0});
  if (normalize) {
    attrs.set("mean", normalize->attrs.GetFloats("mean"));
    attrs.set("std", normalize->attrs.GetFloats("std"));
  }
  ir::Value* packed = graph.AddConstant(graph.UniqueName(w->name + "_packed"),
                                        PackWeights(weights));
  ir::Value* bias = b ? graph.AddConstant(graph.UniqueName(b->name + "_f16"),
                                          b->constant.CastTo(DType::kFloat16))
                      : nullptr;
  for (ir::Node* n : absorbed) graph.RemoveNode(n);
  std::vector<ir::Value*> inputs = {source, packed};
  if (bias) inputs.push_back(bias);
  ir::Node* fused = graph.AddNode("KilnConvPool", name, inputs, {y});
  fused->attrs = std::move(attrs);
  return true;
}

}  // namespace

int FuseConvPool(ir::Graph& graph) {
  int fused = 0;
  for (ir::Node* n : passes::internal::NodeList(graph))
    if (Is(n, "MaxPool") && Fuse(graph, n)) ++fused;
  if (fused) {
    graph.SortTopologically();
    graph.RemoveUnusedValues();
  }
  return fused;
}

}  // namespace kiln::builder
