// KilnConvPool's kernel (conv_pool.h): stride-2 convolution on <= 4 input
// channels + bias + ReLU? + 3x3 stride-2 max pool, one CTA per tile of
// pooled pixels. Phases, separated by __syncthreads():
//   1. stage the packed weights (cp.async), the K-pair offset table and the
//      CTA's input patch (all loads issued, then converted to float16, 4
//      channel slots per pixel, zeros outside the image) in shared memory;
//   2. implicit GEMM with mma.sync m16n8k16: each warp owns two m16 tiles of
//      convolution positions and all output channels; A fragments are 32-bit
//      loads from the patch at (position offset + K-pair offset), B fragments
//      ldmatrix loads of the weights;
//   3. bias (+ ReLU) and float16 rounding into a shared convolution tile
//      that reuses the same shared memory;
//   4. max over each 3x3 window of positions inside the convolution's output
//      (-inf padding, as ONNX MaxPool), 16-byte NHWC stores.
#include "cuda/kernels/conv_pool.h"

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/kernel_util.cuh"
#include "cuda/kernels/mma.cuh"
#include "cuda/kernels/normalize_image.cuh"

namespace kiln::gpu::conv_pool_kernels {
namespace {

using kernels::CommitAsync;
using kernels::CopyAsync16;
using kernels::LdMatrixX4;
using kernels::Mma;
using kernels::SharedAddress;
using kernels::WaitAsync;

constexpr int kMaxPaddedK = (kMaxKernel * kMaxKernel * 4 + 15) / 16 * 16;  // 208
// Shared row lengths in halves, padded by 16 bytes: the 8 rows an ldmatrix
// (weights) or a fragment store (convolution tile) touches fall on distinct
// banks.
constexpr int kWeightLd = kMaxPaddedK + 8;
constexpr int kConvLd = kMaxOutputChannels + 8;

template <int kTileY, int kTileX>
struct Plan {
  static constexpr int kConvRows = 2 * kTileY + 1;  // Convolution rows one tile's windows read.
  static constexpr int kConvCols = 2 * kTileX + 1;
  static constexpr int kM = kConvRows * kConvCols;
  static constexpr int kMTiles = (kM + 15) / 16;
  static constexpr int kWarps = (kMTiles + 1) / 2;  // Two m16 tiles per warp.
  static constexpr int kThreads = kWarps * 32;
  // CTAs per SM the register allocation must allow (<= 96 registers for 160
  // threads): more CTAs overlap one's loads with another's products.
  static constexpr int kMinBlocks = 4 * 5 / kWarps > 0 ? 4 * 5 / kWarps : 1;
  static constexpr int kPatchRows = 2 * (kConvRows - 1) + kMaxKernel;
  static constexpr int kPatchCols = 2 * (kConvCols - 1) + kMaxKernel;
  static constexpr int kPatchPixelsPerThread = (kPatchRows * kPatchCols + kThreads - 1) / kThreads;
  // Phases 1-2 hold weights, patch and offsets; phase 3-4 the convolution
  // tile in the same bytes.
  static constexpr size_t kWeightBytes = size_t{kMaxOutputChannels} * kWeightLd * 2;
  static constexpr size_t kPatchBytes = size_t{kPatchRows} * kPatchCols * 4 * 2;
  static constexpr size_t kOffsetBytes = kMaxPaddedK / 2 * sizeof(int);
  static constexpr size_t kProductBytes = kWeightBytes + kPatchBytes + kOffsetBytes;
  static constexpr size_t kConvBytes = size_t{kM} * kConvLd * 2;
  static constexpr size_t kBytes = kProductBytes > kConvBytes ? kProductBytes : kConvBytes;
  static_assert(kBytes <= 48 * 1024, "static shared memory limit");
};

// The channels of input pixel (iy, ix) of image n as floats (0 past p.c):
// NCHW float32/float16 (`plane` = H * W elements between channels), or a
// uint8 NHWC image pixel normalized exactly as the normalize kernel does.
template <typename TIn>
__device__ __forceinline__ void LoadPixel(const TIn* __restrict__ x, const ConvPoolParams& p,
                                          int n, int iy, int ix, int64_t plane, float (&v)[4]) {
  if constexpr (std::is_same_v<TIn, uint8_t>) {
    const uint8_t* px = x + ((static_cast<int64_t>(n) * p.h + iy) * p.w + ix) * p.c;
#pragma unroll
    for (int c = 0; c < 4; ++c)
      v[c] = c < p.c ? NormalizeImageValue(px[c], p.normalize.mean[c], p.normalize.std[c]) : 0.f;
  } else {
    const TIn* px = x + static_cast<int64_t>(n) * p.c * plane + static_cast<int64_t>(iy) * p.w + ix;
#pragma unroll
    for (int c = 0; c < 4; ++c) v[c] = c < p.c ? ToFloat(px[c * plane]) : 0.f;
  }
}

__device__ __forceinline__ uint32_t LoadPair(const __half* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

template <typename TIn, int kTileY, int kTileX, int kNTiles>
__global__ void __launch_bounds__(Plan<kTileY, kTileX>::kThreads, Plan<kTileY, kTileX>::kMinBlocks)
    ConvPoolKernel(const TIn* __restrict__ x, const __half* __restrict__ weights,
                   const __half* __restrict__ bias, __half* __restrict__ y,
                   const ConvPoolParams p) {
  using P = Plan<kTileY, kTileX>;
  __shared__ __align__(16) unsigned char smem[P::kBytes];
  __half* w_s = reinterpret_cast<__half*>(smem);
  __half* patch_s = reinterpret_cast<__half*>(smem + P::kWeightBytes);
  int* offset_s = reinterpret_cast<int*>(smem + P::kWeightBytes + P::kPatchBytes);
  __half* conv_s = reinterpret_cast<__half*>(smem);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int n = blockIdx.z;
  const int py0 = blockIdx.y * kTileY, px0 = blockIdx.x * kTileX;
  // Top-left convolution position of the tile, and its first input pixel.
  const int cy0 = 2 * py0 - p.pool_pad_top, cx0 = 2 * px0 - p.pool_pad_left;
  const int iy0 = 2 * cy0 - p.pad_top, ix0 = 2 * cx0 - p.pad_left;
  constexpr int n_tiles = kNTiles;  // Output channels / 8.

  // 1. Weights (asynchronous copies, in flight while the patch loads),
  // K-pair offsets, input patch. Every load of the patch is issued before
  // any is converted: the CTA waits for one memory latency, not one per
  // pixel.
  const int row_chunks = p.k_padded / 8;
  for (int i = tid; i < p.out_c * row_chunks; i += P::kThreads) {
    const int r = i / row_chunks, chunk = i - r * row_chunks;
    CopyAsync16(SharedAddress(w_s + r * kWeightLd + chunk * 8),
                weights + r * p.k_padded + chunk * 8, true);
  }
  CommitAsync();
  for (int q = tid; q < p.k_padded / 2; q += P::kThreads) {
    const int k = 2 * q, tap = k >> 2;
    offset_s[q] = tap < p.kh * p.kw
                      ? ((tap / p.kw) * P::kPatchCols + tap % p.kw) * 4 + (k & 3)
                      : -1;  // Padded K: A is 0 there (the weights are too).
  }
  // The patch for the largest kernel (a smaller one reads a part of it):
  // compile-time sizes, so the index arithmetic is multiplications.
  constexpr int kPatchPixels = P::kPatchRows * P::kPatchCols;
  const int64_t plane = static_cast<int64_t>(p.h) * p.w;
  float v[P::kPatchPixelsPerThread][4];
#pragma unroll
  for (int u = 0; u < P::kPatchPixelsPerThread; ++u) {
    const int i = tid + u * P::kThreads;
    const int r = i / P::kPatchCols, col = i - r * P::kPatchCols;
    const int iy = iy0 + r, ix = ix0 + col;
    if (i < kPatchPixels && iy >= 0 && iy < p.h && ix >= 0 && ix < p.w) {
      LoadPixel(x, p, n, iy, ix, plane, v[u]);
    } else {
      v[u][0] = v[u][1] = v[u][2] = v[u][3] = 0.f;
    }
  }
#pragma unroll
  for (int u = 0; u < P::kPatchPixelsPerThread; ++u) {
    const int i = tid + u * P::kThreads;
    if (i >= kPatchPixels) break;
    const __half2 lo = __floats2half2_rn(v[u][0], v[u][1]);
    const __half2 hi = __floats2half2_rn(v[u][2], v[u][3]);
    uint2 packed;
    packed.x = *reinterpret_cast<const uint32_t*>(&lo);
    packed.y = *reinterpret_cast<const uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(patch_s + i * 4) = packed;  // Row-major [kPatchRows][kPatchCols].
  }
  WaitAsync<0>();
  __syncthreads();

  // 2. Products. Rows past the tile's positions repeat its last one and are
  // dropped in phase 3.
  const bool second = warp * 2 + 1 < P::kMTiles;
  int a_off[2][2];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = min((warp * 2 + mi) * 16 + g + 8 * h, P::kM - 1);
      const int i = m / P::kConvCols, j = m - i * P::kConvCols;
      a_off[mi][h] = (2 * i * P::kPatchCols + 2 * j) * 4;
    }
  // ldmatrix.x4 row address of this lane: matrices (n 0-7, k 0-7), (n 0-7,
  // k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) of an n16 pair of tiles.
  const int mat = lane >> 3;
  const uint32_t w_lane =
      SharedAddress(w_s + ((mat >> 1) * 8 + (lane & 7)) * kWeightLd + (mat & 1) * 8);
  float acc[2][8][4] = {};
  for (int ks = 0; ks < p.k_padded / 16; ++ks) {
    const int off0 = offset_s[ks * 8 + t], off1 = offset_s[ks * 8 + 4 + t];
    uint32_t b[8][2];
#pragma unroll
    for (int pair = 0; pair < 4; ++pair) {
      if (pair * 2 >= n_tiles) continue;
      uint32_t r[4];
      LdMatrixX4(r, w_lane + (pair * 16 * kWeightLd + ks * 16) * 2);
      b[2 * pair][0] = r[0];
      b[2 * pair][1] = r[1];
      b[2 * pair + 1][0] = r[2];
      b[2 * pair + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
      if (mi == 1 && !second) continue;
      uint32_t a[4];
      a[0] = off0 >= 0 ? LoadPair(patch_s + a_off[mi][0] + off0) : 0u;
      a[1] = off0 >= 0 ? LoadPair(patch_s + a_off[mi][1] + off0) : 0u;
      a[2] = off1 >= 0 ? LoadPair(patch_s + a_off[mi][0] + off1) : 0u;
      a[3] = off1 >= 0 ? LoadPair(patch_s + a_off[mi][1] + off1) : 0u;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
        if (nt < n_tiles) Mma<__half>(acc[mi][nt], a, b[nt][0], b[nt][1]);
    }
  }
  __syncthreads();  // Everyone is done with weights and patch.

  // 3. Bias, ReLU, float16 into the convolution tile.
  float bias_r[8][2];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
    const bool has = bias != nullptr && nt < n_tiles;
    bias_r[nt][0] = has ? __half2float(bias[nt * 8 + 2 * t]) : 0.f;
    bias_r[nt][1] = has ? __half2float(bias[nt * 8 + 2 * t + 1]) : 0.f;
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi) {
    if (mi == 1 && !second) continue;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = (warp * 2 + mi) * 16 + g + 8 * h;
      if (m >= P::kM) continue;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        if (nt >= n_tiles) continue;
        float v0 = acc[mi][nt][2 * h] + bias_r[nt][0];
        float v1 = acc[mi][nt][2 * h + 1] + bias_r[nt][1];
        if (p.relu) {
          v0 = fmaxf(v0, 0.f);
          v1 = fmaxf(v1, 0.f);
        }
        *reinterpret_cast<__half2*>(conv_s + m * kConvLd + nt * 8 + 2 * t) =
            __floats2half2_rn(v0, v1);
      }
    }
  }
  __syncthreads();

