// The fused stem kernel behind KilnConvPool (src/builder/fuse_conv_pool.h):
// a stride-2 convolution on few input channels (ResNet's 7x7 RGB stem),
// bias, optional ReLU and a 3x3 stride-2 max pool in one pass. The
// convolution's output, 4x the size of the pooled result, never goes to
// memory: each CTA computes the convolution rows and columns its tile of
// pooled pixels reads (mma.sync on float16, float32 accumulation; the halo
// rows are computed twice, by both neighbouring CTAs), pools them from
// shared memory and writes float16 NHWC.
//
// The convolution is an implicit GEMM: M = convolution positions of the
// tile, N = output channels, K = (ky, kx, c) with c padded to 4, so every
// pair of K values is one 32-bit shared load from the CTA's input patch
// (stored [row][col][4 channels] in float16). The weights come packed
// [out_c][k_padded] in that K order (fuse_conv_pool.cc packs them).
// C++17-clean: included by nvcc and by host C++20 code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels/normalize_image.h"
#include "kiln/tensor.h"

namespace kiln::gpu::conv_pool_kernels {

constexpr int kMaxKernel = 7;        // Convolution kernel height and width.
constexpr int kMaxInputChannels = 4;
constexpr int kMaxOutputChannels = 64;

// K padded to whole mma steps: kh * kw taps of 4 channels, rounded up to 16.
inline int PaddedK(int kh, int kw) { return (kh * kw * 4 + 15) / 16 * 16; }

struct ConvPoolParams {
  int n = 0, c = 0, h = 0, w = 0;       // Input: row-major NCHW, or NHWC uint8 images.
  int out_c = 0;                        // Output channels: a multiple of 8, <= 64.
  int kh = 0, kw = 0;                   // Convolution kernel (stride 2, dilation 1).
  int pad_top = 0, pad_left = 0;        // The convolution's leading pads.
  int conv_h = 0, conv_w = 0;           // The convolution's output size.
  int pool_pad_top = 0, pool_pad_left = 0;  // The max pool's leading pads (0 or 1).
  int pool_h = 0, pool_w = 0;           // Output size (3x3 windows, stride 2).
  bool relu = false;
  NormalizeImageParams normalize;       // uint8 image input only.
  int k_padded = 0;                     // Set by LaunchConvPool: PaddedK(kh, kw).
};

// Tiles of pooled pixels per CTA, one tactic each.
enum class ConvPoolTile { k4x8 = 0, k8x8 = 1 };
constexpr int kConvPoolTiles = 2;
const char* ConvPoolTileName(ConvPoolTile tile);

// x: float32 / float16 NCHW, or uint8 NHWC images (normalized on the fly,
// exactly as the normalize kernel does); weights: float16 [out_c][PaddedK];
// bias: float16 [out_c] or null; y: float16 NHWC [n, pool_h, pool_w, out_c].
// Checks the sizes and the launch.
void LaunchConvPool(const void* x, DType x_dtype, const void* weights, const void* bias, void* y,
                    const ConvPoolParams& p, ConvPoolTile tile, cudaStream_t stream);

}  // namespace kiln::gpu::conv_pool_kernels
