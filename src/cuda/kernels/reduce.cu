// Reductions, ArgMax/ArgMin, softmax family, LpNormalization and the
// normalizations. See reduce.h. Semantics follow src/cpu/reduce.cc and
// src/cpu/nn.cc (InstanceNormalization).
#include "cuda/kernels/reduce.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/dependent_launch.cuh"

namespace kiln::gpu::kernels {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxGrid = int64_t{1} << 20;  // Kernels use grid-stride loops.

template <typename T>
struct Tag {
  using type = T;
};

template <typename T>
struct IsFloatLike : std::false_type {};
template <>
struct IsFloatLike<float> : std::true_type {};
template <>
struct IsFloatLike<__half> : std::true_type {};
template <>
struct IsFloatLike<__nv_bfloat16> : std::true_type {};

// Compute type: float32 for float types, int64 for integers.
template <typename T>
using Val = std::conditional_t<IsFloatLike<T>::value, float, int64_t>;

template <typename T>
__device__ __forceinline__ Val<T> ToVal(T v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(v);
  } else {
    return static_cast<Val<T>>(v);
  }
}

template <typename T>
__device__ __forceinline__ Val<T> Load(const T* p) {
  return ToVal<T>(*p);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return static_cast<T>(v);
  }
}

// Rounds toward zero and saturates (NaN -> 0), like the CPU's FromDouble.
template <typename T>
__device__ __forceinline__ T SaturateFromDouble(double v) {
  if (isnan(v)) return T{0};
  if (v <= static_cast<double>(std::numeric_limits<T>::lowest()))
    return std::numeric_limits<T>::lowest();
  if (v >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(v);
}

__device__ __forceinline__ float Inf() { return __int_as_float(0x7f800000); }

__device__ __forceinline__ int64_t MapIndex(const IndexMap& m, int64_t i) {
  int64_t off = 0;
  for (int d = m.rank - 1; d >= 0; --d) {
    const int64_t s = m.sizes[d];
    off += (i % s) * m.strides[d];
    i /= s;
  }
  return off;
}

// Calls f(offset) for the reduced indices start, start + step, ... < count
// (count defaults to the plan's; 0 skips).
template <typename F>
__device__ __forceinline__ void ForReduced(const ReducePlan& p, int64_t start, int64_t step,
                                           F&& f, int64_t count = -1) {
  if (count < 0) count = p.count;
  if (p.reduced.rank == 1) {
    const int64_t s = p.reduced.strides[0];
    for (int64_t r = start; r < count; r += step) f(r * s);
  } else {
    for (int64_t r = start; r < count; r += step) f(MapIndex(p.reduced, r));
  }
}

// Reduces over aligned groups of kWidth lanes (a power of two <= 32). All
// 32 lanes of the warp must call it.
template <int kWidth = 32, typename Acc, typename F>
__device__ __forceinline__ Acc WarpAllReduce(Acc v, F combine) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) v = combine(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// kGroup <= 32: each aligned group of kGroup lanes reduces its own values.
// kGroup > 32: the whole block (blockDim.x == kGroup) reduces. Every thread
// gets its group's result; all threads of the block must call it. smem holds
// 32 values.
template <int kGroup, typename Acc, typename F>
__device__ __forceinline__ Acc GroupAllReduce(Acc v, F combine, Acc* smem) {
  v = WarpAllReduce<(kGroup < 32 ? kGroup : 32)>(v, combine);
  if constexpr (kGroup > 32) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // Earlier readers of smem are done.
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    v = smem[0];
    for (int i = 1; i < kGroup / 32; ++i) v = combine(v, smem[i]);
  }
  return v;
}

struct Plus {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return a + b;
  }
};

// NaN-propagating max/min (x != x only for NaN).
struct MaxCombine {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return (b > a || b != b) ? b : a;
  }
};
struct MinCombine {
  template <typename A>
  __device__ __forceinline__ A operator()(A a, A b) const {
    return (b < a || b != b) ? b : a;
  }
};

// ---------------------------------------------------------------------------
// Reduce*

template <typename T, ReduceOp kOp>
struct Reducer {
  using V = Val<T>;
  using Acc = V;
  static constexpr bool kFloat = IsFloatLike<T>::value;

  __device__ __forceinline__ Acc Init() const {
    if constexpr (kOp == ReduceOp::kProd) {
      return Acc(1);
    } else if constexpr (kOp == ReduceOp::kMax) {
      if constexpr (kFloat) return -Inf();
      else return static_cast<Acc>(std::numeric_limits<T>::lowest());
    } else if constexpr (kOp == ReduceOp::kMin) {
      if constexpr (kFloat) return Inf();
      else return static_cast<Acc>(std::numeric_limits<T>::max());
    } else {
      return Acc(0);
    }
  }
  __device__ __forceinline__ Acc Map(V v) const {
    if constexpr (kOp == ReduceOp::kL1) {
      return v < 0 ? -v : v;
    } else if constexpr (kOp == ReduceOp::kL2 || kOp == ReduceOp::kSumSquare) {
      return v * v;
    } else {
      return v;
    }
  }
  __device__ __forceinline__ Acc Combine(Acc a, Acc b) const {
    if constexpr (kOp == ReduceOp::kMax) {
      return MaxCombine()(a, b);
    } else if constexpr (kOp == ReduceOp::kMin) {
      return MinCombine()(a, b);
    } else if constexpr (kOp == ReduceOp::kProd) {
      if constexpr (kFloat) return a * b;
      // Wrapping multiplication without signed-overflow UB.
      else return static_cast<int64_t>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
    } else {
      if constexpr (kFloat) return a + b;
      else return static_cast<int64_t>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
    }
  }
  __device__ __forceinline__ T Finish(Acc a, int64_t count) const {
    if constexpr (kFloat) {
      float r = a;
      if constexpr (kOp == ReduceOp::kMean) r = a / static_cast<float>(count);
      if constexpr (kOp == ReduceOp::kL2) r = sqrtf(a);
      if constexpr (kOp == ReduceOp::kLogSum) r = logf(a);
      return FromFloat<T>(r);
    } else {
      if constexpr (kOp == ReduceOp::kMean) return count == 0 ? T{0} : static_cast<T>(a / count);
      if constexpr (kOp == ReduceOp::kL2) return SaturateFromDouble<T>(sqrt(static_cast<double>(a)));
      if constexpr (kOp == ReduceOp::kLogSum) return SaturateFromDouble<T>(log(static_cast<double>(a)));
      return static_cast<T>(a);
    }
  }
};