  // 4. 3x3 stride-2 max over positions inside the convolution's output.
  const int vecs = p.out_c / 8;  // 8 channels (16 bytes) per work item.
  const __half2 lowest = __half2half2(__ushort_as_half(0xFC00));  // -inf
  for (int i = tid; i < kTileY * kTileX * vecs; i += P::kThreads) {
    const int v = i % vecs, pixel = i / vecs;
    const int ly = pixel / kTileX, lx = pixel - ly * kTileX;
    const int py = py0 + ly, px = px0 + lx;
    if (py >= p.pool_h || px >= p.pool_w) continue;
    __half2 best[4] = {lowest, lowest, lowest, lowest};
#pragma unroll
    for (int dy = 0; dy < 3; ++dy) {
      const int cy = cy0 + 2 * ly + dy;
      if (cy < 0 || cy >= p.conv_h) continue;
#pragma unroll
      for (int dx = 0; dx < 3; ++dx) {
        const int cx = cx0 + 2 * lx + dx;
        if (cx < 0 || cx >= p.conv_w) continue;
        const uint4 q = *reinterpret_cast<const uint4*>(
            conv_s + ((2 * ly + dy) * P::kConvCols + 2 * lx + dx) * kConvLd + v * 8);
        const __half2* h2 = reinterpret_cast<const __half2*>(&q);
#pragma unroll
        for (int j = 0; j < 4; ++j) best[j] = __hmax2(best[j], h2[j]);
      }
    }
    *reinterpret_cast<uint4*>(y + ((static_cast<int64_t>(n) * p.pool_h + py) * p.pool_w + px) *
                                      p.out_c + v * 8) = *reinterpret_cast<const uint4*>(best);
  }
}

