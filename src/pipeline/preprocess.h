// The pipeline's image preprocessing kernel (src/pipeline/preprocess.cu):
// uint8 NHWC images -> (x / 255 - mean[c]) / std[c] in the engine input's
// dtype and NCHW layout, so a quarter of FP32's bytes cross PCIe.
// C++17-clean: included by nvcc and by host C++20 code.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/tensor.h"

namespace kiln::pipeline {

constexpr int kMaxNormalizeChannels = 8;

struct NormalizeParams {
  float mean[kMaxNormalizeChannels] = {};
  float std[kMaxNormalizeChannels] = {};
};

// nhwc: uint8 [n, h, w, c]; nchw: [n, c, h, w] of `dtype` (float32, float16 or
// bfloat16). c <= kMaxNormalizeChannels. Launches on `stream` only.
void LaunchNormalizeImages(const uint8_t* nhwc, void* nchw, DType dtype, int64_t n, int64_t c,
                           int64_t h, int64_t w, const NormalizeParams& params, cudaStream_t stream);

}  // namespace kiln::pipeline
