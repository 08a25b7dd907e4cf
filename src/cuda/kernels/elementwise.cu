// Elementwise kernels: the N-ary kernel (one op, broadcast inputs, any
// dtypes), its vectorized float fast path, the fused-program interpreter and
// the BatchNormalization parameter preparation. See elementwise.h.
//
// Semantics follow the CPU backend (src/cpu/elementwise.cc) operation by
// operation: float16/bfloat16 compute in float32, products and sums are
// rounded after every operation (__fmul_rn/__fadd_rn: never contracted into
// FMAs), std::min/std::max are reproduced with their NaN behaviour, integer
// arithmetic wraps, float->integer conversion truncates via int64.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/elementwise_ops.cuh"

namespace kiln::gpu::ew {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kMaxBlocks = 1 << 19;

int BlocksFor(int64_t work) {
  int64_t blocks = (work + kBlock - 1) / kBlock;
  if (blocks < 1) blocks = 1;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  return static_cast<int>(blocks);
}

// ---- Conversions ----

// Float -> integer as the CPU backend's FloatToInteger: NaN -> 0, truncation,
// saturation at the int64 range (uint64: its own range), then wrapping to D.
template <typename D>
__device__ __forceinline__ D FloatToInteger(double v) {
  if (isnan(v)) return D(0);
  v = trunc(v);
  if (std::is_same<D, uint64_t>::value) {
    if (v >= 18446744073709551616.0) return static_cast<D>(ULLONG_MAX);
    if (v >= 9223372036854775808.0) return static_cast<D>(static_cast<uint64_t>(v));
  }
  if (v >= 9223372036854775808.0) return static_cast<D>(LLONG_MAX);
  if (v < -9223372036854775808.0) return static_cast<D>(LLONG_MIN);
  return static_cast<D>(static_cast<int64_t>(v));
}

// Any arithmetic source value -> compute type C.
template <typename C, typename S>
__device__ __forceinline__ C Convert(S v) {
  if constexpr (std::is_floating_point<C>::value) {
    return static_cast<C>(v);
  } else if constexpr (std::is_floating_point<S>::value) {
    return FloatToInteger<C>(static_cast<double>(v));
  } else {
    return static_cast<C>(v);
  }
}

template <typename C>
__device__ __forceinline__ C Load(const void* p, DType d, int64_t i) {
  switch (d) {
    case DType::kFloat32: return Convert<C>(static_cast<const float*>(p)[i]);
    case DType::kFloat16: return Convert<C>(__half2float(static_cast<const __half*>(p)[i]));
    case DType::kBFloat16:
      return Convert<C>(__bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]));
    case DType::kFloat64: return Convert<C>(static_cast<const double*>(p)[i]);
    case DType::kInt8: return Convert<C>(static_cast<const int8_t*>(p)[i]);
    case DType::kUInt8: return Convert<C>(static_cast<const uint8_t*>(p)[i]);
    case DType::kInt16: return Convert<C>(static_cast<const int16_t*>(p)[i]);
    case DType::kUInt16: return Convert<C>(static_cast<const uint16_t*>(p)[i]);
    case DType::kInt32: return Convert<C>(static_cast<const int32_t*>(p)[i]);
    case DType::kUInt32: return Convert<C>(static_cast<const uint32_t*>(p)[i]);
    case DType::kInt64: return Convert<C>(static_cast<const int64_t*>(p)[i]);
    case DType::kUInt64: return Convert<C>(static_cast<const uint64_t*>(p)[i]);
    case DType::kBool: return static_cast<C>(static_cast<const uint8_t*>(p)[i] != 0 ? 1 : 0);
    default: return C(0);
  }
}

// Compute type C -> element type D.
template <typename D, typename C>
__device__ __forceinline__ D Narrow(C v) {
  if constexpr (std::is_floating_point<D>::value) {
    return static_cast<D>(v);
  } else if constexpr (std::is_floating_point<C>::value) {
    return FloatToInteger<D>(static_cast<double>(v));
  } else {
    return static_cast<D>(v);
  }
}

template <typename C>
__device__ __forceinline__ void Store(void* p, DType d, int64_t i, C v) {
  switch (d) {
    case DType::kFloat32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::kFloat16:
      static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v));
      break;
    case DType::kBFloat16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v));
      break;
    case DType::kFloat64: static_cast<double*>(p)[i] = static_cast<double>(v); break;
    case DType::kInt8: static_cast<int8_t*>(p)[i] = Narrow<int8_t>(v); break;
    case DType::kUInt8: static_cast<uint8_t*>(p)[i] = Narrow<uint8_t>(v); break;
    case DType::kInt16: static_cast<int16_t*>(p)[i] = Narrow<int16_t>(v); break;
    case DType::kUInt16: static_cast<uint16_t*>(p)[i] = Narrow<uint16_t>(v); break;
    case DType::kInt32: static_cast<int32_t*>(p)[i] = Narrow<int32_t>(v); break;
    case DType::kUInt32: static_cast<uint32_t*>(p)[i] = Narrow<uint32_t>(v); break;
    case DType::kInt64: static_cast<int64_t*>(p)[i] = Narrow<int64_t>(v); break;
    case DType::kUInt64: static_cast<uint64_t*>(p)[i] = Narrow<uint64_t>(v); break;
    case DType::kBool: static_cast<uint8_t*>(p)[i] = v != C(0) ? 1 : 0; break;
    default: break;
  }
}

