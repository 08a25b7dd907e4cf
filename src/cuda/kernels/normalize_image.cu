#include "cuda/kernels/normalize_image.h"

#include "cuda/cuda_check.h"
#include "cuda/kernels/kernel_util.cuh"
#include "cuda/kernels/normalize_image.cuh"

namespace kiln::gpu {
namespace {

// One thread per pixel: reads its c contiguous bytes, writes one element to
// each of the c output planes (coalesced across the threads of a warp).
template <typename T>
__global__ void NormalizeImagesKernel(const uint8_t* __restrict__ nhwc, T* __restrict__ nchw,
                                      int64_t pixels_per_image, int64_t total_pixels,
                                      NormalizeImageParams params) {
  const int c = params.channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total_pixels;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t image = i / pixels_per_image;
    const int64_t pixel = i - image * pixels_per_image;
    const uint8_t* src = nhwc + i * c;
    for (int ch = 0; ch < c; ++ch) {
      const float v = NormalizeImageValue(src[ch], params.mean[ch], params.std[ch]);
      nchw[(image * c + ch) * pixels_per_image + pixel] = FromFloat<T>(v);
    }
  }
}

}  // namespace

NormalizeImageParams MakeNormalizeImageParams(const std::vector<float>& mean,
                                              const std::vector<float>& std, int64_t channels,
                                              const char* what) {
  KILN_CHECK(channels >= 1 && channels <= kMaxImageChannels, what, ": images with ", channels,
             " channels (1 to ", kMaxImageChannels, " supported)");
  KILN_CHECK(static_cast<int64_t>(mean.size()) == channels &&
                 static_cast<int64_t>(std.size()) == channels,
             what, ": mean and std need ", channels, " values (one per channel), got ",
             mean.size(), " and ", std.size());
  NormalizeImageParams p;
  p.channels = static_cast<int>(channels);
  for (int64_t ch = 0; ch < channels; ++ch) {
    KILN_CHECK(std[static_cast<size_t>(ch)] != 0.f, what, ": std has a zero entry (channel ", ch,
               ")");
    p.mean[ch] = mean[static_cast<size_t>(ch)];
    p.std[ch] = std[static_cast<size_t>(ch)];
  }
  return p;
}

void LaunchNormalizeImages(const uint8_t* nhwc, void* nchw, DType dtype, int64_t n, int64_t c,
                           int64_t h, int64_t w, const NormalizeImageParams& params,
                           cudaStream_t stream) {
  KILN_CHECK(c >= 1 && c == params.channels, "NormalizeImages: ", c, " channels, parameters for ",
             params.channels);
  const int64_t pixels_per_image = h * w;
  const int64_t total_pixels = n * pixels_per_image;
  if (total_pixels <= 0) return;
  DispatchFloat(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    NormalizeImagesKernel<T><<<Blocks(total_pixels), kThreads, 0, stream>>>(
        nhwc, static_cast<T*>(nchw), pixels_per_image, total_pixels, params);
    KILN_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace kiln::gpu
