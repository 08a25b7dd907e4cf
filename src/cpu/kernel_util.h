// Helpers shared by the CPU kernels.
#pragma once

#include <cstdint>

#include "ops/registry.h"

namespace kiln::cpu {

// Wraps a kernel written for float32 so it also serves float16 and bfloat16:
// half-precision inputs are widened to float32, the kernel runs on float32
// outputs, and results are narrowed back. The reference backend computes in
// float32 like the ONNX reference does.
CpuKernelFn WithFloat32Compute(CpuKernelFn kernel);

// Calls fn(T{}) with T the C++ type of a numeric dtype (float, double,
// int8_t ... uint64_t; bool as uint8_t). Half types are not dispatched: wrap
// the kernel in WithFloat32Compute instead.
template <typename Fn>
void DispatchNumeric(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); break;
    case DType::kFloat64: fn(double{}); break;
    case DType::kInt8: fn(int8_t{}); break;
    case DType::kUInt8: fn(uint8_t{}); break;
    case DType::kInt16: fn(int16_t{}); break;
    case DType::kUInt16: fn(uint16_t{}); break;
    case DType::kInt32: fn(int32_t{}); break;
    case DType::kUInt32: fn(uint32_t{}); break;
    case DType::kInt64: fn(int64_t{}); break;
    case DType::kUInt64: fn(uint64_t{}); break;
    case DType::kBool: fn(uint8_t{}); break;
    default: Fail("dtype ", DTypeName(dtype), " is not supported by this CPU kernel");
  }
}

}  // namespace kiln::cpu