// Wraps an integer compute value to dtype d (and back).
template <typename C>
__device__ __forceinline__ C WrapTo(C v, DType d) {
  if constexpr (std::is_floating_point<C>::value) {
    return v;
  } else {
    switch (d) {
      case DType::kInt8: return static_cast<C>(static_cast<int8_t>(v));
      case DType::kUInt8: return static_cast<C>(static_cast<uint8_t>(v));
      case DType::kInt16: return static_cast<C>(static_cast<int16_t>(v));
      case DType::kUInt16: return static_cast<C>(static_cast<uint16_t>(v));
      case DType::kInt32: return static_cast<C>(static_cast<int32_t>(v));
      case DType::kUInt32: return static_cast<C>(static_cast<uint32_t>(v));
      default: return v;
    }
  }
}

// V-wide dispatch: one switch on the (uniform) op, then a loop over V
// elements with the op known at compile time, so the per-element cost is the
// operation alone.
#define KILN_EW_UNARY_OPS(X)                                                                   \
  X(kIdentity) X(kRelu) X(kLeakyRelu) X(kSigmoid) X(kHardSigmoid) X(kHardSwish) X(kTanh)       \
  X(kElu) X(kSelu) X(kCelu) X(kGeluErf) X(kGeluTanh) X(kErf) X(kExp) X(kLog) X(kSqrt)           \
  X(kReciprocal) X(kNeg) X(kAbs) X(kSin) X(kCos) X(kFloor) X(kCeil) X(kRound) X(kSign)         \
  X(kSoftplus) X(kSoftsign) X(kMish) X(kThresholdedRelu) X(kIsNaN) X(kIsInf) X(kNot)           \
  X(kBitwiseNot) X(kClipConst)
#define KILN_EW_BINARY_OPS(X)                                                                  \
  X(kAdd) X(kSub) X(kMul) X(kDiv) X(kPow) X(kFmod) X(kMod) X(kMax) X(kMin) X(kEqual) X(kLess) \
  X(kGreater) X(kLessOrEqual) X(kGreaterOrEqual) X(kAnd) X(kOr) X(kXor) X(kBitwiseAnd)         \
  X(kBitwiseOr) X(kBitwiseXor) X(kPRelu) X(kClipLow) X(kClipHigh)
#define KILN_EW_TERNARY_OPS(X) X(kWhere) X(kClip) X(kMulAdd) X(kQuantize) X(kDequantize)

template <typename C, int V>
__device__ __forceinline__ void UnaryV(Op op, const C* a, C p0, C p1, C* r) {
  switch (op) {
#define KILN_EW_CASE(o)                                                   \
  case Op::o:                                                             \
    _Pragma("unroll") for (int j = 0; j < V; ++j) r[j] = Unary<C>(Op::o, a[j], p0, p1); \
    break;
    KILN_EW_UNARY_OPS(KILN_EW_CASE)
#undef KILN_EW_CASE
    default:
#pragma unroll
      for (int j = 0; j < V; ++j) r[j] = C(0);
  }
}

template <typename C, int V>
__device__ __forceinline__ void BinaryV(Op op, const C* a, const C* b, C* r) {
  switch (op) {
#define KILN_EW_CASE(o)                                                   \
  case Op::o:                                                             \
    _Pragma("unroll") for (int j = 0; j < V; ++j) r[j] = Binary<C>(Op::o, a[j], b[j]); \
    break;
    KILN_EW_BINARY_OPS(KILN_EW_CASE)
#undef KILN_EW_CASE
    default:
#pragma unroll
      for (int j = 0; j < V; ++j) r[j] = C(0);
  }
}

template <typename C, int V>
__device__ __forceinline__ void TernaryV(Op op, const C* a, const C* b, const C* c, C p0, C p1,
                                         C* r) {
  switch (op) {
#define KILN_EW_CASE(o)                                                                  \
  case Op::o:                                                                            \
    _Pragma("unroll") for (int j = 0; j < V; ++j) r[j] = Ternary<C>(Op::o, a[j], b[j], c[j], p0, p1); \
    break;
    KILN_EW_TERNARY_OPS(KILN_EW_CASE)
#undef KILN_EW_CASE
    default:
#pragma unroll
      for (int j = 0; j < V; ++j) r[j] = C(0);
  }
}

