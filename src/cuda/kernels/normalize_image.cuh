// The one expression of image normalization on the device (include/kiln/image.h),
// shared by the normalize kernel and the fused space-to-depth stem. Explicit
// round-to-nearest intrinsics: IEEE float32 division and subtraction whatever
// the compiler flags, the same values as the host's (x / 255.f - mean) / std.
#pragma once

#include <cstdint>

namespace kiln::gpu {

__device__ __forceinline__ float NormalizeImageValue(uint8_t x, float mean, float std) {
  return __fdiv_rn(__fsub_rn(__fdiv_rn(static_cast<float>(x), 255.f), mean), std);
}

}  // namespace kiln::gpu
