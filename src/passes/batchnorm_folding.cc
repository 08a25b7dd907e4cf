// FoldBatchNorm: merges inference-mode BatchNormalization into the Conv, Gemm
// or MatMul that feeds it. BN computes y = x * f + (beta - mean * f) with
// f = scale / sqrt(var + eps) per channel (dim 1), so scaling the producer's
// weights by f along its output channel and adjusting its bias is exact.
#include <cmath>
#include <optional>

#include "passes/pass_util.h"
#include "passes/passes.h"

namespace kiln::passes {
namespace {

// Per-channel affine form of a BatchNormalization: y = x * factor + shift.
struct ChannelAffine {
  std::vector<float> factor;
  std::vector<float> shift;
};

const Tensor* ConstantFloat32(const ir::Value* v) {
  if (!v || !v->is_constant() || v->constant.dtype() != DType::kFloat32) return nullptr;
  return &v->constant;
}

// The BN's affine form when it is foldable: inference mode, constant float32
// parameters of one shape [C], only the main output used.
std::optional<ChannelAffine> FoldableBatchNorm(const ir::Graph& graph, const ir::Node& bn) {
  if (bn.op_type != "BatchNormalization" || !(bn.domain.empty() || bn.domain == "ai.onnx"))
    return std::nullopt;
  if (bn.inputs.size() != 5 || !bn.has_input(0) || bn.outputs.empty() || !bn.outputs[0])
    return std::nullopt;
  if (bn.attrs.GetInt("training_mode", 0) != 0 || bn.attrs.GetInt("spatial", 1) != 1)
    return std::nullopt;
  for (size_t i = 1; i < bn.outputs.size(); ++i) {
    const ir::Value* extra = bn.outputs[i];
    if (extra && (graph.IsGraphOutput(extra) || !graph.Consumers(extra).empty()))
      return std::nullopt;
  }
  const Tensor* scale = ConstantFloat32(bn.inputs[1]);
  const Tensor* beta = ConstantFloat32(bn.inputs[2]);
  const Tensor* mean = ConstantFloat32(bn.inputs[3]);
  const Tensor* var = ConstantFloat32(bn.inputs[4]);
  if (!scale || !beta || !mean || !var || scale->rank() != 1) return std::nullopt;
  const int64_t channels = scale->numel();
  for (const Tensor* t : {beta, mean, var})
    if (t->rank() != 1 || t->numel() != channels) return std::nullopt;
  const float epsilon = bn.attrs.GetFloat("epsilon", 1e-5f);
  ChannelAffine affine;
  affine.factor.resize(static_cast<size_t>(channels));
  affine.shift.resize(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) {
    float f = scale->data<float>()[c] / std::sqrt(var->data<float>()[c] + epsilon);
    affine.factor[static_cast<size_t>(c)] = f;
    affine.shift[static_cast<size_t>(c)] = beta->data<float>()[c] - mean->data<float>()[c] * f;
  }
  return affine;
}

// new_bias[c] = old_bias[c] * factor[c] + shift[c]; `old_bias` may be null
// (zero), one element (broadcast) or one per channel.
Tensor FoldedBias(const Tensor* old_bias, const ChannelAffine& affine, float bias_scale = 1.f) {
  const int64_t channels = static_cast<int64_t>(affine.factor.size());
  Tensor bias(DType::kFloat32, {channels});
  for (int64_t c = 0; c < channels; ++c) {
    float b = 0.f;
    if (old_bias) b = bias_scale * old_bias->data<float>()[old_bias->numel() == 1 ? 0 : c];
    bias.data<float>()[c] =
        b * affine.factor[static_cast<size_t>(c)] + affine.shift[static_cast<size_t>(c)];
  }
  return bias;
}

// Scales a weight tensor along its output-channel axis: `outer` blocks of
// `channels` x `inner` elements, channel c scaled by factor[c].
Tensor ScaledWeight(const Tensor& weight, const std::vector<float>& factor, int64_t outer,
                    int64_t inner) {
  const int64_t channels = static_cast<int64_t>(factor.size());
  Tensor scaled(DType::kFloat32, weight.dims());
  const float* src = weight.data<float>();
  float* dst = scaled.data<float>();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < inner; ++i) {
        int64_t at = (o * channels + c) * inner + i;
        dst[at] = src[at] * factor[static_cast<size_t>(c)];
      }
  return scaled;
}

ir::Value* NewConstant(ir::Graph& graph, const std::string& base, Tensor tensor) {
  return graph.AddConstant(graph.UniqueName(base), std::move(tensor));
}

// Conv(X, W[M, C/g, k...], B[M]) -> BN over M channels.
bool FoldIntoConv(ir::Graph& graph, ir::Node& conv, const ChannelAffine& affine) {
  const Tensor* weight = conv.has_input(1) ? ConstantFloat32(conv.inputs[1]) : nullptr;
  if (!weight || weight->rank() < 3) return false;
  const int64_t channels = static_cast<int64_t>(affine.factor.size());
  if (weight->dim(0) != channels) return false;
  const Tensor* bias = nullptr;
  if (conv.has_input(2)) {
    bias = ConstantFloat32(conv.inputs[2]);
    if (!bias || bias->numel() != channels) return false;
  }
  Tensor new_weight = ScaledWeight(*weight, affine.factor, 1, weight->numel() / channels);
  Tensor new_bias = FoldedBias(bias, affine);
  const std::string& stem = conv.name.empty() ? conv.op_type : conv.name;
  conv.inputs.resize(std::max<size_t>(conv.inputs.size(), 3));
  conv.inputs[1] = NewConstant(graph, stem + "_bn_weight", std::move(new_weight));
  conv.inputs[2] = NewConstant(graph, stem + "_bn_bias", std::move(new_bias));
  return true;
}

// Gemm(A, B, C) with a constant B; the output's dim 1 is the channel. The
// folded C is a [M] vector and beta becomes 1.
bool FoldIntoGemm(ir::Graph& graph, ir::Node& gemm, const ChannelAffine& affine) {
  const Tensor* b = gemm.has_input(1) ? ConstantFloat32(gemm.inputs[1]) : nullptr;
  if (!b || b->rank() != 2) return false;
  const int64_t channels = static_cast<int64_t>(affine.factor.size());
  const bool trans_b = gemm.attrs.GetInt("transB", 0) != 0;
  if (b->dim(trans_b ? 0 : 1) != channels) return false;
  const Tensor* c = nullptr;
  if (gemm.has_input(2)) {
    c = ConstantFloat32(gemm.inputs[2]);
    // Only per-column (or scalar) biases keep the folded bias one vector.
    if (!c || !(c->numel() == 1 || (c->numel() == channels && c->dims().back() == channels)))
      return false;
  }
  Tensor new_b = trans_b ? ScaledWeight(*b, affine.factor, 1, b->dim(1))
                         : ScaledWeight(*b, affine.factor, b->dim(0), 1);
  Tensor new_c = FoldedBias(c, affine, gemm.attrs.GetFloat("beta", 1.f));
  const std::string& stem = gemm.name.empty() ? gemm.op_type : gemm.name;
  gemm.inputs.resize(3);
  gemm.inputs[1] = NewConstant(graph, stem + "_bn_weight", std::move(new_b));
  gemm.inputs[2] = NewConstant(graph, stem + "_bn_bias", std::move(new_c));
  gemm.attrs.set("beta", 1.f);
  return true;
}

// MatMul(A[N,K], W[K,M]) with a constant 2-D W becomes Gemm(A, W*f, c). Only
// for a 2-D A: BN's channel is dim 1, which is W's column only then.
ir::Node* FoldIntoMatMul(ir::Graph& graph, ir::Node& matmul, const ChannelAffine& affine) {
  const ir::Value* a = matmul.has_input(0) ? matmul.inputs[0] : nullptr;
  const Tensor* w = matmul.has_input(1) ? ConstantFloat32(matmul.inputs[1]) : nullptr;
  if (!a || !a->type.has_rank() || a->type.rank() != 2 || !w || w->rank() != 2) return nullptr;
  const int64_t channels = static_cast<int64_t>(affine.factor.size());
  if (w->dim(1) != channels) return nullptr;
  const std::string stem = matmul.name.empty() ? matmul.op_type : matmul.name;
  ir::Value* new_w =
      NewConstant(graph, stem + "_bn_weight", ScaledWeight(*w, affine.factor, w->dim(0), 1));
  ir::Value* new_c = NewConstant(graph, stem + "_bn_bias", FoldedBias(nullptr, affine));
  std::vector<ir::Value*> inputs = {matmul.inputs[0], new_w, new_c};
  std::vector<ir::Value*> outputs = matmul.outputs;
  std::string name = matmul.name;
  graph.RemoveNode(&matmul);
  ir::Node* gemm = graph.AddNode("Gemm", name, inputs, outputs);
  return gemm;
}

}  // namespace