__device__ __forceinline__ int Arity(Op op) {
  const int code = static_cast<int>(op);
  if (code <= static_cast<int>(Op::kLastUnary)) return 1;
  if (code <= static_cast<int>(Op::kLastBinary)) return 2;
  return 3;
}

// ---- Indexing ----

__device__ __forceinline__ uint32_t FastDiv(uint32_t n, uint32_t magic, uint32_t shift) {
  return (__umulhi(n, magic) + n) >> shift;
}

// Offsets of output element i in every input.
template <int N = kMaxInputs>
__device__ __forceinline__ void Offsets(const Indexing& ix, int64_t i, int64_t* off) {
  if (ix.flat) {
#pragma unroll
    for (int k = 0; k < N; ++k)
      if (k < ix.num_inputs) off[k] = ix.scalar[k] ? 0 : i;
    return;
  }
  if (ix.index32) {
    uint32_t o[N];
#pragma unroll
    for (int k = 0; k < N; ++k) o[k] = 0;
    uint32_t rem = static_cast<uint32_t>(i);
    for (int d = ix.rank - 1; d >= 1; --d) {
      const uint32_t q = FastDiv(rem, ix.div_magic[d], ix.div_shift[d]);
      const uint32_t coord = rem - q * static_cast<uint32_t>(ix.dims[d]);
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (k < ix.num_inputs) o[k] += coord * static_cast<uint32_t>(ix.strides[k][d]);
      rem = q;
    }
#pragma unroll
    for (int k = 0; k < N; ++k)
      if (k < ix.num_inputs) off[k] = o[k] + rem * static_cast<uint32_t>(ix.strides[k][0]);
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
  int64_t rem = i;
  for (int d = ix.rank - 1; d >= 1; --d) {
    const int64_t q = rem / ix.dims[d];
    const int64_t coord = rem - q * ix.dims[d];
#pragma unroll
    for (int k = 0; k < N; ++k)
      if (k < ix.num_inputs) off[k] += coord * ix.strides[k][d];
    rem = q;
  }
#pragma unroll
  for (int k = 0; k < N; ++k)
    if (k < ix.num_inputs) off[k] += rem * ix.strides[k][0];
}

// ---- The N-ary kernel ----

// r = the op over V elements of v[0..n) (binary ops fold left to right).
template <typename C, int V, int N = kMaxInputs>
__device__ __forceinline__ void EvalNaryV(const NaryParams& p, int n, C (*v)[V], C* r) {
  const C p0 = static_cast<C>(p.p0), p1 = static_cast<C>(p.p1);
  const int arity = Arity(p.op);
  if (arity == 1) {
    UnaryV<C, V>(p.op, v[0], p0, p1, r);
    return;
  }
  if (arity == 3) {
    if constexpr (N >= 3) TernaryV<C, V>(p.op, v[0], v[1], v[2], p0, p1, r);
    return;
  }
#pragma unroll
  for (int j = 0; j < V; ++j) r[j] = v[0][j];
#pragma unroll
  for (int k = 1; k < N; ++k)
    if (k < n) BinaryV<C, V>(p.op, r, v[k], r);
  if constexpr (std::is_floating_point<C>::value) {
    if (p.mean_count > 0) {
      const C scale = Div(C(1), static_cast<C>(p.mean_count));
#pragma unroll
      for (int j = 0; j < V; ++j) r[j] = Mul(r[j], scale);
    }
  }
}

// Loads V elements at offsets off[j] (one dtype switch for all of them).
template <typename C, int V>
__device__ __forceinline__ void LoadV(const void* p, DType d, const int64_t* off, int count,
                                      C* v) {
#define KILN_EW_LOAD(DT, S, EXPR)                                       \
  case DT: {                                                            \
    const S* q = static_cast<const S*>(p);                              \
    _Pragma("unroll") for (int j = 0; j < V; ++j) {                     \
      v[j] = C(0);                                                      \
      if (j < count) { const S x = q[off[j]]; v[j] = EXPR; }            \
    }                                                                   \
    break;                                                              \
  }
  switch (d) {
    KILN_EW_LOAD(DType::kFloat32, float, Convert<C>(x))
    KILN_EW_LOAD(DType::kFloat16, __half, Convert<C>(__half2float(x)))
    KILN_EW_LOAD(DType::kBFloat16, __nv_bfloat16, Convert<C>(__bfloat162float(x)))
    KILN_EW_LOAD(DType::kFloat64, double, Convert<C>(x))
    KILN_EW_LOAD(DType::kInt8, int8_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kUInt8, uint8_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kInt16, int16_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kUInt16, uint16_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kInt32, int32_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kUInt32, uint32_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kInt64, int64_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kUInt64, uint64_t, Convert<C>(x))
    KILN_EW_LOAD(DType::kBool, uint8_t, static_cast<C>(x != 0 ? 1 : 0))
    default:
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = C(0);
  }
#undef KILN_EW_LOAD
}

// Stores elements i0 .. i0+count-1 (count <= V).
template <typename C, int V>
__device__ __forceinline__ void StoreV(void* p, DType d, int64_t i0, int count, const C* v) {
#define KILN_EW_STORE(DT, S, EXPR)                                      \
  case DT: {                                                            \
    S* q = static_cast<S*>(p) + i0;                                     \
    _Pragma("unroll") for (int j = 0; j < V; ++j) {                     \
      if (j < count) { const C x = v[j]; q[j] = EXPR; }                 \
    }                                                                   \
    break;                                                              \
  }
  switch (d) {
    KILN_EW_STORE(DType::kFloat32, float, static_cast<float>(x))
    KILN_EW_STORE(DType::kFloat16, __half, __float2half_rn(static_cast<float>(x)))
    KILN_EW_STORE(DType::kBFloat16, __nv_bfloat16, __float2bfloat16_rn(static_cast<float>(x)))
    KILN_EW_STORE(DType::kFloat64, double, static_cast<double>(x))
    KILN_EW_STORE(DType::kInt8, int8_t, Narrow<int8_t>(x))
    KILN_EW_STORE(DType::kUInt8, uint8_t, Narrow<uint8_t>(x))
    KILN_EW_STORE(DType::kInt16, int16_t, Narrow<int16_t>(x))
    KILN_EW_STORE(DType::kUInt16, uint16_t, Narrow<uint16_t>(x))
    KILN_EW_STORE(DType::kInt32, int32_t, Narrow<int32_t>(x))
    KILN_EW_STORE(DType::kUInt32, uint32_t, Narrow<uint32_t>(x))
    KILN_EW_STORE(DType::kInt64, int64_t, Narrow<int64_t>(x))
    KILN_EW_STORE(DType::kUInt64, uint64_t, Narrow<uint64_t>(x))
    KILN_EW_STORE(DType::kBool, uint8_t, static_cast<uint8_t>(x != C(0) ? 1 : 0))
    default: break;
  }
#undef KILN_EW_STORE
}

// Elements per thread and iteration of the general (strided) kernels.
constexpr int kGeneralV = 4;

template <typename C>
__global__ void NaryKernel(NaryParams p, Indexing ix, Pointers in, void* out) {
  constexpr int V = kGeneralV;
  const int n = ix.num_inputs;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
       base < ix.numel; base += stride) {
    const int count = static_cast<int>(ix.numel - base < V ? ix.numel - base : V);
    int64_t off[V][kMaxInputs];
#pragma unroll
    for (int j = 0; j < V; ++j) Offsets(ix, j < count ? base + j : base, off[j]);
    C v[kMaxInputs][V];
#pragma unroll
    for (int k = 0; k < kMaxInputs; ++k) {
      if (k < n) {
        int64_t offk[V];
#pragma unroll
        for (int j = 0; j < V; ++j) offk[j] = off[j][k];
        LoadV<C, V>(in.in[k], p.in_dtypes[k], offk, count, v[k]);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) v[k][j] = C(0);
      }
    }
    if (p.wrap_input1 != DType::kUndefined) {
#pragma unroll
      for (int j = 0; j < V; ++j) v[1][j] = WrapTo<C>(v[1][j], p.wrap_input1);
    }
    C r[V];
    EvalNaryV<C, V>(p, n, v, r);
    StoreV<C, V>(out, p.out_dtype, base, count, r);
  }
}