// LogSumExp: shift = max (or 0 when not finite), out = shift + log(sum(exp(x - shift))).
template <typename T>
struct Lse {
  static constexpr bool kFloat = IsFloatLike<T>::value;
  using Acc = std::conditional_t<kFloat, float, double>;
  __device__ __forceinline__ static Acc Shift(Val<T> m) {
    if constexpr (kFloat) return isfinite(m) ? m : 0.f;
    else return static_cast<double>(m);
  }
  __device__ __forceinline__ static Acc Exp(Acc v) {
    if constexpr (kFloat) return expf(v);
    else return exp(v);
  }
  __device__ __forceinline__ static T Finish(Acc shift, Acc sum) {
    if constexpr (kFloat) return FromFloat<T>(shift + logf(sum));
    else return SaturateFromDouble<T>(shift + log(sum));
  }
};

// One output per group of kGroup threads (8 or 32 lanes, or the whole
// block); used when the innermost memory dim is reduced. The loop runs over
// block-uniform bases so every thread takes part in each group reduction.
template <typename T, ReduceOp kOp, int kGroup>
__global__ void __launch_bounds__(256)
    ReduceRowsKernel(const T* __restrict__ x, T* __restrict__ y, const ReducePlan p) {
  using V = Val<T>;
  const int lane = static_cast<int>(threadIdx.x % kGroup);
  const int64_t per_block = blockDim.x / kGroup;
  const int64_t step = static_cast<int64_t>(gridDim.x) * per_block;
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * per_block; first < p.outputs;
       first += step) {
    const int64_t o = first + threadIdx.x / kGroup;
    const bool valid = o < p.outputs;
    const int64_t count = valid ? p.count : 0;
    const T* base = x + (valid ? MapIndex(p.kept, o) : 0);
    if constexpr (kOp == ReduceOp::kLogSumExp) {
      using L = Lse<T>;
      using Acc = typename L::Acc;
      __shared__ V smem_max[32];
      __shared__ Acc smem_sum[32];
      const Reducer<T, ReduceOp::kMax> mop;
      V m = mop.Init();
      ForReduced(
          p, lane, kGroup, [&](int64_t off) { m = mop.Combine(m, Load(base + off)); }, count);
      m = GroupAllReduce<kGroup>(m, MaxCombine(), smem_max);
      const Acc shift = L::Shift(m);
      Acc s = 0;
      ForReduced(
          p, lane, kGroup,
          [&](int64_t off) { s += L::Exp(static_cast<Acc>(Load(base + off)) - shift); }, count);
      s = GroupAllReduce<kGroup>(s, Plus(), smem_sum);
      if (lane == 0 && valid) y[o] = L::Finish(shift, s);
    } else {
      using R = Reducer<T, kOp>;
      using Acc = typename R::Acc;
      __shared__ Acc smem[32];
      const R op;
      Acc acc = op.Init();
      ForReduced(
          p, lane, kGroup, [&](int64_t off) { acc = op.Combine(acc, op.Map(Load(base + off))); },
          count);
      acc = GroupAllReduce<kGroup>(
          acc, [&](Acc a, Acc b) { return op.Combine(a, b); }, smem);
      if (lane == 0 && valid) y[o] = op.Finish(acc, p.count);
    }
  }
}

constexpr int kColX = 32, kColY = 8;

// Used when the innermost memory dim is kept: threadIdx.x walks 32
// consecutive outputs (coalesced), threadIdx.y splits the reduction.
template <typename T, ReduceOp kOp>
__global__ void __launch_bounds__(kColX* kColY)
    ReduceColumnsKernel(const T* __restrict__ x, T* __restrict__ y, const ReducePlan p) {
  using V = Val<T>;
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t tiles = (p.outputs + kColX - 1) / kColX;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t o = t * kColX + tx;
    const bool valid = o < p.outputs;
    const T* base = x + (valid ? MapIndex(p.kept, o) : 0);
    if constexpr (kOp == ReduceOp::kLogSumExp) {
      using L = Lse<T>;
      using Acc = typename L::Acc;
      __shared__ V max_tile[kColY][kColX];
      __shared__ Acc sum_tile[kColY][kColX];
      __shared__ Acc shifts[kColX];
      const Reducer<T, ReduceOp::kMax> mop;
      V m = mop.Init();
      if (valid) ForReduced(p, ty, kColY, [&](int64_t off) { m = mop.Combine(m, Load(base + off)); });
      max_tile[ty][tx] = m;
      __syncthreads();
      if (ty == 0) {
        for (int i = 1; i < kColY; ++i) m = mop.Combine(m, max_tile[i][tx]);
        shifts[tx] = L::Shift(m);
      }
      __syncthreads();
      const Acc shift = shifts[tx];
      Acc s = 0;
      if (valid)
        ForReduced(p, ty, kColY,
                   [&](int64_t off) { s += L::Exp(static_cast<Acc>(Load(base + off)) - shift); });
      sum_tile[ty][tx] = s;
      __syncthreads();
      if (ty == 0 && valid) {
        for (int i = 1; i < kColY; ++i) s += sum_tile[i][tx];
        y[o] = L::Finish(shift, s);
      }
      __syncthreads();
    } else {
      using R = Reducer<T, kOp>;
      using Acc = typename R::Acc;
      __shared__ Acc tile[kColY][kColX];
      const R op;
      Acc acc = op.Init();
      if (valid)
        ForReduced(p, ty, kColY,
                   [&](int64_t off) { acc = op.Combine(acc, op.Map(Load(base + off))); });
      tile[ty][tx] = acc;
      __syncthreads();
      if (ty == 0 && valid) {
        for (int i = 1; i < kColY; ++i) acc = op.Combine(acc, tile[i][tx]);
        y[o] = op.Finish(acc, p.count);
      }
      __syncthreads();
    }
  }
}

unsigned GridFor(int64_t blocks) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxGrid)));
}

