// Fused zero-pad + space-to-depth (see space_to_depth.h). Two kernels:
//   * channels-last output whose pixel is a whole number of 16-byte vectors
//     (e.g. 16 float16 channels: ResNet's RGB stem after the rewrite): one
//     thread per output pixel gathers its channels into registers and writes
//     them with 16-byte stores;
//   * anything else: one thread per output element, in output memory order.
// Both use 1-D grid-stride loops with int64 index math, so any size launches.
// Inputs: float NCHW, or uint8 NHWC images normalized on the fly (Load).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "cuda/cuda_check.h"
#include "cuda/kernels/kernel_util.cuh"
#include "cuda/kernels/normalize_image.cuh"
#include "cuda/kernels/space_to_depth.h"

namespace kiln::gpu::space_to_depth_kernels {
namespace {

bool IsFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

// The bits of one element, zero-extended to 32 bits.
__device__ __forceinline__ uint32_t Bits(float x) { return __float_as_uint(x); }
__device__ __forceinline__ uint32_t Bits(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ uint32_t Bits(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }

__device__ __forceinline__ int64_t GlobalThread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// Input element (n, c, y) x of the (unpadded) input, as float: a float NCHW
// tensor's element, or a uint8 NHWC image's pixel channel normalized.
template <typename In>
__device__ __forceinline__ float Load(const In* __restrict__ in, const PadSpaceToDepthParams& p,
                                      int64_t n, int64_t c, int64_t y, int64_t x) {
  return ToFloat(in[((n * p.c + c) * p.h + y) * p.w + x]);
}
__device__ __forceinline__ float Load(const uint8_t* __restrict__ in, const PadSpaceToDepthParams& p,
                                      int64_t n, int64_t c, int64_t y, int64_t x) {
  return NormalizeImageValue(in[((n * p.h + y) * p.w + x) * p.c + c], p.normalize.mean[c],
                             p.normalize.std[c]);
}

// Input element feeding output (n, co, oy, ox), as float; 0 in the padding.
template <typename In>
__device__ __forceinline__ float Source(const In* __restrict__ in, const PadSpaceToDepthParams& p,
                                        int64_t n, int64_t co, int64_t oy, int64_t ox) {
  const int64_t q = co / p.padded_c, cp = co - q * p.padded_c;
  const int64_t i = q / p.block, j = q - i * p.block;
  const int64_t c = cp - p.pad_c, y = oy * p.block + i - p.pad_h, x = ox * p.block + j - p.pad_w;
  if (c < 0 || c >= p.c || y < 0 || y >= p.h || x < 0 || x >= p.w) return 0.f;
  return Load(in, p, n, c, y, x);
}

template <typename In, typename Out>
__global__ void PadSpaceToDepthKernel(const In* __restrict__ in, Out* __restrict__ out,
                                      PadSpaceToDepthParams p, int64_t total) {
  for (int64_t e = GlobalThread(); e < total; e += GridStride()) {
    int64_t n, co, oy, ox;
    if (p.out_nhwc) {
      co = e % p.out_c;
      int64_t t = e / p.out_c;
      ox = t % p.out_w;
      t /= p.out_w;
      oy = t % p.out_h;
      n = t / p.out_h;
    } else {
      ox = e % p.out_w;
      int64_t t = e / p.out_w;
      oy = t % p.out_h;
      t /= p.out_h;
      co = t % p.out_c;
      n = t / p.out_c;
    }
    out[e] = FromFloat<Out>(Source(in, p, n, co, oy, ox));
  }
}

// Channels-last, kChannels == p.out_c, kChannels * sizeof(Out) a multiple of
// 16 bytes and `out` 16-byte aligned: one thread per output pixel.
template <typename In, typename Out, int kChannels>
__global__ void PadSpaceToDepthPixelKernel(const In* __restrict__ in, uint4* __restrict__ out,
                                           PadSpaceToDepthParams p, int64_t pixels) {
  static_assert(sizeof(Out) == 2 || sizeof(Out) == 4, "16- or 32-bit outputs");
  constexpr int kPerWord = 4 / static_cast<int>(sizeof(Out));
  constexpr int kWords = kChannels / kPerWord;
  constexpr int kVectors = kWords / 4;
  static_assert(kVectors * 4 * kPerWord == kChannels, "whole 16-byte vectors per pixel");
  for (int64_t px = GlobalThread(); px < pixels; px += GridStride()) {
    const int64_t ox = px % p.out_w;
    const int64_t t = px / p.out_w;
    const int64_t oy = t % p.out_h, n = t / p.out_h;
    const int64_t y0 = oy * p.block - p.pad_h, x0 = ox * p.block - p.pad_w;
    uint32_t words[kWords];
#pragma unroll
    for (int k = 0; k < kWords; ++k) words[k] = 0;
    // Output channel co = (i*block + j)*padded_c + cp, walked in order.
    int64_t cp = 0, i = 0, j = 0;
#pragma unroll
    for (int co = 0; co < kChannels; ++co) {
      const int64_t c = cp - p.pad_c, y = y0 + i, x = x0 + j;
      if (c >= 0 && c < p.c && y >= 0 && y < p.h && x >= 0 && x < p.w) {
        const uint32_t bits = Bits(FromFloat<Out>(Load(in, p, n, c, y, x)));
        words[co / kPerWord] |= bits << (32 / kPerWord * (co % kPerWord));
      }
      if (++cp == p.padded_c) {
        cp = 0;
        if (++j == p.block) {
          j = 0;
          ++i;
        }
      }
    }
    uint4* dst = out + px * kVectors;
#pragma unroll
    for (int v = 0; v < kVectors; ++v)
      dst[v] = make_uint4(words[4 * v], words[4 * v + 1], words[4 * v + 2], words[4 * v + 3]);
  }
}

template <typename In, typename Out, int kChannels>
bool TryPixelKernel(const In* in, Out* out, const PadSpaceToDepthParams& p, cudaStream_t stream) {
  if constexpr ((kChannels * sizeof(Out)) % sizeof(uint4) != 0) {
    return false;
  } else {
    const int64_t pixels = p.n * p.out_h * p.out_w;
    PadSpaceToDepthPixelKernel<In, Out, kChannels>
        <<<Blocks(pixels), kThreads, 0, stream>>>(in, reinterpret_cast<uint4*>(out), p, pixels);
    KILN_CUDA_CHECK(cudaGetLastError());
    return true;
  }
}

template <typename In, typename Out>
void LaunchTyped(const In* in, Out* out, const PadSpaceToDepthParams& p, cudaStream_t stream) {
  const bool aligned = reinterpret_cast<uintptr_t>(out) % sizeof(uint4) == 0;
  if (p.out_nhwc && aligned) {
    bool done = false;
    switch (p.out_c) {
      case 4:
        done = TryPixelKernel<In, Out, 4>(in, out, p, stream);
        break;
      case 8:
        done = TryPixelKernel<In, Out, 8>(in, out, p, stream);
        break;
      case 16:
        done = TryPixelKernel<In, Out, 16>(in, out, p, stream);
        break;
      case 32:
        done = TryPixelKernel<In, Out, 32>(in, out, p, stream);
        break;
      default:
        break;
    }
    if (done) return;
  }
  const int64_t total = p.n * p.out_c * p.out_h * p.out_w;
  PadSpaceToDepthKernel<In, Out><<<Blocks(total), kThreads, 0, stream>>>(in, out, p, total);
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool PadSpaceToDepthSupported(DType in_dtype, DType out_dtype) {
  return (IsFloat(in_dtype) || in_dtype == DType::kUInt8) && IsFloat(out_dtype);
}

void LaunchPadSpaceToDepth(const void* in, DType in_dtype, void* out, DType out_dtype,
                           const PadSpaceToDepthParams& p, cudaStream_t stream) {
  if (p.n * p.out_c * p.out_h * p.out_w == 0) return;
  KILN_CHECK(p.block >= 1 && p.padded_c >= 1 && p.out_c == p.padded_c * p.block * p.block,
             "pad+space-to-depth: inconsistent parameters (block ", p.block, ", padded channels ",
             p.padded_c, ", output channels ", p.out_c, ")");
  if (in_dtype == DType::kUInt8) {
    KILN_CHECK(p.normalize.channels == p.c && p.c >= 1 && p.c <= kMaxImageChannels,
               "pad+space-to-depth: uint8 images with ", p.c, " channels need mean/std for each (got ",
               p.normalize.channels, ")");
    DispatchFloat(out_dtype, [&](auto to) {
      using Out = typename decltype(to)::type;
      LaunchTyped(static_cast<const uint8_t*>(in), static_cast<Out*>(out), p, stream);
    });
    return;
  }
  DispatchFloat(in_dtype, [&](auto ti) {
    using In = typename decltype(ti)::type;
    DispatchFloat(out_dtype, [&](auto to) {
      using Out = typename decltype(to)::type;
      LaunchTyped(static_cast<const In*>(in), static_cast<Out*>(out), p, stream);
    });
  });
}

}  // namespace kiln::gpu::space_to_depth_kernels