// One input laid out like the output, dtypes that differ (a Cast, or a unary
// op whose output Cast was folded in): one element per thread and iteration,
// no offset math. The general kernel's per-thread arrays for eight inputs
// made a 16K-element int64 -> float16 Cast take ~28 us on an H200.
template <typename C>
__global__ void FlatUnaryKernel(NaryParams p, int64_t numel, const void* in, void* out) {
  const C p0 = static_cast<C>(p.p0), p1 = static_cast<C>(p.p1);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel;
       i += stride) {
    const C v = Load<C>(in, p.in_dtypes[0], i);
    C r;
    UnaryV<C, 1>(p.op, &v, p0, p1, &r);
    Store<C>(out, p.out_dtype, i, r);
  }
}

template <typename C>
void LaunchFlatUnary(const NaryParams& params, const Indexing& ix, const Pointers& inputs,
                     void* out, cudaStream_t stream) {
  FlatUnaryKernel<C><<<BlocksFor(ix.numel), kBlock, 0, stream>>>(params, ix.numel, inputs.in[0],
                                                                 out);
}

// ---- Vectorized float path (flat indexing, one storage type T) ----

template <typename T>
__device__ __forceinline__ float ToFloat(T v);
template <>
__device__ __forceinline__ float ToFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <typename T>
struct alignas(16) Vec {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

// Loads the V elements of vector i of every input (scalars broadcast).
template <typename T, int V, int N>
__device__ __forceinline__ void LoadVecInputs(const Indexing& ix, const Pointers& in,
                                              const float* scalar, int64_t i,
                                              float (*v)[V]) {
#pragma unroll
  for (int k = 0; k < N; ++k) {
    if (k < ix.num_inputs && !ix.scalar[k]) {
      const Vec<T> loaded = static_cast<const Vec<T>*>(in.in[k])[i];
#pragma unroll
      for (int j = 0; j < V; ++j) v[k][j] = ToFloat(loaded.v[j]);
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) v[k][j] = scalar[k];
    }
  }
}

