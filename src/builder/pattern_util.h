// Small graph-matching helpers shared by the builder's fusion and rewrite
// passes (fuse_conv_gemm, fuse_attention, conv_space_to_depth).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "ir/graph.h"

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

}  // namespace kiln::builder