template <typename T, ReduceOp kOp>
void LaunchReduceTyped(const T* x, T* y, const ReducePlan& p, cudaStream_t stream) {
  if (p.outputs == 0) return;
  if (!p.inner_reduced) {
    const int64_t tiles = (p.outputs + kColX - 1) / kColX;
    ReduceColumnsKernel<T, kOp><<<GridFor(tiles), dim3(kColX, kColY), 0, stream>>>(x, y, p);
  } else if (p.count <= 64) {
    ReduceRowsKernel<T, kOp, 8><<<GridFor((p.outputs + 31) / 32), 256, 0, stream>>>(x, y, p);
  } else if (p.count <= 4096) {
    ReduceRowsKernel<T, kOp, 32><<<GridFor((p.outputs + 7) / 8), 256, 0, stream>>>(x, y, p);
  } else {
    ReduceRowsKernel<T, kOp, 256><<<GridFor(p.outputs), 256, 0, stream>>>(x, y, p);
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

template <typename F>
void DispatchAll(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(Tag<float>{}); break;
    case DType::kFloat16: f(Tag<__half>{}); break;
    case DType::kBFloat16: f(Tag<__nv_bfloat16>{}); break;
    case DType::kInt32: f(Tag<int32_t>{}); break;
    case DType::kInt64: f(Tag<int64_t>{}); break;
    case DType::kInt8: f(Tag<int8_t>{}); break;
    case DType::kUInt8:
    case DType::kBool: f(Tag<uint8_t>{}); break;
    default: Fail("GPU reduction kernels do not support dtype ", DTypeName(dtype));
  }
}

template <typename F>
void DispatchFloat(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(Tag<float>{}); break;
    case DType::kFloat16: f(Tag<__half>{}); break;
    case DType::kBFloat16: f(Tag<__nv_bfloat16>{}); break;
    default: Fail("GPU kernel does not support dtype ", DTypeName(dtype));
  }
}

bool IsFloatDType(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

// ---------------------------------------------------------------------------
// ArgMax / ArgMin

// Whether candidate (v, k) beats (best, bi): strictly better value, or an
// equal value with the preferred index. Comparisons with NaN are false, so a
// NaN never wins and a NaN first element is never replaced (CPU semantics).
template <bool kMax, typename V>
__device__ __forceinline__ bool Beats(V v, int64_t k, V best, int64_t bi, bool select_last) {
  if (kMax ? v > best : v < best) return true;
  return v == best && (select_last ? k > bi : k < bi);
}

// Group-wide arg reduction; every thread ends with the winner.
template <int kGroup, bool kMax, typename V>
__device__ __forceinline__ void ArgGroupReduce(V& best, int64_t& bi, bool select_last, V* sv,
                                               int64_t* si) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const V ov = __shfl_xor_sync(kFullMask, best, o);
    const int64_t oi = __shfl_xor_sync(kFullMask, bi, o);
    if (Beats<kMax>(ov, oi, best, bi, select_last)) {
      best = ov;
      bi = oi;
    }
  }
  if constexpr (kGroup > 32) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) {
      sv[warp] = best;
      si[warp] = bi;
    }
    __syncthreads();
    best = sv[0];
    bi = si[0];
    for (int i = 1; i < kGroup / 32; ++i) {
      if (Beats<kMax>(sv[i], si[i], best, bi, select_last)) {
        best = sv[i];
        bi = si[i];
      }
    }
  }
}

// Arg-reduction of one contiguous row of n >= 1 elements by a group. Every
// lane starts from element 0 so a NaN there wins everywhere, as on the CPU.
template <typename T, bool kMax, int kGroup>
__device__ __forceinline__ int64_t ArgRow(const T* in, int64_t n, int lane, bool select_last,
                                          Val<T>* sv, int64_t* si) {
  using V = Val<T>;
  V best = Load(in);
  int64_t bi = 0;
  for (int64_t k = lane; k < n; k += kGroup) {
    const V v = Load(in + k);
    if (Beats<kMax>(v, k, best, bi, select_last)) {
      best = v;
      bi = k;
    }
  }
  ArgGroupReduce<kGroup, kMax>(best, bi, select_last, sv, si);
  return bi;
}

template <typename T, bool kMax, int kGroup>
__global__ void __launch_bounds__(256)
    ArgRowsKernel(const T* __restrict__ x, int64_t* __restrict__ y, int64_t rows, int64_t n,
                  bool select_last) {
  __shared__ Val<T> sv[32];
  __shared__ int64_t si[32];
  const int lane = kGroup == 32 ? static_cast<int>(threadIdx.x & 31) : static_cast<int>(threadIdx.x);
  const int64_t per_block = blockDim.x / kGroup;
  const int64_t step = static_cast<int64_t>(gridDim.x) * per_block;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * per_block + threadIdx.x / kGroup;
       row < rows; row += step) {
    const int64_t bi = ArgRow<T, kMax, kGroup>(x + row * n, n, lane, select_last, sv, si);
    if (lane == 0) y[row] = bi;
  }
}

// inner > 1: one thread per (outer, inner) position, sequential like the CPU.
template <typename T, bool kMax>
__global__ void ArgColumnsKernel(const T* __restrict__ x, int64_t* __restrict__ y, AxisView v,
                                 bool select_last) {
  using V = Val<T>;
  const int64_t total = v.outer * v.inner;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = i / v.inner, j = i % v.inner;
    const T* p = x + o * v.n * v.inner + j;
    V best = Load(p);
    int64_t bi = 0;
    for (int64_t k = 1; k < v.n; ++k) {
      const V value = Load(p + k * v.inner);
      const bool better = kMax ? value > best : value < best;
      if (better || (select_last && value == best)) {
        best = value;
        bi = k;
      }
    }
    y[i] = bi;
  }
}

// ---------------------------------------------------------------------------
// Softmax, LogSoftmax, Hardmax, LpNormalization

// kVec elements loaded/stored as one 16-byte (or kVec * sizeof(T)) access.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

