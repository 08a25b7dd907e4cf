// Image normalization (include/kiln/image.h) on the GPU: uint8 [N, H, W, C]
// images -> (x / 255 - mean[c]) / std[c] in float32/float16/bfloat16
// [N, C, H, W]. One kernel, used by the KilnNormalizeImage layer
// (src/cuda/layers/space_to_depth.cc) and by kiln::Pipeline::SubmitImages for
// float-input engines (src/pipeline/gpu_stages.cc); the fused stem
// (space_to_depth.cu) computes each value with the same device function
// (normalize_image.cuh), so fused and unfused values agree bit for bit.
// C++17-clean: included by nvcc and by host C++20 code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "kiln/image.h"
#include "kiln/tensor.h"

namespace kiln::gpu {

// Per-channel statistics, passed to kernels by value.
struct NormalizeImageParams {
  int channels = 0;
  float mean[kMaxImageChannels] = {};
  float std[kMaxImageChannels] = {};
};

// Throws (naming `what`) unless mean and std have `channels` entries,
// 1 <= channels <= kMaxImageChannels, std has no zero.
NormalizeImageParams MakeNormalizeImageParams(const std::vector<float>& mean,
                                              const std::vector<float>& std, int64_t channels,
                                              const char* what);

// nhwc: uint8 [n, h, w, c]; nchw: [n, c, h, w] of `dtype` (float32, float16 or
// bfloat16); c == params.channels. Returns at once for no pixels; launches on
// `stream` only and checks the launch.
void LaunchNormalizeImages(const uint8_t* nhwc, void* nchw, DType dtype, int64_t n, int64_t c,
                           int64_t h, int64_t w, const NormalizeImageParams& params,
                           cudaStream_t stream);

}  // namespace kiln::gpu