// Loads elements i0 .. i0+count-1 of every input (flat indexing).
template <typename T, int V, int N>
__device__ __forceinline__ void LoadTailInputs(const Indexing& ix, const Pointers& in,
                                               const float* scalar, int64_t i0, int count,
                                               float (*v)[V]) {
#pragma unroll
  for (int k = 0; k < N; ++k) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      v[k][j] = scalar[k];
      if (k < ix.num_inputs && !ix.scalar[k] && j < count)
        v[k][j] = ToFloat(static_cast<const T*>(in.in[k])[i0 + j]);
    }
  }
}

template <typename T, int N>
__device__ __forceinline__ void LoadScalars(const Indexing& ix, const Pointers& in,
                                            float* scalar) {
#pragma unroll
  for (int k = 0; k < N; ++k)
    scalar[k] = (k < ix.num_inputs && ix.scalar[k]) ? ToFloat(static_cast<const T*>(in.in[k])[0])
                                                    : 0.f;
}

// Requires ix.flat; full inputs and the output 16-byte aligned. N: the
// number of inputs (exact for N < kMaxInputs, at most N otherwise).
template <typename T, int N>
__global__ void NaryVecKernel(NaryParams p, Indexing ix, Pointers in, void* out) {
  constexpr int V = Vec<T>::kSize;
  const int n = ix.num_inputs;
  float scalar[N];
  LoadScalars<T, N>(ix, in, scalar);
  const int64_t nvec = ix.numel / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < nvec; i += stride) {
    float v[N][V];
    LoadVecInputs<T, V, N>(ix, in, scalar, i, v);
    float r[V];
    EvalNaryV<float, V, N>(p, n, v, r);
    Vec<T> result;
#pragma unroll
    for (int j = 0; j < V; ++j) result.v[j] = FromFloat<T>(r[j]);
    static_cast<Vec<T>*>(out)[i] = result;
  }
  // The last numel % V elements: one thread.
  const int64_t tail = nvec * V;
  if (tid == 0 && tail < ix.numel) {
    const int count = static_cast<int>(ix.numel - tail);
    float v[N][V];
    LoadTailInputs<T, V, N>(ix, in, scalar, tail, count, v);
    float r[V];
    EvalNaryV<float, V, N>(p, n, v, r);
    for (int j = 0; j < count; ++j) static_cast<T*>(out)[tail + j] = FromFloat<T>(r[j]);
  }
}

// Strided (broadcast) indexing, every input and the output of storage type T.
template <typename T, int N>
__global__ void NaryStridedKernel(NaryParams p, Indexing ix, Pointers in, T* out) {
  constexpr int V = kGeneralV;
  const int n = ix.num_inputs;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
       base < ix.numel; base += stride) {
    const int count = static_cast<int>(ix.numel - base < V ? ix.numel - base : V);
    float v[N][V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      int64_t off[N];
      Offsets<N>(ix, j < count ? base + j : base, off);
#pragma unroll
      for (int k = 0; k < N; ++k)
        v[k][j] = k < n ? ToFloat(static_cast<const T*>(in.in[k])[off[k]]) : 0.f;
    }
    float r[V];
    EvalNaryV<float, V, N>(p, n, v, r);
#pragma unroll
    for (int j = 0; j < V; ++j)
      if (j < count) out[base + j] = FromFloat<T>(r[j]);
  }
}

// ---- The fused program interpreter ----

// Runs the program on V elements at once: each instruction is decoded and
// dispatched once, then applied to the V elements (registers regs[r][0..V)).
template <int V>
__device__ __forceinline__ void RunProgram(const Program& prog, float (*regs)[V], float* result) {
  for (int pc = 0; pc < prog.num_instructions; ++pc) {
    const Op op = static_cast<Op>(prog.op[pc]);
    const int arity = Arity(op);
    const int ia = prog.a[pc], ib = prog.b[pc], ic = prog.c[pc];
    float a[V], b[V], c[V], r[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      a[j] = ia >= 0 ? regs[ia][j] : prog.imm[-1 - ia];
      b[j] = 0.f;
      c[j] = 0.f;
    }
    if (arity >= 2) {
#pragma unroll
      for (int j = 0; j < V; ++j) b[j] = ib >= 0 ? regs[ib][j] : prog.imm[-1 - ib];
    }
    if (arity >= 3) {
#pragma unroll
      for (int j = 0; j < V; ++j) c[j] = ic >= 0 ? regs[ic][j] : prog.imm[-1 - ic];
    }
    if (arity == 1) {
      UnaryV<float, V>(op, a, prog.p0[pc], prog.p1[pc], r);
    } else if (arity == 2) {
      BinaryV<float, V>(op, a, b, r);
    } else {
      TernaryV<float, V>(op, a, b, c, prog.p0[pc], prog.p1[pc], r);
    }
    const int dst = prog.dst[pc];
#pragma unroll
    for (int j = 0; j < V; ++j) regs[dst][j] = r[j];
  }
#pragma unroll
  for (int j = 0; j < V; ++j) result[j] = regs[prog.output][j];
}

