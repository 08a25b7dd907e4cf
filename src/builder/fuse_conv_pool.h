// FuseConvPool: a float16 stem, a stride-2 convolution on at most 4 input
// channels followed by [Relu and] a 3x3 stride-2 MaxPool (ResNet's conv1 ->
// relu -> maxpool), becomes one KilnConvPool node whose kernel computes the
// convolution tile a CTA's pooled pixels need, pools it in shared memory and
// writes the pooled result: the full-resolution convolution output (4x the
// pooled size) never goes to memory, and three launches (input
// rearrangement, convolution, pool) become one.
//
// The KilnConvPool node (GPU only; src/cuda/layers/conv_pool.cc)
//   inputs   0 X: the convolution's input before its float Cast (float32 or
//              float16 NCHW), or uint8 [N, H, W, C] images when the Cast read
//              a KilnNormalizeImage (BuildConfig::image_input) that the node
//              absorbs (its mean/std attributes are copied);
//            1 W packed float16 [out_c, PaddedK(kh, kw)]: K ordered (ky, kx,
//              c) with c padded to 4, zeros in the padding
//              (src/cuda/kernels/conv_pool.h);
//            2 B float16 [out_c] or omitted.
//   output   the MaxPool's output value (float16 [N, out_c, PH, PW]; NHWC
//            after AssignLayouts).
//   attrs    kernel_shape [kh, kw]; pads: the convolution's [top, left,
//            bottom, right]; pool_pads: the MaxPool's; relu: 0 or 1;
//            mean/std with image input.
//
// When it fuses: float16 convolution output; Conv with constant weights of
// <= 4 input channels and a multiple of 16 output channels up to 64, kernel
// at most 7x7, strides 2, dilations 1, group 1, constant or no bias; MaxPool
// 3x3, strides 2, dilations 1, leading pads 0 or 1, only its first output
// used; the Conv's (and Relu's) output read only by the next node. Run it
// before ConvSpaceToDepth (which would otherwise take the convolution).
#pragma once

#include "ir/graph.h"

namespace kiln::builder {

// Requires concrete shapes. Returns the number of KilnConvPool nodes made.
int FuseConvPool(ir::Graph& graph);

}  // namespace kiln::builder
