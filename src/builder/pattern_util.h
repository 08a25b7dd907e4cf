// Small graph-matching helpers shared by the builder's fusion and rewrite
// passes (fuse_conv_gemm, fuse_attention, conv_space_to_depth, fuse_conv_pool).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "ir/graph.h"
#include "ops/nn.h"

namespace kiln::builder {

// A node of the default ONNX domain.
inline bool IsOnnx(const ir::Node& n) { return n.domain.empty() || n.domain == "ai.onnx"; }

// `n` is an ONNX node of type `op` (false for null).
inline bool Is(const ir::Node* n, const char* op) { return n && n->op_type == op && IsOnnx(*n); }

// v's dims when its shape is fully known.
inline std::optional<std::vector<int64_t>> KnownDims(const ir::Value* v) {
  if (!v || !v->type.has_rank() || !ir::IsFullyKnown(*v->type.shape)) return std::nullopt;
  return ir::KnownDims(*v->type.shape);
}

// The only node reading v, when v is not a graph output; else nullptr.
inline ir::Node* SoleConsumer(const ir::Graph& graph, const ir::Value* v) {
  if (!v || graph.IsGraphOutput(v)) return nullptr;
  std::vector<ir::Node*> consumers = graph.Consumers(v);
  return consumers.size() == 1 ? consumers[0] : nullptr;
}

// nn::ComputeWindowGeometry, or nullopt where the attributes are
// inconsistent (the node is left for the normal error path to report).
inline std::optional<nn::WindowGeometry> TryWindowGeometry(const ir::Attributes& attrs,
                                                           const std::vector<int64_t>& input,
                                                           const std::vector<int64_t>& kernel,
                                                           bool ceil_mode) {
  try {
    return nn::ComputeWindowGeometry(attrs, input, kernel, ceil_mode);
  } catch (const Error&) {
    return std::nullopt;
  }
}

// What a fused stem kernel (KilnPadSpaceToDepth, KilnConvPool) reads
// instead of x, the input of its first node `reader`: the input of a float
// Cast that only `reader` consumes, then the uint8 [N, H, W, C] images of a
// KilnNormalizeImage that only the chain consumes (BuildConfig::image_input;
// the kernel normalizes each value it reads, with the node's mean/std).
// `readable` filters the values the kernel may read (dtype, layout).
struct StemSource {
  ir::Value* value = nullptr;
  std::vector<ir::Node*> absorbed;     // The Cast and KilnNormalizeImage skipped.
  const ir::Node* normalize = nullptr;  // The KilnNormalizeImage, if absorbed.
};

inline StemSource TraceStemSource(const ir::Graph& graph, ir::Value* x, ir::Node* reader,
                                  const std::function<bool(const ir::Value*)>& readable) {
  StemSource s;
  s.value = x;
  const std::optional<std::vector<int64_t>> dims = KnownDims(x);
  if (!dims || dims->size() != 4) return s;
  auto is_float = [](DType d) {
    return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
  };
  if (ir::Node* cast = x->producer;
      Is(cast, "Cast") && cast->has_input(0) && SoleConsumer(graph, x) == reader) {
    ir::Value* before = cast->inputs[0];
    if (is_float(before->type.dtype) && readable(before) && KnownDims(before) == dims) {
      s.absorbed.push_back(cast);
      s.value = before;
      reader = cast;
    }
  }
  ir::Node* producer = s.value->producer;
  if (producer && producer->op_type == "KilnNormalizeImage" && producer->has_input(0) &&
      s.value->type.dtype == DType::kFloat32 && SoleConsumer(graph, s.value) == reader &&
      producer->attrs.has("mean") && producer->attrs.has("std")) {
    ir::Value* images = producer->inputs[0];
    const std::vector<int64_t>& d = *dims;  // [N, C, H, W]
    if (images->type.dtype == DType::kUInt8 && readable(images) &&
        KnownDims(images) == std::vector<int64_t>{d[0], d[2], d[3], d[1]}) {
      s.absorbed.push_back(producer);
      s.normalize = producer;
      s.value = images;
    }
  }
  return s;
}

}  // namespace kiln::builder