template <typename TIn, int kTileY, int kTileX>
void Launch(const void* x, const void* weights, const void* bias, void* y,
            const ConvPoolParams& p, cudaStream_t stream) {
  using P = Plan<kTileY, kTileX>;
  const dim3 grid((p.pool_w + kTileX - 1) / kTileX, (p.pool_h + kTileY - 1) / kTileY, p.n);
  auto launch = [&](auto n_tiles) {
    ConvPoolKernel<TIn, kTileY, kTileX, decltype(n_tiles)::value><<<grid, P::kThreads, 0, stream>>>(
        static_cast<const TIn*>(x), static_cast<const __half*>(weights),
        static_cast<const __half*>(bias), static_cast<__half*>(y), p);
  };
  switch (p.out_c / 8) {  // Multiples of 16 channels (LaunchConvPool checks).
    case 2: launch(std::integral_constant<int, 2>()); break;
    case 4: launch(std::integral_constant<int, 4>()); break;
    case 6: launch(std::integral_constant<int, 6>()); break;
    default: launch(std::integral_constant<int, 8>()); break;
  }
}

template <typename TIn>
void LaunchTile(const void* x, const void* weights, const void* bias, void* y,
                const ConvPoolParams& p, ConvPoolTile tile, cudaStream_t stream) {
  switch (tile) {
    case ConvPoolTile::k4x8: Launch<TIn, 4, 8>(x, weights, bias, y, p, stream); break;
    case ConvPoolTile::k8x8: Launch<TIn, 8, 8>(x, weights, bias, y, p, stream); break;
  }
}

}  // namespace