template <typename T, int N>
__global__ void FusedKernel(Program prog, Indexing ix, Pointers in, T* out) {
  constexpr int V = kGeneralV;
  const int n = ix.num_inputs;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * V;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
       base < ix.numel; base += stride) {
    const int count = static_cast<int>(ix.numel - base < V ? ix.numel - base : V);
    float regs[kMaxRegisters][V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      int64_t off[N];
      Offsets<N>(ix, j < count ? base + j : base, off);
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (k < n) regs[k][j] = ToFloat(static_cast<const T*>(in.in[k])[off[k]]);
    }
    float r[V];
    RunProgram<V>(prog, regs, r);
#pragma unroll
    for (int j = 0; j < V; ++j)
      if (j < count) out[base + j] = FromFloat<T>(r[j]);
  }
}

template <typename T, int N>
__global__ void FusedVecKernel(Program prog, Indexing ix, Pointers in, T* out) {
  constexpr int V = Vec<T>::kSize;
  const int n = ix.num_inputs;
  float scalar[N];
  LoadScalars<T, N>(ix, in, scalar);
  const int64_t nvec = ix.numel / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < nvec; i += stride) {
    float regs[kMaxRegisters][V];
    {
      float v[N][V];
      LoadVecInputs<T, V, N>(ix, in, scalar, i, v);
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (k < n) {
#pragma unroll
          for (int j = 0; j < V; ++j) regs[k][j] = v[k][j];
        }
    }
    float r[V];
    RunProgram<V>(prog, regs, r);
    Vec<T> result;
#pragma unroll
    for (int j = 0; j < V; ++j) result.v[j] = FromFloat<T>(r[j]);
    reinterpret_cast<Vec<T>*>(out)[i] = result;
  }
  const int64_t tail = nvec * V;
  if (tid == 0 && tail < ix.numel) {
    const int count = static_cast<int>(ix.numel - tail);
    float regs[kMaxRegisters][V];
    {
      float v[N][V];
      LoadTailInputs<T, V, N>(ix, in, scalar, tail, count, v);
#pragma unroll
      for (int k = 0; k < N; ++k)
        if (k < n) {
#pragma unroll
          for (int j = 0; j < V; ++j) regs[k][j] = v[k][j];
        }
    }
    float r[V];
    RunProgram<V>(prog, regs, r);
    for (int j = 0; j < count; ++j) out[tail + j] = FromFloat<T>(r[j]);
  }
}

// ---- BatchNormalization parameters ----

template <typename C>
__global__ void BatchNormPrepareKernel(DType dtype, int64_t count, double epsilon,
                                       const void* scale, const void* bias, const void* mean,
                                       const void* var, C* factor, C* shift) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    const double s = Load<double>(scale, dtype, i);
    const double v = Load<double>(var, dtype, i);
    const C f = static_cast<C>(__ddiv_rn(s, sqrt(__dadd_rn(v, epsilon))));
    factor[i] = f;
    shift[i] = Sub(Load<C>(bias, dtype, i), Mul(Load<C>(mean, dtype, i), f));
  }
}

bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Whether the vectorized flat path applies to these pointers.
bool CanVectorize(const Indexing& ix, const Pointers& in, const void* out) {
  if (!ix.flat || !Aligned16(out)) return false;
  for (int k = 0; k < ix.num_inputs; ++k)
    if (!ix.scalar[k] && !Aligned16(in.in[k])) return false;
  return true;
}

}  // namespace

// ---- Host side ----