bool Aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Softmax/LogSoftmax over rows of n <= 32 * kChunks * kVec elements kept in
// registers, one warp per row. n is a multiple of kVec and x/y are 16-byte
// aligned when kVec > 1.
template <typename T, int kVec, int kChunks, bool kLog>
__global__ void __launch_bounds__(128)
    SoftmaxWarpKernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n) {
  using P = Pack<T, kVec>;
  const int lane = threadIdx.x & 31;
  const int64_t per_block = blockDim.x / 32;
  const int64_t step = static_cast<int64_t>(gridDim.x) * per_block;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * per_block + threadIdx.x / 32; row < rows;
       row += step) {
    const T* in = x + row * n;
    T* out = y + row * n;
    float v[kChunks][kVec];
    float m = -Inf();
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t start = (static_cast<int64_t>(c) * 32 + lane) * kVec;
      if (start < n) {
        const P p = *reinterpret_cast<const P*>(in + start);
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          v[c][i] = ToVal<T>(p.v[i]);
          m = MaxCombine()(m, v[c][i]);
        }
      }
    }
    m = WarpAllReduce(m, MaxCombine());
    float s = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t start = (static_cast<int64_t>(c) * 32 + lane) * kVec;
      if (start < n) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          const float e = expf(v[c][i] - m);
          s += e;
          if constexpr (!kLog) v[c][i] = e;
        }
      }
    }
    s = WarpAllReduce(s, Plus());
    const float scale = 1.f / s;
    const float log_sum = logf(s);
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t start = (static_cast<int64_t>(c) * 32 + lane) * kVec;
      if (start < n) {
        P r;
#pragma unroll
        for (int i = 0; i < kVec; ++i)
          r.v[i] = FromFloat<T>(kLog ? (v[c][i] - m) - log_sum : v[c][i] * scale);
        *reinterpret_cast<P*>(out + start) = r;
      }
    }
  }
}

template <typename T, int kVec, bool kLog>
void LaunchSoftmaxWarp(int chunks, const T* x, T* y, int64_t rows, int64_t n,
                       cudaStream_t stream) {
  const unsigned grid = GridFor((rows + 3) / 4);
  switch (chunks) {
    case 1: SoftmaxWarpKernel<T, kVec, 1, kLog><<<grid, 128, 0, stream>>>(x, y, rows, n); break;
    case 2: SoftmaxWarpKernel<T, kVec, 2, kLog><<<grid, 128, 0, stream>>>(x, y, rows, n); break;
    case 4: SoftmaxWarpKernel<T, kVec, 4, kLog><<<grid, 128, 0, stream>>>(x, y, rows, n); break;
    default: SoftmaxWarpKernel<T, kVec, 8, kLog><<<grid, 128, 0, stream>>>(x, y, rows, n); break;
  }
}

template <typename T, AxisOp kOp, int kGroup>
__global__ void __launch_bounds__(256)
    AxisRowsKernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t n) {
  __shared__ float smem[32];
  __shared__ int64_t si[32];
  const int lane = kGroup == 32 ? static_cast<int>(threadIdx.x & 31) : static_cast<int>(threadIdx.x);
  const int64_t per_block = blockDim.x / kGroup;
  const int64_t step = static_cast<int64_t>(gridDim.x) * per_block;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * per_block + threadIdx.x / kGroup;
       row < rows; row += step) {
    const T* in = x + row * n;
    T* out = y + row * n;
    if constexpr (kOp == AxisOp::kSoftmax || kOp == AxisOp::kLogSoftmax) {
      float m = -Inf();
      for (int64_t k = lane; k < n; k += kGroup) m = MaxCombine()(m, Load(in + k));
      m = GroupAllReduce<kGroup>(m, MaxCombine(), smem);
      float s = 0.f;
      for (int64_t k = lane; k < n; k += kGroup) s += expf(Load(in + k) - m);
      s = GroupAllReduce<kGroup>(s, Plus(), smem);
      if constexpr (kOp == AxisOp::kSoftmax) {
        const float scale = 1.f / s;
        for (int64_t k = lane; k < n; k += kGroup)
          out[k] = FromFloat<T>(expf(Load(in + k) - m) * scale);
      } else {
        const float log_sum = logf(s);
        for (int64_t k = lane; k < n; k += kGroup)
          out[k] = FromFloat<T>((Load(in + k) - m) - log_sum);
      }
    } else if constexpr (kOp == AxisOp::kHardmax) {
      if (n > 0) {
        const int64_t idx = ArgRow<T, true, kGroup>(in, n, lane, false, smem, si);
        for (int64_t k = lane; k < n; k += kGroup) out[k] = FromFloat<T>(k == idx ? 1.f : 0.f);
      }
    } else {
      float s = 0.f;
      for (int64_t k = lane; k < n; k += kGroup) {
        const float v = Load(in + k);
        s += kOp == AxisOp::kLpNorm1 ? fabsf(v) : v * v;
      }
      s = GroupAllReduce<kGroup>(s, Plus(), smem);
      const float norm = kOp == AxisOp::kLpNorm2 ? sqrtf(s) : s;
      const float inv = norm == 0.f ? 0.f : 1.f / norm;
      for (int64_t k = lane; k < n; k += kGroup) out[k] = FromFloat<T>(Load(in + k) * inv);
    }
  }
}

// inner > 1: one thread per (outer, inner) position; coalesced along inner.
template <typename T, AxisOp kOp>
__global__ void AxisColumnsKernel(const T* __restrict__ x, T* __restrict__ y, AxisView v) {
  const int64_t total = v.outer * v.inner;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = i / v.inner, j = i % v.inner;
    const T* in = x + o * v.n * v.inner + j;
    T* out = y + o * v.n * v.inner + j;
    const int64_t st = v.inner;
    if constexpr (kOp == AxisOp::kSoftmax || kOp == AxisOp::kLogSoftmax) {
      float m = -Inf();
      for (int64_t k = 0; k < v.n; ++k) m = MaxCombine()(m, Load(in + k * st));
      float s = 0.f;
      for (int64_t k = 0; k < v.n; ++k) s += expf(Load(in + k * st) - m);
      if constexpr (kOp == AxisOp::kSoftmax) {
        const float scale = 1.f / s;
        for (int64_t k = 0; k < v.n; ++k)
          out[k * st] = FromFloat<T>(expf(Load(in + k * st) - m) * scale);
      } else {
        const float log_sum = logf(s);
        for (int64_t k = 0; k < v.n; ++k)
          out[k * st] = FromFloat<T>((Load(in + k * st) - m) - log_sum);
      }
    } else if constexpr (kOp == AxisOp::kHardmax) {
      if (v.n > 0) {
        float best = Load(in);
        int64_t bi = 0;
        for (int64_t k = 1; k < v.n; ++k) {
          const float value = Load(in + k * st);
          if (value > best) {
            best = value;
            bi = k;
          }
        }
        for (int64_t k = 0; k < v.n; ++k) out[k * st] = FromFloat<T>(k == bi ? 1.f : 0.f);
      }
    } else {
      float s = 0.f;
      for (int64_t k = 0; k < v.n; ++k) {
        const float value = Load(in + k * st);
        s += kOp == AxisOp::kLpNorm1 ? fabsf(value) : value * value;
      }
      const float norm = kOp == AxisOp::kLpNorm2 ? sqrtf(s) : s;
      const float inv = norm == 0.f ? 0.f : 1.f / norm;
      for (int64_t k = 0; k < v.n; ++k) out[k * st] = FromFloat<T>(Load(in + k * st) * inv);
    }
  }
}