int FoldBatchNorm(ir::Graph& graph) {
  int folded = 0;
  bool added_nodes = false;
  for (ir::Node* bn : internal::NodeList(graph)) {
    std::optional<ChannelAffine> affine = FoldableBatchNorm(graph, *bn);
    if (!affine) continue;
    ir::Value* x = bn->inputs[0];
    ir::Node* producer = x->producer;
    if (!producer || graph.IsGraphOutput(x) || graph.Consumers(x).size() != 1) continue;
    if (!(producer->domain.empty() || producer->domain == "ai.onnx")) continue;
    if (producer->outputs.empty() || producer->outputs[0] != x) continue;
    if (producer->op_type == "Conv") {
      if (!FoldIntoConv(graph, *producer, *affine)) continue;
    } else if (producer->op_type == "Gemm") {
      if (!FoldIntoGemm(graph, *producer, *affine)) continue;
    } else if (producer->op_type == "MatMul") {
      int opset = producer->opset;
      producer = FoldIntoMatMul(graph, *producer, *affine);
      if (!producer) continue;
      producer->opset = opset;
      added_nodes = true;
    } else {
      continue;
    }
    // The producer now computes the BN's output: it takes over that value
    // (and its name); the intermediate value disappears.
    ir::Value* y = bn->outputs[0];
    graph.RemoveNode(bn);
    producer->outputs[0] = y;
    y->producer = producer;
    x->producer = nullptr;
    ++folded;
  }
  if (added_nodes) graph.SortTopologically();
  if (folded) graph.RemoveUnusedValues();
  return folded;
}

}  // namespace kiln::passes
