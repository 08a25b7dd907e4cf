// Space-to-depth for convolutions on few input channels with stride 2 (the
// RGB stem of ResNet-like networks: 7x7, stride 2, C=3). cuDNN runs such a
// convolution far below tensor-core speed because C is tiny; rearranged into
// 2x2 pixel blocks it becomes a stride-1 convolution on 4x the channels and
// a ceil(k/2) x ceil(k/2) kernel, which tensor cores handle well:
//
//   Conv(X, W, B?; stride 2, pads p, k_h x k_w)
//     == Conv(SpaceToDepth(Pad(X, p + extra), blocksize 2), W', B?; stride 1, no pads)
//
// where W'[k, (i*2 + j)*C' + c, a, b] = W[k, c, 2a + i, 2b + j] (zero outside
// W and for the zero channels c >= C), C' is C rounded up so that 4*C' is a
// multiple of 8 (tensor cores want 8-aligned channels; the extra channels are
// zero in both X and W'), and `extra` pads the bottom/right so the padded
// size is exactly what the stride-1 convolution reads. The result equals the
// original up to float rounding order.
//
// ConvSpaceToDepth produces ordinary ONNX ops (Pad, SpaceToDepth, Conv), so
// the CPU backend runs and checks the rewritten graph. For the GPU,
// FusePadSpaceToDepth (run after layout assignment) folds the data movement
// into one node:
//
//   KilnPadSpaceToDepth(X) -> Y   [Cast ->] Pad(constant 0) -> SpaceToDepth [-> KilnToNHWC]
//       pads       8 ints, ONNX Pad order (n, c, h, w begins, then ends);
//                  batch pads 0, all >= 0
//       blocksize  the SpaceToDepth block size
//     X row-major [N, C, H, W]; Y [N, C'*b*b, (H+ph)/b, (W+pw)/b] with
//     C' = C + pc, row-major or NHWC, float32/float16/bfloat16 (may differ
//     from X's dtype: a float cast is folded in).
//
//   KilnPadSpaceToDepth(I) -> Y   KilnNormalizeImage(I) -> [Cast ->] Pad -> ...
//       mean, std  the normalization (image_input.h), one value per channel
//     I uint8 images [N, H, W, C] (an engine's image input); each value read
//     is normalized exactly as KilnNormalizeImage computes it, the padding is
//     0 (padding after normalization).
//
// Both passes need fully known shapes and return the number of rewrites.
#pragma once

#include <unordered_map>

#include "cuda/layer.h"
#include "ir/graph.h"

namespace kiln::builder {

// Convolutions with at most this many input channels are rewritten.
constexpr int64_t kSpaceToDepthMaxInputChannels = 4;

// Rewrites every ONNX Conv with group 1, dilations 1, strides (2, 2), a 2-D
// kernel of at least 2x2, at most kSpaceToDepthMaxInputChannels input
// channels, constant weights and known shapes into Pad + SpaceToDepth + a
// stride-1 Conv (which keeps the node's name, bias and output value). Convs
// whose padding leaves trailing input rows/columns unread with an even kernel
// (the rewrite would need a crop) are left alone.
int ConvSpaceToDepth(ir::Graph& graph);

// Replaces each [KilnNormalizeImage ->] [Cast ->] Pad -> SpaceToDepth
// [-> KilnToNHWC] chain (zero constant padding, intermediate values with a
// single consumer and not graph outputs, float dtypes, row-major input) by one
// KilnPadSpaceToDepth node.
// Run after AssignLayouts / MergeCastsIntoLayoutChanges; keeps `layouts`
// consistent (the fused node's output is NHWC when it absorbed a KilnToNHWC).
int FusePadSpaceToDepth(ir::Graph& graph,
                        std::unordered_map<const ir::Value*, gpu::Layout>& layouts);

}  // namespace kiln::builder
