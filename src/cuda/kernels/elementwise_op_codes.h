// The operation codes of kiln's elementwise kernels (see elementwise.h).
//
// Plain C++17 with no device code: included by host code, by nvcc, and by
// NVRTC when the fused-program code generator (elementwise_codegen.h)
// compiles a kernel at run time. NVRTC has no standard headers, so the few
// fixed-width integer types used here are declared for it.
#pragma once

#if defined(__CUDACC_RTC__)
typedef int int32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
#else
#include <cstdint>
#endif

namespace kiln::gpu::ew {

// Operation codes. The numeric values are part of the KilnElementwise node
// encoding (engine files store them): never renumber, only append.
enum class Op : int32_t {
  // Unary (input 0; p0/p1 are attribute parameters).
  kIdentity = 0,
  kRelu = 1,
  kLeakyRelu = 2,     // p0 = alpha
  kSigmoid = 3,
  kHardSigmoid = 4,   // p0 = alpha, p1 = beta
  kHardSwish = 5,
  kTanh = 6,
  kElu = 7,           // p0 = alpha
  kSelu = 8,          // p0 = alpha, p1 = gamma
  kCelu = 9,          // p0 = alpha
  kGeluErf = 10,
  kGeluTanh = 11,
  kErf = 12,
  kExp = 13,
  kLog = 14,
  kSqrt = 15,
  kReciprocal = 16,
  kNeg = 17,
  kAbs = 18,
  kSin = 19,
  kCos = 20,
  kFloor = 21,
  kCeil = 22,
  kRound = 23,        // half to even
  kSign = 24,
  kSoftplus = 25,
  kSoftsign = 26,
  kMish = 27,
  kThresholdedRelu = 28,  // p0 = alpha
  kIsNaN = 29,        // 1/0
  kIsInf = 30,        // p0 != 0: detect +inf, p1 != 0: detect -inf
  kNot = 31,          // x == 0
  kBitwiseNot = 32,   // integers only
  kClipConst = 33,    // clamp to [p0, p1] (lower bound first)
  kLastUnary = 33,

  // Binary (inputs 0, 1); Add/Mul/Max/Min also fold more inputs left to right.
  kAdd = 40,
  kSub = 41,
  kMul = 42,
  kDiv = 43,
  kPow = 44,
  kFmod = 45,         // C fmod / remainder with the dividend's sign
  kMod = 46,          // integer remainder with the divisor's sign (Python %)
  kMax = 47,          // NaN-propagating
  kMin = 48,
  kEqual = 49,
  kLess = 50,
  kGreater = 51,
  kLessOrEqual = 52,
  kGreaterOrEqual = 53,
  kAnd = 54,
  kOr = 55,
  kXor = 56,
  kBitwiseAnd = 57,
  kBitwiseOr = 58,
  kBitwiseXor = 59,
  kPRelu = 60,        // a < 0 ? b * a : a
  kClipLow = 61,      // a < b ? b : a   (Clip's lower bound)
  kClipHigh = 62,     // a > b ? b : a   (Clip's upper bound)
  kLastBinary = 62,

  // Ternary.
  kWhere = 70,        // a != 0 ? b : c
  kClip = 71,         // ClipHigh(ClipLow(a, b), c)
  kMulAdd = 72,       // a * b + c, rounded after each operation (no FMA)
  kQuantize = 73,     // saturate(round_half_even(a / b) + c) to [p0, p1], NaN -> 0
  kDequantize = 74,   // (a - c) * b
  kLastTernary = 74,
};

inline bool IsUnaryOp(Op op) { return static_cast<int>(op) <= static_cast<int>(Op::kLastUnary); }
inline bool IsBinaryOp(Op op) {
  return static_cast<int>(op) >= static_cast<int>(Op::kAdd) &&
         static_cast<int>(op) <= static_cast<int>(Op::kLastBinary);
}
inline bool IsTernaryOp(Op op) {
  return static_cast<int>(op) >= static_cast<int>(Op::kWhere) &&
         static_cast<int>(op) <= static_cast<int>(Op::kLastTernary);
}

}  // namespace kiln::gpu::ew