template <typename T, AxisOp kOp>
void LaunchAxisTyped(const T* x, T* y, AxisView v, cudaStream_t stream) {
  const int64_t rows = v.outer * v.inner;
  if (rows == 0 || v.n == 0) return;
  if constexpr (kOp == AxisOp::kSoftmax || kOp == AxisOp::kLogSoftmax) {
    if (v.inner == 1) {
      // Rows that fit in one warp's registers.
      constexpr int kVec = static_cast<int>(16 / sizeof(T));
      constexpr bool kLog = kOp == AxisOp::kLogSoftmax;
      const bool vectorizable = v.n % kVec == 0 && Aligned16(x) && Aligned16(y);
      const int vec = vectorizable ? kVec : 1;
      const int64_t chunks = (v.n + 32 * vec - 1) / (32 * vec);
      if (chunks <= 8) {
        const int c = chunks <= 1 ? 1 : chunks <= 2 ? 2 : chunks <= 4 ? 4 : 8;
        if (vectorizable) {
          LaunchSoftmaxWarp<T, kVec, kLog>(c, x, y, rows, v.n, stream);
        } else {
          LaunchSoftmaxWarp<T, 1, kLog>(c, x, y, rows, v.n, stream);
        }
        KILN_CUDA_CHECK(cudaGetLastError());
        return;
      }
    }
  }
  if (v.inner > 1) {
    AxisColumnsKernel<T, kOp><<<GridFor((rows + 255) / 256), 256, 0, stream>>>(x, y, v);
  } else if (v.n <= 1024) {
    AxisRowsKernel<T, kOp, 32><<<GridFor((rows + 7) / 8), 256, 0, stream>>>(x, y, rows, v.n);
  } else {
    AxisRowsKernel<T, kOp, 256><<<GridFor(rows), 256, 0, stream>>>(x, y, rows, v.n);
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------------------
// LayerNormalization

// Where KilnSumLayerNorm's term k reads output row `row` (null: it adds
// zeros there, an out-of-range gather index).
template <typename T>
__device__ __forceinline__ const T* SumTermRow(const SumTerms& terms, int k, int64_t row,
                                               int64_t n) {
  const T* base = static_cast<const T*>(terms.terms[k]);
  // 32-bit remainder (the launcher checks rows < 2^31): a 64-bit one per
  // term and row was ~40% of the kernel's instructions.
  if (k > 0 || terms.indices == nullptr)
    return base + static_cast<int64_t>(static_cast<uint32_t>(row) %
                                       static_cast<uint32_t>(terms.periods[k])) * n;
  int64_t index = terms.indices_int64 ? static_cast<const int64_t*>(terms.indices)[row]
                                      : static_cast<const int32_t*>(terms.indices)[row];
  if (index < 0) index += terms.table_rows;
  return index >= 0 && index < terms.table_rows ? base + index * n : nullptr;
}

// One warp per row; the row lives in registers (kChunks * kVec values per
// lane, loaded kVec at a time). n must be a multiple of kVec and the row,
// scale and bias pointers kVec-element aligned. Y (the output type) is T, or
// float32 for a float16/bfloat16 LayerNorm whose output cast was fused in.
// With kSum the row is the sum of `terms`' rows (KilnSumLayerNorm) and x is
// unused.
// With kParamsFirst each lane loads its scale and bias chunks together with
// the row, before the two reductions, so their latency is not added after
// them (more registers, fewer resident warps: a tactic, timed).
template <typename T, typename Y, int kVec, int kChunks, bool kSum, bool kParamsFirst = false>
__global__ void __launch_bounds__(128)
    LayerNormWarpKernel(const T* __restrict__ x, const SumTerms terms, const T* __restrict__ scale,
                        const T* __restrict__ bias, Y* __restrict__ y, float* __restrict__ mean_out,
                        float* __restrict__ inv_out, int64_t rows, int64_t n, float epsilon) {
  WaitForPrerequisiteGrids();  // Launched as a dependent launch (dependent_launch.cuh).
  using P = Pack<T, kVec>;
  const int lane = threadIdx.x & 31;
  const int64_t per_block = blockDim.x / 32;
  const int64_t step = static_cast<int64_t>(gridDim.x) * per_block;
  P early_scale[kParamsFirst ? kChunks : 1], early_bias[kParamsFirst ? kChunks : 1];
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * per_block + threadIdx.x / 32; row < rows;
       row += step) {
    const T* in = x + row * n;
    if constexpr (kParamsFirst) {
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        const int64_t start = (static_cast<int64_t>(c) * 32 + lane) * kVec;
        if (start < n) {
          early_scale[c] = *reinterpret_cast<const P*>(scale + start);
          if (bias != nullptr) early_bias[c] = *reinterpret_cast<const P*>(bias + start);
        }
      }
    }
    const T* term_rows[kMaxSumTerms] = {};
    if constexpr (kSum) {
#pragma unroll
      for (int k = 0; k < kMaxSumTerms; ++k)
        if (k < terms.count) term_rows[k] = SumTermRow<T>(terms, k, row, n);
    }
    float v[kChunks][kVec];
    float sum = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t start = (static_cast<int64_t>(c) * 32 + lane) * kVec;
      if (start < n) {
        if constexpr (kSum) {
#pragma unroll
          for (int i = 0; i < kVec; ++i) v[c][i] = 0.f;
#pragma unroll
          for (int k = 0; k < kMaxSumTerms; ++k) {
            if (term_rows[k] == nullptr) continue;
            const P p = *reinterpret_cast<const P*>(term_rows[k] + start);
#pragma unroll
            for (int i = 0; i < kVec; ++i) v[c][i] += ToVal<T>(p.v[i]);
          }
#pragma unroll
          for (int i = 0; i < kVec; ++i) sum += v[c][i];
        } else {
          const P p = *reinterpret_cast<const P*>(in + start);
#pragma unroll
          for (int i = 0; i < kVec; ++i) {
            v[c][i] = ToVal<T>(p.v[i]);
            sum += v[c][i];
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < kVec; ++i) v[c][i] = 0.f;
      }
    }
    sum = WarpAllReduce(sum, Plus());
    const float mean = n > 0 ? sum / static_cast<float>(n) : 0.f;
    float sq = 0.f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t start = (static_cast<int64_t>(c) * 32 + lane) * kVec;
      if (start < n) {
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          const float d = v[c][i] - mean;
          sq += d * d;
        }
      }
    }
    sq = WarpAllReduce(sq, Plus());
    const float var = n > 0 ? sq / static_cast<float>(n) : 0.f;
    const float inv = 1.f / sqrtf(var + epsilon);
    Y* out = y + row * n;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t start = (static_cast<int64_t>(c) * 32 + lane) * kVec;
      if (start < n) {
        P s, b;
        if constexpr (kParamsFirst) {
          s = early_scale[c];
          b = early_bias[c];
        } else {
          s = *reinterpret_cast<const P*>(scale + start);
          if (bias != nullptr) b = *reinterpret_cast<const P*>(bias + start);
        }
        Pack<Y, kVec> r;
#pragma unroll
        for (int i = 0; i < kVec; ++i) {
          const float bi = bias != nullptr ? ToVal<T>(b.v[i]) : 0.f;
          r.v[i] = FromFloat<Y>((v[c][i] - mean) * inv * ToVal<T>(s.v[i]) + bi);
        }
        if constexpr (sizeof(Y) == sizeof(T)) {
          *reinterpret_cast<Pack<Y, kVec>*>(out + start) = r;
        } else if constexpr (kVec % 4 == 0) {
          // float32 output of a 16-bit row: 16-byte stores (start is a
          // multiple of kVec, and the vectorized path has y 16-byte aligned).
#pragma unroll
          for (int i = 0; i < kVec; i += 4)
            *reinterpret_cast<float4*>(out + start + i) =
                make_float4(r.v[i], r.v[i + 1], r.v[i + 2], r.v[i + 3]);
        } else {
#pragma unroll
          for (int i = 0; i < kVec; ++i) out[start + i] = r.v[i];
        }
      }
    }
    if (lane == 0) {
      if (mean_out != nullptr) mean_out[row] = mean;
      if (inv_out != nullptr) inv_out[row] = inv;
    }
  }
}

