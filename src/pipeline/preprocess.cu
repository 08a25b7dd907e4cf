#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/cuda_check.h"
#include "pipeline/preprocess.h"

namespace kiln::pipeline {
namespace {

__device__ inline void Store(float* out, int64_t i, float v) { out[i] = v; }
__device__ inline void Store(__half* out, int64_t i, float v) { out[i] = __float2half_rn(v); }
__device__ inline void Store(__nv_bfloat16* out, int64_t i, float v) { out[i] = __float2bfloat16_rn(v); }

// One thread per pixel: reads its c contiguous bytes, writes one element to
// each of the c output planes (coalesced across the threads of a warp).
template <typename T>
__global__ void NormalizeImagesKernel(const uint8_t* __restrict__ nhwc, T* __restrict__ nchw,
                                      int64_t pixels_per_image, int64_t total_pixels, int c,
                                      NormalizeParams params) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total_pixels;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t image = i / pixels_per_image;
    const int64_t pixel = i - image * pixels_per_image;
    const uint8_t* src = nhwc + i * c;
    for (int ch = 0; ch < c; ++ch) {
      // Same expression as NormalizeImagesCpu (IEEE division, no fast math).
      const float v = (static_cast<float>(src[ch]) / 255.f - params.mean[ch]) / params.std[ch];
      Store(nchw, (image * c + ch) * pixels_per_image + pixel, v);
    }
  }
}

template <typename T>
void Launch(const uint8_t* nhwc, void* nchw, int64_t pixels_per_image, int64_t total_pixels, int c,
            const NormalizeParams& params, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((total_pixels + kThreads - 1) / kThreads, 65535);
  NormalizeImagesKernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      nhwc, static_cast<T*>(nchw), pixels_per_image, total_pixels, c, params);
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void LaunchNormalizeImages(const uint8_t* nhwc, void* nchw, DType dtype, int64_t n, int64_t c,
                           int64_t h, int64_t w, const NormalizeParams& params, cudaStream_t stream) {
  KILN_CHECK(c >= 1 && c <= kMaxNormalizeChannels, "NormalizeImages: ", c, " channels (1..",
             kMaxNormalizeChannels, " supported)");
  const int64_t pixels_per_image = h * w;
  const int64_t total_pixels = n * pixels_per_image;
  if (total_pixels <= 0) return;
  switch (dtype) {
    case DType::kFloat32:
      Launch<float>(nhwc, nchw, pixels_per_image, total_pixels, static_cast<int>(c), params, stream);
      break;
    case DType::kFloat16:
      Launch<__half>(nhwc, nchw, pixels_per_image, total_pixels, static_cast<int>(c), params, stream);
      break;
    case DType::kBFloat16:
      Launch<__nv_bfloat16>(nhwc, nchw, pixels_per_image, total_pixels, static_cast<int>(c), params,
                            stream);
      break;
    default:
      Fail("NormalizeImages: output dtype ", DTypeName(dtype), " (float32/float16/bfloat16 supported)");
  }
}

}  // namespace kiln::pipeline
