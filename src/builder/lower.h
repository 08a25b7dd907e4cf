// Target passes that turn an optimized ONNX graph into one the GPU engine
// runs: concrete shapes, storage precision, memory layout. LowerGraph
// (builder.cc) runs them, for Engine::Build and for every shape-specialized
// plan, in this order:
//
//   FreezeInputs → ApplyImageInput (image_input.h) → SpecializeShapes →
//   passes::Optimize → AssignPrecision → FuseConvPool (fuse_conv_pool.h; FP16
//   NHWC) → ConvSpaceToDepth → fusions
//   (fuse_conv_gemm.h, fuse_attention.h incl. PackAttentionQkv,
//   fuse_layernorm.h, fuse_elementwise.h) → FuseOutputCasts → AssignLayouts →
//   MergeCastsIntoLayoutChanges → FusePadSpaceToDepth
#pragma once

#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda/layer.h"
#include "ir/graph.h"

namespace kiln::runtime {
struct LoweringOptions;
}

namespace kiln::builder {

// The whole lowering sequence above on an imported graph; `layouts` receives
// the non-row-major values. Returns the summary line for the build log.
std::string LowerGraph(ir::Graph& graph, std::unordered_map<const ir::Value*, gpu::Layout>& layouts,
                       const runtime::LoweringOptions& options,
                       const std::map<std::string, std::vector<int64_t>>& shapes,
                       const std::function<void(const std::string&)>& log);

// Gives every dynamic input dim a concrete size: from `shapes` (input name →
// dims; must match the declared rank and known dims), else 1 (logged). Throws
// naming the input for a shape that contradicts the model or an unknown name.
void SpecializeShapes(ir::Graph& graph, const std::map<std::string, std::vector<int64_t>>& shapes,
                      const std::function<void(const std::string&)>& log);

// Replaces each named graph input by a constant holding the given value.
// Throws for an unknown name or a value that contradicts the declared type.
void FreezeInputs(ir::Graph& graph, const std::map<std::string, Tensor>& values);

// Throws naming the first value whose shape is still not concrete (a shape
// that depends on run-time data).
void CheckShapesConcrete(const ir::Graph& graph);

// Stores float32 activations and weights as `low` (float16 or bfloat16):
// every node that computes in floating point runs on low-precision inputs
// (its kernels accumulate in float32); Cast nodes are inserted where a value
// crosses between precisions. Graph inputs and outputs keep their dtypes and
// names. A no-op when low is float32.
void AssignPrecision(ir::Graph& graph, DType low);

// Chooses each value's layout: rank-4 convolutions (Conv, KilnConv) run
// channels-last when `nhwc_convolutions`, and layers that accept NHWC keep
// it; conversion nodes (KilnToNHWC / KilnToRowMajor) are inserted where
// producer and consumer disagree. Convolution weights are permuted to
// K,R,S,C. Graph outputs are row-major. Returns the non-row-major layouts.
std::unordered_map<const ir::Value*, gpu::Layout> AssignLayouts(ir::Graph& graph,
                                                                bool nhwc_convolutions);

// Folds a Cast that only feeds a layout conversion (and a Cast that only
// follows one) into the conversion, which can change dtype on the way.
// Keeps `layouts` consistent: entries of removed values are dropped.
int MergeCastsIntoLayoutChanges(ir::Graph& graph,
                                std::unordered_map<const ir::Value*, gpu::Layout>& layouts);

// A float16/bfloat16 LayerNormalization read by a Cast to float32 (typically
// a graph output, which keeps its float32 dtype) writes float32 itself: one
// pass over the tensor fewer. Its other readers may only be Gathers (BERT's
// pooler picking token 0), which then read the float32 value and are
// followed by a Cast of their small result. Also folds Cast(to float16 /
// bfloat16) of Cast(to float32) into one Cast (bit-identical on the GPU),
// and a float Cast of a unary float op (Tanh, Relu, ...) into the op, which
// then writes the Cast's dtype. Returns the number of casts removed.
int FuseOutputCasts(ir::Graph& graph);

// Drops entries for values no longer in the graph (their memory may be
// reused by new values).
void PruneLayouts(const ir::Graph& graph,
                  std::unordered_map<const ir::Value*, gpu::Layout>& layouts);

// Makes `v` (a node's output) be produced by a new node: the old producer now
// writes a fresh value, which every other consumer reads, and which is
// returned. The caller adds the node that turns the fresh value into `v`.
// Graph outputs keep their names this way.
ir::Value* DetachProducer(ir::Graph& graph, ir::Value* v);

}  // namespace kiln::builder