constexpr int kNormBlock = 512;

// One block per row, three passes over global memory (any n, broadcast
// parameters).
template <typename T, typename Y>
__global__ void __launch_bounds__(kNormBlock)
    LayerNormBlockKernel(const T* __restrict__ x, const T* __restrict__ scale,
                         const T* __restrict__ bias, Y* __restrict__ y,
                         float* __restrict__ mean_out, float* __restrict__ inv_out, int64_t rows,
                         int64_t n, float epsilon, const IndexMap scale_map,
                         const IndexMap bias_map) {
  WaitForPrerequisiteGrids();  // Launched as a dependent launch (dependent_launch.cuh).
  __shared__ float smem[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* in = x + row * n;
    float sum = 0.f;
    for (int64_t k = threadIdx.x; k < n; k += kNormBlock) sum += Load(in + k);
    sum = GroupAllReduce<kNormBlock>(sum, Plus(), smem);
    const float mean = n > 0 ? sum / static_cast<float>(n) : 0.f;
    float sq = 0.f;
    for (int64_t k = threadIdx.x; k < n; k += kNormBlock) {
      const float d = Load(in + k) - mean;
      sq += d * d;
    }
    sq = GroupAllReduce<kNormBlock>(sq, Plus(), smem);
    const float var = n > 0 ? sq / static_cast<float>(n) : 0.f;
    const float inv = 1.f / sqrtf(var + epsilon);
    Y* out = y + row * n;
    for (int64_t k = threadIdx.x; k < n; k += kNormBlock) {
      const float s = Load(scale + (scale_map.rank > 0 ? MapIndex(scale_map, k) : k));
      const float b =
          bias != nullptr ? Load(bias + (bias_map.rank > 0 ? MapIndex(bias_map, k) : k)) : 0.f;
      out[k] = FromFloat<Y>((Load(in + k) - mean) * inv * s + b);
    }
    if (threadIdx.x == 0) {
      if (mean_out != nullptr) mean_out[row] = mean;
      if (inv_out != nullptr) inv_out[row] = inv;
    }
  }
}

template <typename T, typename Y, int kVec, bool kSum = false>
void LaunchLayerNormWarp(int chunks, const T* x, const SumTerms& terms, const T* scale,
                         const T* bias, Y* y, float* mean, float* inv_std, int64_t rows,
                         int64_t n, float epsilon, cudaStream_t stream,
                         bool params_first = false) {
  const unsigned grid = GridFor((rows + 3) / 4);
  auto launch = [&](auto chunk_count) {
    constexpr int kChunks = decltype(chunk_count)::value;
    auto kernel = LayerNormWarpKernel<T, Y, kVec, kChunks, kSum, false>;
    if constexpr (!kSum)
      if (params_first) kernel = LayerNormWarpKernel<T, Y, kVec, kChunks, kSum, true>;
    LaunchDependent(kernel, dim3(grid), dim3(128), 0, stream, x, terms, scale, bias, y, mean,
                    inv_std, rows, n, epsilon);
  };
  switch (chunks) {
    case 1: launch(std::integral_constant<int, 1>()); break;
    case 2: launch(std::integral_constant<int, 2>()); break;
    case 3: launch(std::integral_constant<int, 3>()); break;
    case 4: launch(std::integral_constant<int, 4>()); break;
    default: launch(std::integral_constant<int, 8>()); break;
  }
}

