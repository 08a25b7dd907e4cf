// The fused zero-pad + space-to-depth (+ float cast, + NHWC) kernel behind
// the KilnPadSpaceToDepth layer (src/cuda/layers/space_to_depth.cc): one pass
// that reads a row-major NCHW image and writes what a stride-1 convolution
// on 2x2 pixel blocks reads (see src/builder/conv_space_to_depth.h).
//
// Output element (n, co, oy, ox), co = (i*block + j)*padded_c + cp, is
//   in[n, cp - pad_c, oy*block + i - pad_h, ox*block + j - pad_w]
// when that index lies inside the input, else 0 (ONNX Pad, constant 0,
// then SpaceToDepth). With a uint8 input (an engine's image input,
// include/kiln/image.h) the input is images [N, H, W, C] and each value read
// is normalized first, (x / 255 - mean[c]) / std[c] exactly as the normalize
// kernel computes it (normalize_image.cuh); padding stays 0, as when the
// normalized image is padded. C++17-clean: included from space_to_depth.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/normalize_image.h"
#include "kiln/tensor.h"

namespace kiln::gpu::space_to_depth_kernels {

struct PadSpaceToDepthParams {
  int64_t n = 0, c = 0, h = 0, w = 0;       // Input dims (row-major NCHW, or NHWC uint8 images).
  int64_t pad_c = 0, pad_h = 0, pad_w = 0;  // Leading pads of channels, rows, columns.
  int64_t padded_c = 0;                     // Channels after padding (c + both channel pads).
  int64_t block = 1;                        // SpaceToDepth block size.
  int64_t out_c = 0, out_h = 0, out_w = 0;  // Output logical dims: padded_c*block^2, ...
  bool out_nhwc = false;                    // Output stored channels-last.
  NormalizeImageParams normalize;           // uint8 image input only (normalize.channels == c).
};

// float32, float16 and bfloat16, in any combination; uint8 images to any of
// the three.
bool PadSpaceToDepthSupported(DType in_dtype, DType out_dtype);

// Returns at once for an empty output; checks the launch.
void LaunchPadSpaceToDepth(const void* in, DType in_dtype, void* out, DType out_dtype,
                           const PadSpaceToDepthParams& p, cudaStream_t stream);

}  // namespace kiln::gpu::space_to_depth_kernels
