// The per-element math of kiln's elementwise operations: one copy, used by
// the kernels in elementwise.cu (N-ary kernel and fused-program interpreter)
// and, as source text, by the fused-program code generator
// (elementwise_codegen.h), whose NVRTC-compiled kernels call these same
// functions. So the interpreter and generated code compute bit-identical
// results.
//
// Must compile both under nvcc (C++17) and under NVRTC, which has no
// standard headers: no #include here beyond elementwise_op_codes.h, and
// the two type traits used are defined below.
#pragma once

#include "cuda/kernels/elementwise_op_codes.h"

namespace kiln::gpu::ew {

// std::is_floating_point / std::is_signed for the arithmetic types used here.
template <typename T>
struct IsFloatingPoint {
  static constexpr bool value = false;
};
template <>
struct IsFloatingPoint<float> {
  static constexpr bool value = true;
};
template <>
struct IsFloatingPoint<double> {
  static constexpr bool value = true;
};
template <typename T>
struct IsSignedType {
  static constexpr bool value = false;
};
#define KILN_EW_SIGNED(T)                  \
  template <>                              \
  struct IsSignedType<T> {                 \
    static constexpr bool value = true;    \
  };
KILN_EW_SIGNED(float)
KILN_EW_SIGNED(double)
KILN_EW_SIGNED(signed char)
KILN_EW_SIGNED(short)
KILN_EW_SIGNED(int)
KILN_EW_SIGNED(long)
KILN_EW_SIGNED(long long)
#undef KILN_EW_SIGNED

// ---- Scalar math overloads (float / double) ----

__device__ __forceinline__ float Mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double Mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float Add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double Add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float Sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double Sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ float Div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double Div(double a, double b) { return __ddiv_rn(a, b); }

#define KILN_EW_MATH1(Name, ffn, dfn)                                 \
  __device__ __forceinline__ float Name(float x) { return ffn(x); }   \
  __device__ __forceinline__ double Name(double x) { return dfn(x); }
KILN_EW_MATH1(Exp, expf, exp)
KILN_EW_MATH1(Log, logf, log)
KILN_EW_MATH1(Log1p, log1pf, log1p)
KILN_EW_MATH1(Tanh, tanhf, tanh)
KILN_EW_MATH1(Erf, erff, erf)
KILN_EW_MATH1(Sqrt, sqrtf, sqrt)
KILN_EW_MATH1(Sin, sinf, sin)
KILN_EW_MATH1(Cos, cosf, cos)
KILN_EW_MATH1(Floor, floorf, floor)
KILN_EW_MATH1(Ceil, ceilf, ceil)
KILN_EW_MATH1(Rint, rintf, rint)
KILN_EW_MATH1(Fabs, fabsf, fabs)
#undef KILN_EW_MATH1
__device__ __forceinline__ float Pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double Pow(double a, double b) { return pow(a, b); }
__device__ __forceinline__ float Fmod(float a, float b) { return fmodf(a, b); }
__device__ __forceinline__ double Fmod(double a, double b) { return fmod(a, b); }
__device__ __forceinline__ bool IsNan(float x) { return isnan(x); }
__device__ __forceinline__ bool IsNan(double x) { return isnan(x); }
__device__ __forceinline__ bool IsInf(float x) { return isinf(x); }
__device__ __forceinline__ bool IsInf(double x) { return isinf(x); }

// std::max / std::min exactly (NaN handling included).
template <typename T>
__device__ __forceinline__ T StdMax(T a, T b) { return (a < b) ? b : a; }
template <typename T>
__device__ __forceinline__ T StdMin(T a, T b) { return (b < a) ? b : a; }

template <typename T>
__device__ __forceinline__ bool IsNegative(T v) {
  if constexpr (IsSignedType<T>::value) {
    return v < T(0);
  } else {
    (void)v;
    return false;
  }
}

// ---- Integer helpers (wrapping, no UB) ----

template <typename C>
__device__ __forceinline__ C WrapAdd(C a, C b) {
  return static_cast<C>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
}
template <typename C>
__device__ __forceinline__ C WrapSub(C a, C b) {
  return static_cast<C>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
}
template <typename C>
__device__ __forceinline__ C WrapMul(C a, C b) {
  return static_cast<C>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
}

template <typename C>
__device__ __forceinline__ C IntDiv(C a, C b) {
  if (b == 0) return 0;
  if constexpr (IsSignedType<C>::value) {
    if (b == -1) return WrapSub(C(0), a);
  }
  return static_cast<C>(a / b);
}

template <typename C>
__device__ __forceinline__ C IntMod(C a, C b, bool fmod) {
  if (b == 0) return 0;
  if constexpr (IsSignedType<C>::value) {
    if (b == -1) return 0;
    C r = static_cast<C>(a % b);
    if (!fmod && r != 0 && ((r < 0) != (b < 0))) r = static_cast<C>(r + b);
    return r;
  } else {
    return static_cast<C>(a % b);
  }
}

template <typename C>
__device__ __forceinline__ C IntPow(C base, C exponent) {
  if constexpr (IsSignedType<C>::value) {
    if (exponent < 0) {
      if (base == 1) return 1;
      if (base == -1) return (exponent & 1) ? C(-1) : C(1);
      return 0;
    }
  }
  uint64_t result = 1;
  uint64_t square = static_cast<uint64_t>(base);
  for (uint64_t e = static_cast<uint64_t>(exponent); e != 0; e >>= 1) {
    if (e & 1) result *= square;
    square *= square;
  }
  return static_cast<C>(result);
}

// ---- Operations ----

template <typename C>
__device__ __forceinline__ C StableSigmoid(C x) {
  if (x >= C(0)) return Div(C(1), Add(C(1), Exp(-x)));
  const C e = Exp(x);
  return Div(e, Add(C(1), e));
}

template <typename C>
__device__ __forceinline__ C StableSoftplus(C x) {
  return x > C(0) ? Add(x, Log1p(Exp(-x))) : Log1p(Exp(x));
}

template <typename C>
__device__ __forceinline__ C Unary(Op op, C x, C p0, C p1) {
  if constexpr (IsFloatingPoint<C>::value) {
    switch (op) {
      case Op::kIdentity: return x;
      case Op::kRelu: return x < C(0) ? C(0) : x;
      case Op::kLeakyRelu: return x < C(0) ? Mul(p0, x) : x;
      case Op::kSigmoid: return StableSigmoid(x);
      case Op::kHardSigmoid: return StdMax(C(0), StdMin(C(1), Add(Mul(p0, x), p1)));
      case Op::kHardSwish:
        return Mul(x, StdMax(C(0), StdMin(C(1), Add(Mul(C(1.0 / 6.0), x), C(0.5)))));
      case Op::kTanh: return Tanh(x);
      case Op::kElu: return x >= C(0) ? x : Mul(p0, Sub(Exp(x), C(1)));
      case Op::kSelu: return x > C(0) ? Mul(p1, x) : Mul(p1, Sub(Mul(p0, Exp(x)), p0));
      case Op::kCelu:
        return Add(StdMax(C(0), x), StdMin(C(0), Mul(p0, Sub(Exp(Div(x, p0)), C(1)))));
      case Op::kGeluErf:
        return Mul(Mul(C(0.5), x), Add(C(1), Erf(Mul(x, C(0.7071067811865476)))));
      case Op::kGeluTanh: {
        const C cube = Mul(Mul(Mul(C(0.044715), x), x), x);
        const C inner = Mul(C(0.7978845608028654), Add(x, cube));
        return Mul(Mul(C(0.5), x), Add(C(1), Tanh(inner)));
      }
      case Op::kErf: return Erf(x);
      case Op::kExp: return Exp(x);
      case Op::kLog: return Log(x);
      case Op::kSqrt: return Sqrt(x);
      case Op::kReciprocal: return Div(C(1), x);
      case Op::kNeg: return -x;
      case Op::kAbs: return Fabs(x);
      case Op::kSin: return Sin(x);
      case Op::kCos: return Cos(x);
      case Op::kFloor: return Floor(x);
      case Op::kCeil: return Ceil(x);
      case Op::kRound: return Rint(x);
      case Op::kSign:
        if (IsNan(x)) return x;
        return static_cast<C>(static_cast<int>(C(0) < x) - static_cast<int>(x < C(0)));
      case Op::kSoftplus: return StableSoftplus(x);
      case Op::kSoftsign: return Div(x, Add(C(1), Fabs(x)));
      case Op::kMish: return Mul(x, Tanh(StableSoftplus(x)));
      case Op::kThresholdedRelu: return x > p0 ? x : C(0);
      case Op::kIsNaN: return IsNan(x) ? C(1) : C(0);
      case Op::kIsInf:
        return (IsInf(x) && ((x > C(0) && p0 != C(0)) || (x < C(0) && p1 != C(0)))) ? C(1)
                                                                                    : C(0);
      case Op::kNot: return x == C(0) ? C(1) : C(0);
      case Op::kClipConst: {
        C v = x < p0 ? p0 : x;
        return v > p1 ? p1 : v;
      }
      default: return C(0);
    }
  } else {
    switch (op) {
      case Op::kIdentity: return x;
      case Op::kRelu: return IsNegative(x) ? C(0) : x;
      case Op::kNeg: return WrapSub(C(0), x);
      case Op::kAbs: return IsNegative(x) ? WrapSub(C(0), x) : x;
      case Op::kSign:
        return static_cast<C>(static_cast<int>(C(0) < x) - static_cast<int>(IsNegative(x)));
      case Op::kNot: return x == C(0) ? C(1) : C(0);
      case Op::kBitwiseNot: return static_cast<C>(~x);
      case Op::kClipConst: {
        C v = x < p0 ? p0 : x;
        return v > p1 ? p1 : v;
      }
      default: return C(0);
    }
  }
}

template <typename C>
__device__ __forceinline__ C Binary(Op op, C a, C b) {
  constexpr bool kFloat = IsFloatingPoint<C>::value;
  switch (op) {
    case Op::kAdd:
      if constexpr (kFloat) return Add(a, b); else return WrapAdd(a, b);
    case Op::kSub:
      if constexpr (kFloat) return Sub(a, b); else return WrapSub(a, b);
    case Op::kMul:
      if constexpr (kFloat) return Mul(a, b); else return WrapMul(a, b);
    case Op::kDiv:
      if constexpr (kFloat) return Div(a, b); else return IntDiv(a, b);
    case Op::kPow:
      if constexpr (kFloat) return Pow(a, b); else return IntPow(a, b);
    case Op::kFmod:
      if constexpr (kFloat) return Fmod(a, b); else return IntMod(a, b, true);
    case Op::kMod:
      if constexpr (kFloat) return Fmod(a, b); else return IntMod(a, b, false);
    case Op::kMax:
      if constexpr (kFloat) {
        if (IsNan(a)) return a;
        if (IsNan(b)) return b;
      }
      return a < b ? b : a;
    case Op::kMin:
      if constexpr (kFloat) {
        if (IsNan(a)) return a;
        if (IsNan(b)) return b;
      }
      return b < a ? b : a;
    case Op::kEqual: return a == b ? C(1) : C(0);
    case Op::kLess: return a < b ? C(1) : C(0);
    case Op::kGreater: return a > b ? C(1) : C(0);
    case Op::kLessOrEqual: return a <= b ? C(1) : C(0);
    case Op::kGreaterOrEqual: return a >= b ? C(1) : C(0);
    case Op::kAnd: return (a != C(0) && b != C(0)) ? C(1) : C(0);
    case Op::kOr: return (a != C(0) || b != C(0)) ? C(1) : C(0);
    case Op::kXor: return ((a != C(0)) != (b != C(0))) ? C(1) : C(0);
    case Op::kBitwiseAnd:
      if constexpr (kFloat) return C(0); else return static_cast<C>(a & b);
    case Op::kBitwiseOr:
      if constexpr (kFloat) return C(0); else return static_cast<C>(a | b);
    case Op::kBitwiseXor:
      if constexpr (kFloat) return C(0); else return static_cast<C>(a ^ b);
    case Op::kPRelu:
      if constexpr (kFloat) return a < C(0) ? Mul(b, a) : a; else return IsNegative(a) ? WrapMul(b, a) : a;
    case Op::kClipLow: return a < b ? b : a;
    case Op::kClipHigh: return a > b ? b : a;
    default: return C(0);
  }
}

template <typename C>
__device__ __forceinline__ C Ternary(Op op, C a, C b, C c, C p0, C p1) {
  switch (op) {
    case Op::kWhere: return a != C(0) ? b : c;
    case Op::kClip: {
      C v = a < b ? b : a;
      return v > c ? c : v;
    }
    case Op::kMulAdd:
      if constexpr (IsFloatingPoint<C>::value) {
        return Add(Mul(a, b), c);
      } else {
        return WrapAdd(WrapMul(a, b), c);
      }
    case Op::kQuantize:
      if constexpr (IsFloatingPoint<C>::value) {
        C q = Add(Rint(Div(a, b)), c);
        if (IsNan(q)) return C(0);
        return StdMin(StdMax(q, p0), p1);
      } else {
        return C(0);
      }
    case Op::kDequantize:
      if constexpr (IsFloatingPoint<C>::value) {
        return Mul(Sub(a, c), b);
      } else {
        return C(0);
      }
    default: return C(0);
  }
}

}  // namespace kiln::gpu::ew