Indexing MakeIndexing(const std::vector<int64_t>& out_dims,
                      const std::vector<std::vector<int64_t>>& in_strides) {
  const size_t rank = out_dims.size();
  const size_t n = in_strides.size();
  KILN_CHECK(n <= static_cast<size_t>(kMaxInputs), "elementwise kernel: ", n,
             " inputs (at most ", kMaxInputs, ")");
  for (const auto& s : in_strides)
    KILN_CHECK(s.size() == rank, "elementwise kernel: stride rank mismatch");
  Indexing ix;
  ix.num_inputs = static_cast<int>(n);
  ix.numel = 1;
  for (int64_t d : out_dims) ix.numel *= d;

  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> strides(n);
  for (size_t d = 0; d < rank; ++d) {
    if (out_dims[d] == 1) continue;
    bool mergeable = !dims.empty();
    for (size_t k = 0; k < n && mergeable; ++k)
      mergeable = strides[k].back() == in_strides[k][d] * out_dims[d];
    if (mergeable) {
      dims.back() *= out_dims[d];
      for (size_t k = 0; k < n; ++k) strides[k].back() = in_strides[k][d];
    } else {
      dims.push_back(out_dims[d]);
      for (size_t k = 0; k < n; ++k) strides[k].push_back(in_strides[k][d]);
    }
  }
  if (dims.empty()) {
    dims.push_back(1);
    for (size_t k = 0; k < n; ++k) strides[k].push_back(0);
  }
  KILN_CHECK(dims.size() <= static_cast<size_t>(kMaxRank), "elementwise kernel: rank ",
             dims.size(), " after merging exceeds ", kMaxRank);
  ix.rank = static_cast<int>(dims.size());
  for (size_t d = 0; d < dims.size(); ++d) {
    ix.dims[d] = dims[d];
    for (size_t k = 0; k < n; ++k) ix.strides[k][d] = strides[k][d];
  }

  // Flat: each input either walks the output's contiguous strides or is one element.
  std::vector<int64_t> contiguous(dims.size(), 1);
  for (size_t d = dims.size() - 1; d-- > 0;) contiguous[d] = contiguous[d + 1] * dims[d + 1];
  ix.flat = true;
  for (size_t k = 0; k < n; ++k) {
    bool all_zero = true, full = true;
    for (size_t d = 0; d < dims.size(); ++d) {
      all_zero &= strides[k][d] == 0;
      full &= strides[k][d] == contiguous[d];
    }
    ix.scalar[k] = all_zero ? 1 : 0;
    if (!all_zero && !full) ix.flat = false;
  }

  constexpr int64_t kLimit = INT32_MAX;
  ix.index32 = ix.numel <= kLimit;
  for (size_t k = 0; k < n && ix.index32; ++k) {
    int64_t max_offset = 0;
    for (size_t d = 0; d < dims.size(); ++d) max_offset += (dims[d] - 1) * strides[k][d];
    ix.index32 = max_offset <= kLimit;
  }
  if (ix.index32) {
    for (size_t d = 0; d < dims.size(); ++d) {
      const uint64_t divisor = static_cast<uint64_t>(std::max<int64_t>(dims[d], 1));
      uint32_t shift = 0;
      while (shift < 32 && (uint64_t{1} << shift) < divisor) ++shift;
      const uint64_t magic = ((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1;
      ix.div_magic[d] = static_cast<uint32_t>(magic);
      ix.div_shift[d] = shift;
    }
  }
  return ix;
}

bool IsFusibleOp(Op op) {
  switch (op) {
    case Op::kIsNaN:
    case Op::kIsInf:
    case Op::kNot:
    case Op::kBitwiseNot:
      return false;
    default: break;
  }
  if (IsUnaryOp(op)) return true;
  switch (op) {
    case Op::kAdd:
    case Op::kSub:
    case Op::kMul:
    case Op::kDiv:
    case Op::kPow:
    case Op::kFmod:
    case Op::kMax:
    case Op::kMin:
    case Op::kPRelu:
    case Op::kClipLow:
    case Op::kClipHigh:
    case Op::kClip:
    case Op::kMulAdd:
      return true;
    default: return false;
  }
}

namespace {

// Launches kernel<T, N> with N the input count (1, 2, 3 exactly, else up to 8).
#define KILN_EW_LAUNCH_BY_N(KERNEL, T, n, blocks, stream, ...)                       \
  do {                                                                              \
    switch (n) {                                                                    \
      case 1: KERNEL<T, 1><<<blocks, kBlock, 0, stream>>>(__VA_ARGS__); break;      \
      case 2: KERNEL<T, 2><<<blocks, kBlock, 0, stream>>>(__VA_ARGS__); break;      \
      case 3: KERNEL<T, 3><<<blocks, kBlock, 0, stream>>>(__VA_ARGS__); break;      \
      default: KERNEL<T, kMaxInputs><<<blocks, kBlock, 0, stream>>>(__VA_ARGS__); break; \
    }                                                                               \
  } while (0)

template <typename T>
void LaunchSameFloat(const NaryParams& params, const Indexing& ix, const Pointers& inputs,
                     void* out, cudaStream_t stream) {
  const int n = ix.num_inputs;
  if (CanVectorize(ix, inputs, out)) {
    const int64_t v = 16 / static_cast<int64_t>(sizeof(T));
    const int blocks = BlocksFor(std::max<int64_t>(ix.numel / v, 1));
    KILN_EW_LAUNCH_BY_N(NaryVecKernel, T, n, blocks, stream, params, ix, inputs, out);
  } else {
    const int blocks = BlocksFor((ix.numel + kGeneralV - 1) / kGeneralV);
    KILN_EW_LAUNCH_BY_N(NaryStridedKernel, T, n, blocks, stream, params, ix, inputs,
                        static_cast<T*>(out));
  }
}

template <typename T>
void LaunchFusedTyped(const Program& program, const Indexing& ix, const Pointers& inputs,
                      void* out, cudaStream_t stream) {
  if (CanVectorize(ix, inputs, out)) {
    const int64_t v = 16 / static_cast<int64_t>(sizeof(T));
    const int blocks = BlocksFor(std::max<int64_t>(ix.numel / v, 1));
    KILN_EW_LAUNCH_BY_N(FusedVecKernel, T, ix.num_inputs, blocks, stream, program, ix, inputs,
                        static_cast<T*>(out));
  } else {
    const int blocks = BlocksFor((ix.numel + kGeneralV - 1) / kGeneralV);
    KILN_EW_LAUNCH_BY_N(FusedKernel, T, ix.num_inputs, blocks, stream, program, ix, inputs,
                        static_cast<T*>(out));
  }
}

}  // namespace

void LaunchNary(const NaryParams& params, const Indexing& indexing, const Pointers& inputs,
                void* out, cudaStream_t stream) {
  if (indexing.numel == 0) return;
  bool same_float = params.compute == Compute::kFloat32;
  const DType t = params.out_dtype;
  same_float &= t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16;
  for (int k = 0; k < indexing.num_inputs && same_float; ++k)
    same_float = params.in_dtypes[k] == t;
  same_float &= params.wrap_input1 == DType::kUndefined && indexing.num_inputs >= 1;
  if (same_float) {
    switch (t) {
      case DType::kFloat32: LaunchSameFloat<float>(params, indexing, inputs, out, stream); break;
      case DType::kFloat16: LaunchSameFloat<__half>(params, indexing, inputs, out, stream); break;
      default: LaunchSameFloat<__nv_bfloat16>(params, indexing, inputs, out, stream); break;
    }
    KILN_CUDA_CHECK(cudaGetLastError());
    return;
  }
  if (IsUnaryOp(params.op) && indexing.num_inputs == 1 && indexing.flat && !indexing.scalar[0] &&
      params.wrap_input1 == DType::kUndefined && params.mean_count == 0) {
    switch (params.compute) {
      case Compute::kFloat32: LaunchFlatUnary<float>(params, indexing, inputs, out, stream); break;
      case Compute::kFloat64: LaunchFlatUnary<double>(params, indexing, inputs, out, stream); break;
      case Compute::kInt64: LaunchFlatUnary<int64_t>(params, indexing, inputs, out, stream); break;
      case Compute::kUInt64:
        LaunchFlatUnary<uint64_t>(params, indexing, inputs, out, stream);
        break;
    }
    KILN_CUDA_CHECK(cudaGetLastError());
    return;
  }
  const int blocks = BlocksFor((indexing.numel + kGeneralV - 1) / kGeneralV);
  switch (params.compute) {
    case Compute::kFloat32:
      NaryKernel<float><<<blocks, kBlock, 0, stream>>>(params, indexing, inputs, out);
      break;
    case Compute::kFloat64:
      NaryKernel<double><<<blocks, kBlock, 0, stream>>>(params, indexing, inputs, out);
      break;
    case Compute::kInt64:
      NaryKernel<int64_t><<<blocks, kBlock, 0, stream>>>(params, indexing, inputs, out);
      break;
    case Compute::kUInt64:
      NaryKernel<uint64_t><<<blocks, kBlock, 0, stream>>>(params, indexing, inputs, out);
      break;
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

void LaunchBatchNormPrepare(DType dtype, Compute compute, int64_t count, double epsilon,
                            const void* scale, const void* bias, const void* mean,
                            const void* var, void* factor, void* shift, cudaStream_t stream) {
  if (count == 0) return;
  const int blocks = BlocksFor(count);
  if (compute == Compute::kFloat64) {
    BatchNormPrepareKernel<double><<<blocks, kBlock, 0, stream>>>(
        dtype, count, epsilon, scale, bias, mean, var, static_cast<double*>(factor),
        static_cast<double*>(shift));
  } else {
    BatchNormPrepareKernel<float><<<blocks, kBlock, 0, stream>>>(
        dtype, count, epsilon, scale, bias, mean, var, static_cast<float*>(factor),
        static_cast<float*>(shift));
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

void LaunchFused(DType dtype, const Program& program, const Indexing& indexing,
                 const Pointers& inputs, void* out, cudaStream_t stream) {
  if (indexing.numel == 0) return;
  switch (dtype) {
    case DType::kFloat32: LaunchFusedTyped<float>(program, indexing, inputs, out, stream); break;
    case DType::kFloat16: LaunchFusedTyped<__half>(program, indexing, inputs, out, stream); break;
    case DType::kBFloat16:
      LaunchFusedTyped<__nv_bfloat16>(program, indexing, inputs, out, stream);
      break;
    default: Fail("fused elementwise kernel: unsupported dtype ", DTypeName(dtype));
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace kiln::gpu::ew