template <typename T, typename Y>
void LaunchLayerNormAs(const T* in, const T* s, const T* b, Y* out, float* mean, float* inv_std,
                       int64_t rows, int64_t n, float epsilon, const IndexMap& scale_map,
                       const IndexMap& bias_map, bool params_first, cudaStream_t stream) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  const bool dense = scale_map.rank == 0 && (b == nullptr || bias_map.rank == 0);
  const bool vectorizable = n % kVec == 0 && Aligned16(in) && Aligned16(s) && Aligned16(b) &&
                            Aligned16(out);
  const int vec = vectorizable ? kVec : 1;
  const int64_t chunks = (n + 32 * vec - 1) / (32 * vec);
  if (dense && n > 0 && chunks <= 8) {
    const int c = static_cast<int>(chunks);
    if (vectorizable) {
      LaunchLayerNormWarp<T, Y, kVec>(c, in, {}, s, b, out, mean, inv_std, rows, n, epsilon,
                                      stream, params_first);
    } else {
      LaunchLayerNormWarp<T, Y, 1>(c, in, {}, s, b, out, mean, inv_std, rows, n, epsilon, stream,
                                   params_first);
    }
  } else {
    LaunchDependent(LayerNormBlockKernel<T, Y>, dim3(GridFor(rows)), dim3(kNormBlock), 0, stream,
                    in, s, b, out, mean, inv_std, rows, n, epsilon, scale_map, bias_map);
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------------------
// GroupNormalization / InstanceNormalization

template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    GroupNormKernel(const T* __restrict__ x, const T* __restrict__ scale,
                    const T* __restrict__ bias, T* __restrict__ y, int64_t rows, int64_t groups,
                    int64_t channels_per_group, int64_t spatial, bool per_channel,
                    float epsilon) {
  __shared__ float smem[32];
  const int64_t len = channels_per_group * spatial;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t g = row % groups;
    const T* in = x + row * len;
    T* out = y + row * len;
    float sum = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += kNormBlock) sum += Load(in + k);
    sum = GroupAllReduce<kNormBlock>(sum, Plus(), smem);
    const float mean = len > 0 ? sum / static_cast<float>(len) : 0.f;
    float sq = 0.f;
    for (int64_t k = threadIdx.x; k < len; k += kNormBlock) {
      const float d = Load(in + k) - mean;
      sq += d * d;
    }
    sq = GroupAllReduce<kNormBlock>(sq, Plus(), smem);
    const float var = len > 0 ? sq / static_cast<float>(len) : 0.f;
    const float inv = 1.f / sqrtf(var + epsilon);
    for (int64_t k = threadIdx.x; k < len; k += kNormBlock) {
      const int64_t p = per_channel ? g * channels_per_group + k / spatial : g;
      const float mul = inv * Load(scale + p);
      const float add = Load(bias + p) - mean * mul;
      out[k] = FromFloat<T>(Load(in + k) * mul + add);
    }
  }
}

// ---------------------------------------------------------------------------
// MeanVarianceNormalization

template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    MeanVarianceNormKernel(const T* __restrict__ x, T* __restrict__ y, const ReducePlan p) {
  __shared__ float smem[32];
  const float count = static_cast<float>(std::max<int64_t>(p.count, 1));
  for (int64_t o = blockIdx.x; o < p.outputs; o += gridDim.x) {
    const int64_t base = MapIndex(p.kept, o);
    const T* in = x + base;
    T* out = y + base;
    float sum = 0.f;
    ForReduced(p, threadIdx.x, kNormBlock, [&](int64_t off) { sum += Load(in + off); });
    sum = GroupAllReduce<kNormBlock>(sum, Plus(), smem);
    const float mean = sum / count;
    float sq = 0.f;
    ForReduced(p, threadIdx.x, kNormBlock, [&](int64_t off) {
      const float d = Load(in + off) - mean;
      sq += d * d;
    });
    sq = GroupAllReduce<kNormBlock>(sq, Plus(), smem);
    const float inv = 1.f / (sqrtf(sq / count) + 1e-9f);
    ForReduced(p, threadIdx.x, kNormBlock,
               [&](int64_t off) { out[off] = FromFloat<T>((Load(in + off) - mean) * inv); });
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Launchers

bool ReduceSupportsDType(ReduceOp op, DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt32:
    case DType::kInt64:
      return true;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool:
      return op == ReduceOp::kMax || op == ReduceOp::kMin;
    default:
      return false;
  }
}

void LaunchReduce(ReduceOp op, DType dtype, const void* x, void* y, const ReducePlan& plan,
                  cudaStream_t stream) {
  KILN_CHECK(ReduceSupportsDType(op, dtype), "GPU reduction does not support dtype ",
             DTypeName(dtype));
  DispatchAll(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    T* out = static_cast<T*>(y);
    // 8-bit types are only reachable for Max/Min: skip instantiating the rest.
    if constexpr (sizeof(T) == 1) {
      if (op == ReduceOp::kMax) LaunchReduceTyped<T, ReduceOp::kMax>(in, out, plan, stream);
      else LaunchReduceTyped<T, ReduceOp::kMin>(in, out, plan, stream);
    } else {
      switch (op) {
        case ReduceOp::kSum: LaunchReduceTyped<T, ReduceOp::kSum>(in, out, plan, stream); break;
        case ReduceOp::kMean: LaunchReduceTyped<T, ReduceOp::kMean>(in, out, plan, stream); break;
        case ReduceOp::kProd: LaunchReduceTyped<T, ReduceOp::kProd>(in, out, plan, stream); break;
        case ReduceOp::kMax: LaunchReduceTyped<T, ReduceOp::kMax>(in, out, plan, stream); break;
        case ReduceOp::kMin: LaunchReduceTyped<T, ReduceOp::kMin>(in, out, plan, stream); break;
        case ReduceOp::kL1: LaunchReduceTyped<T, ReduceOp::kL1>(in, out, plan, stream); break;
        case ReduceOp::kL2: LaunchReduceTyped<T, ReduceOp::kL2>(in, out, plan, stream); break;
        case ReduceOp::kSumSquare:
          LaunchReduceTyped<T, ReduceOp::kSumSquare>(in, out, plan, stream);
          break;
        case ReduceOp::kLogSum:
          LaunchReduceTyped<T, ReduceOp::kLogSum>(in, out, plan, stream);
          break;
        case ReduceOp::kLogSumExp:
          LaunchReduceTyped<T, ReduceOp::kLogSumExp>(in, out, plan, stream);
          break;
      }
    }
  });
}

bool ArgReduceSupportsDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt32:
    case DType::kInt64:
    case DType::kInt8:
    case DType::kUInt8:
      return true;
    default:
      return false;
  }
}