const char* ConvPoolTileName(ConvPoolTile tile) {
  return tile == ConvPoolTile::k4x8 ? "mma_tile4x8" : "mma_tile8x8";
}

void LaunchConvPool(const void* x, DType x_dtype, const void* weights, const void* bias, void* y,
                    const ConvPoolParams& params, ConvPoolTile tile, cudaStream_t stream) {
  ConvPoolParams p = params;
  KILN_CHECK(p.c >= 1 && p.c <= kMaxInputChannels, "conv-pool kernel: ", p.c,
             " input channels (1 to ", kMaxInputChannels, ")");
  KILN_CHECK(p.out_c >= 16 && p.out_c <= kMaxOutputChannels && p.out_c % 16 == 0,
             "conv-pool kernel: ", p.out_c, " output channels (a multiple of 16 up to ",
             kMaxOutputChannels, ")");
  KILN_CHECK(p.kh >= 1 && p.kh <= kMaxKernel && p.kw >= 1 && p.kw <= kMaxKernel,
             "conv-pool kernel: kernel ", p.kh, "x", p.kw, " (at most ", kMaxKernel, "x",
             kMaxKernel, ")");
  KILN_CHECK(p.pool_pad_top >= 0 && p.pool_pad_top <= 1 && p.pool_pad_left >= 0 &&
                 p.pool_pad_left <= 1,
             "conv-pool kernel: pool pads must be 0 or 1");
  KILN_CHECK(p.n <= 65535, "conv-pool kernel: batch ", p.n, " exceeds 65535");
  if (p.n == 0 || p.pool_h == 0 || p.pool_w == 0) return;
  p.k_padded = PaddedK(p.kh, p.kw);
  switch (x_dtype) {
    case DType::kFloat32: LaunchTile<float>(x, weights, bias, y, p, tile, stream); break;
    case DType::kFloat16: LaunchTile<__half>(x, weights, bias, y, p, tile, stream); break;
    case DType::kUInt8:
      KILN_CHECK(p.normalize.channels == p.c, "conv-pool kernel: image normalization for ",
                 p.normalize.channels, " channels, input has ", p.c);
      LaunchTile<uint8_t>(x, weights, bias, y, p, tile, stream);
      break;
    default: Fail("conv-pool kernel: input dtype ", DTypeName(x_dtype), " is not supported");
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kiln::gpu::conv_pool_kernels