void LaunchArgReduce(bool is_max, bool select_last, DType dtype, const void* x, int64_t* y,
                     AxisView v, cudaStream_t stream) {
  KILN_CHECK(ArgReduceSupportsDType(dtype), "GPU ArgMax/ArgMin does not support dtype ",
             DTypeName(dtype));
  const int64_t rows = v.outer * v.inner;
  if (rows == 0) return;
  KILN_CHECK(v.n > 0, "ArgMax/ArgMin over an empty axis");
  DispatchAll(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    auto launch = [&](auto max_tag) {
      constexpr bool kMax = decltype(max_tag)::value;
      if (v.inner > 1) {
        ArgColumnsKernel<T, kMax>
            <<<GridFor((rows + 255) / 256), 256, 0, stream>>>(in, y, v, select_last);
      } else if (v.n <= 1024) {
        ArgRowsKernel<T, kMax, 32>
            <<<GridFor((rows + 7) / 8), 256, 0, stream>>>(in, y, rows, v.n, select_last);
      } else {
        ArgRowsKernel<T, kMax, 256>
            <<<GridFor(rows), 256, 0, stream>>>(in, y, rows, v.n, select_last);
      }
      KILN_CUDA_CHECK(cudaGetLastError());
    };
    if (is_max) {
      launch(std::true_type{});
    } else {
      launch(std::false_type{});
    }
  });
}

bool FloatKernelSupportsDType(DType dtype) { return IsFloatDType(dtype); }

void LaunchAxisOp(AxisOp op, DType dtype, const void* x, void* y, AxisView v,
                  cudaStream_t stream) {
  DispatchFloat(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    T* out = static_cast<T*>(y);
    switch (op) {
      case AxisOp::kSoftmax: LaunchAxisTyped<T, AxisOp::kSoftmax>(in, out, v, stream); break;
      case AxisOp::kLogSoftmax: LaunchAxisTyped<T, AxisOp::kLogSoftmax>(in, out, v, stream); break;
      case AxisOp::kHardmax: LaunchAxisTyped<T, AxisOp::kHardmax>(in, out, v, stream); break;
      case AxisOp::kLpNorm1: LaunchAxisTyped<T, AxisOp::kLpNorm1>(in, out, v, stream); break;
      case AxisOp::kLpNorm2: LaunchAxisTyped<T, AxisOp::kLpNorm2>(in, out, v, stream); break;
    }
  });
}

void LaunchLayerNorm(DType dtype, DType out_dtype, const void* x, const void* scale,
                     const void* bias, void* y, float* mean, float* inv_std, int64_t rows,
                     int64_t n, float epsilon, const IndexMap& scale_map,
                     const IndexMap& bias_map, cudaStream_t stream, bool params_first) {
  KILN_CHECK(out_dtype == dtype || out_dtype == DType::kFloat32, "LayerNorm: output dtype ",
             DTypeName(out_dtype), " for ", DTypeName(dtype), " input (the input's or float32)");
  if (rows == 0) return;
  DispatchFloat(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    const T* s = static_cast<const T*>(scale);
    const T* b = static_cast<const T*>(bias);
    if (out_dtype == dtype) {
      LaunchLayerNormAs<T, T>(in, s, b, static_cast<T*>(y), mean, inv_std, rows, n, epsilon,
                              scale_map, bias_map, params_first, stream);
    } else {
      LaunchLayerNormAs<T, float>(in, s, b, static_cast<float*>(y), mean, inv_std, rows, n,
                                  epsilon, scale_map, bias_map, params_first, stream);
    }
  });
}

void LaunchSumLayerNorm(DType dtype, const SumTerms& terms, const void* scale, const void* bias,
                        void* y, int64_t rows, int64_t n, float epsilon, cudaStream_t stream) {
  KILN_CHECK(terms.count >= 1 && terms.count <= kMaxSumTerms, "sum LayerNorm: ", terms.count,
             " terms (1 to ", kMaxSumTerms, ")");
  for (int k = terms.indices != nullptr ? 1 : 0; k < terms.count; ++k)
    KILN_CHECK(terms.periods[k] >= 1 && rows % terms.periods[k] == 0, "sum LayerNorm: term ", k,
               " repeats every ", terms.periods[k], " rows, which does not divide ", rows);
  if (rows == 0) return;
  KILN_CHECK(rows <= int64_t{0x7fffffff}, "sum LayerNorm: ", rows, " rows exceed 2^31 - 1");
  DispatchFloat(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr int kVec = static_cast<int>(16 / sizeof(T));
    bool vectorizable = n % kVec == 0 && Aligned16(scale) && Aligned16(bias) && Aligned16(y);
    for (int k = 0; k < terms.count; ++k) vectorizable = vectorizable && Aligned16(terms.terms[k]);
    const int vec = vectorizable ? kVec : 1;
    const int64_t chunks = (n + 32 * vec - 1) / (32 * vec);
    KILN_CHECK(n > 0 && chunks <= 8, "sum LayerNorm: rows of ", n, " elements",
               vectorizable ? "" : " at unaligned addresses",
               " exceed the one-warp-per-row kernel");
    const T* s = static_cast<const T*>(scale);
    const T* b = static_cast<const T*>(bias);
    T* out = static_cast<T*>(y);
    if (vectorizable)
      LaunchLayerNormWarp<T, T, kVec, true>(static_cast<int>(chunks), nullptr, terms, s, b, out,
                                            nullptr, nullptr, rows, n, epsilon, stream);
    else
      LaunchLayerNormWarp<T, T, 1, true>(static_cast<int>(chunks), nullptr, terms, s, b, out,
                                         nullptr, nullptr, rows, n, epsilon, stream);
  });
  KILN_CUDA_CHECK(cudaGetLastError());
}

void LaunchGroupNorm(DType dtype, const void* x, const void* scale, const void* bias, void* y,
                     int64_t batch, int64_t groups, int64_t channels_per_group, int64_t spatial,
                     bool per_channel, float epsilon, cudaStream_t stream) {
  const int64_t rows = batch * groups;
  if (rows == 0 || channels_per_group * spatial == 0) return;
  DispatchFloat(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    GroupNormKernel<T><<<GridFor(rows), kNormBlock, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(scale), static_cast<const T*>(bias),
        static_cast<T*>(y), rows, groups, channels_per_group, spatial, per_channel, epsilon);
    KILN_CUDA_CHECK(cudaGetLastError());
  });
}

void LaunchMeanVarianceNorm(DType dtype, const void* x, void* y, const ReducePlan& plan,
                            cudaStream_t stream) {
  if (plan.outputs == 0 || plan.count == 0) return;
  DispatchFloat(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    MeanVarianceNormKernel<T><<<GridFor(plan.outputs), kNormBlock, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), plan);
    KILN_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace kiln::gpu::kernels
