// Kernels of the tensor family (see tensor.h). Index math is int64 unless a
// launcher proves that every element index and offset fits in int32, in which
// case the hot kernels (strided copy, concat/split, gather, pad) run with
// 32-bit division. Every grid is 1-D and grid-stride (grid.y/z only where
// bounded: concat parts, batched transpose with a loop), so sizes of any
// magnitude launch.
#include "cuda/kernels/tensor.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <cub/block/block_scan.cuh>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/kernel_util.cuh"

namespace kiln::gpu::tensor_kernels {
namespace {

// Element counts and offsets below this use 32-bit index math (leaves room
// for the grid stride so `i += stride` never overflows).
constexpr int64_t kInt32Limit = int64_t{1} << 30;

// Raw element types by size (moves bytes; every dtype of that size shares them).
template <typename Fn>
void DispatchBySize(size_t size, Fn&& fn) {
  switch (size) {
    case 1: fn(Tag<uint8_t>{}); break;
    case 2: fn(Tag<uint16_t>{}); break;
    case 4: fn(Tag<uint32_t>{}); break;
    case 8: fn(Tag<unsigned long long>{}); break;
    case 16: fn(Tag<uint4>{}); break;
    default: Fail("tensor kernels: unsupported element size ", size);
  }
}

template <typename Fn>
void DispatchIndex(bool int64, Fn&& fn) {
  if (int64) {
    fn(Tag<int64_t>{});
  } else {
    fn(Tag<int32_t>{});
  }
}

template <typename Fn>
void DispatchIndexMath(bool fits32, Fn&& fn) {
  if (fits32) {
    fn(Tag<int32_t>{});
  } else {
    fn(Tag<int64_t>{});
  }
}

template <typename Out, typename In>
__device__ __forceinline__ Out Convert(In x) {
  if constexpr (std::is_same<Out, In>::value) {
    return x;
  } else {
    return FromFloat<Out>(ToFloat(x));
  }
}

template <typename To, typename From>
__device__ __forceinline__ To BitCast(From from) {
  static_assert(sizeof(To) == sizeof(From), "BitCast needs equal sizes");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

template <typename I>
__device__ __forceinline__ I GlobalThread() {
  return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
}
template <typename I>
__device__ __forceinline__ I GridStride() {
  return static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
}

#define KILN_LAUNCH_CHECK() KILN_CUDA_CHECK(cudaGetLastError())

// ---------------------------------------------------------------- strided copy

template <typename U, typename I, bool kContiguousOut>
__global__ void StridedCopyKernel(const U* __restrict__ in, U* __restrict__ out,
                                  StridedCopyParams p, I n) {
  for (I i = GlobalThread<I>(); i < n; i += GridStride<I>()) {
    I rem = i;
    I src = static_cast<I>(p.in_offset);
    I dst = static_cast<I>(p.out_offset);
    for (int d = p.rank - 1; d >= 0; --d) {
      const I dim = static_cast<I>(p.dims[d]);
      const I c = rem % dim;
      rem /= dim;
      src += c * static_cast<I>(p.in_strides[d]);
      if (!kContiguousOut) dst += c * static_cast<I>(p.out_strides[d]);
    }
    out[kContiguousOut ? i : dst] = in[src];
  }
}

// ---------------------------------------------------------------- transpose

constexpr int kTile = 32;
constexpr int kTileRows = 8;

template <size_t N>
struct BitsOf;
template <>
struct BitsOf<1> {
  using type = uint8_t;
};
template <>
struct BitsOf<2> {
  using type = uint16_t;
};
template <>
struct BitsOf<4> {
  using type = uint32_t;
};
template <>
struct BitsOf<8> {
  using type = unsigned long long;
};

// in [B, R, C] -> out [B, C, R] through a 32x33 shared tile; blockIdx.x walks
// the tiles of one matrix, blockIdx.y (looping) the batch.
template <typename In, typename Out>
__global__ void TransposeTiledKernel(const In* __restrict__ in, Out* __restrict__ out, int64_t B,
                                     int64_t R, int64_t C, int64_t tiles_c) {
  using Bits = typename BitsOf<sizeof(Out)>::type;
  __shared__ Bits tile[kTile][kTile + 1];
  const int64_t tile_index = blockIdx.x;
  const int64_t c0 = (tile_index % tiles_c) * kTile;
  const int64_t r0 = (tile_index / tiles_c) * kTile;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const In* src = in + b * R * C;
    Out* dst = out + b * R * C;
    for (int j = ty; j < kTile; j += kTileRows) {
      const int64_t r = r0 + j, c = c0 + tx;
      if (r < R && c < C) tile[j][tx] = BitCast<Bits>(Convert<Out>(src[r * C + c]));
    }
    __syncthreads();
    for (int j = ty; j < kTile; j += kTileRows) {
      const int64_t c = c0 + j, r = r0 + tx;
      if (c < C && r < R) dst[c * R + r] = BitCast<Out>(tile[tx][j]);
    }
    __syncthreads();
  }
}

// Few rows (e.g. NCHW -> NHWC with 3 channels): one thread per (b, c) reads
// R coalesced rows and writes R consecutive outputs.
template <typename In, typename Out>
__global__ void TransposeSmallRowsKernel(const In* __restrict__ in, Out* __restrict__ out,
                                         int64_t R, int64_t C, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    const int64_t b = i / C, c = i - b * C;
    const In* src = in + b * R * C + c;
    Out* dst = out + i * R;
    for (int64_t r = 0; r < R; ++r) dst[r] = Convert<Out>(src[r * C]);
  }
}

// Few columns (e.g. NHWC -> NCHW with 3 channels): one thread per (b, r).
template <typename In, typename Out>
__global__ void TransposeSmallColsKernel(const In* __restrict__ in, Out* __restrict__ out,
                                         int64_t R, int64_t C, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    const int64_t b = i / R, r = i - b * R;
    const In* src = in + i * C;
    Out* dst = out + b * R * C + r;
    for (int64_t c = 0; c < C; ++c) dst[c * R] = Convert<Out>(src[c]);
  }
}

template <typename In, typename Out>
void TransposeBRCTyped(const In* in, Out* out, int64_t B, int64_t R, int64_t C,
                       cudaStream_t stream) {
  if (R <= 8) {
    TransposeSmallRowsKernel<In, Out><<<Blocks(B * C), kThreads, 0, stream>>>(in, out, R, C, B * C);
  } else if (C <= 8) {
    TransposeSmallColsKernel<In, Out><<<Blocks(B * R), kThreads, 0, stream>>>(in, out, R, C, B * R);
  } else {
    const int64_t tiles_c = (C + kTile - 1) / kTile;
    const int64_t tiles_r = (R + kTile - 1) / kTile;
    KILN_CHECK(tiles_c * tiles_r <= INT_MAX, "transpose of [", R, ",", C, "] matrices is too large");
    dim3 grid(static_cast<unsigned>(tiles_c * tiles_r),
              static_cast<unsigned>(std::min<int64_t>(B, 65535)));
    dim3 block(kTile, kTileRows);
    TransposeTiledKernel<In, Out><<<grid, block, 0, stream>>>(in, out, B, R, C, tiles_c);
  }
  KILN_LAUNCH_CHECK();
}

// ---------------------------------------------------------------- fills

template <typename U>
__global__ void FillKernel(U* __restrict__ out, U value, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) out[i] = value;
}

__global__ void WriteBlobKernel(unsigned char* __restrict__ out, Blob blob) {
  for (int64_t i = threadIdx.x; i < blob.nbytes; i += blockDim.x) out[i] = blob.bytes[i];
}

template <typename U>
__global__ void EyeLikeKernel(U* __restrict__ out, int64_t cols, int64_t k, U one, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    const int64_t r = i / cols, c = i - r * cols;
    out[i] = c - r == k ? one : U(0);
  }
}

// Range computes like the CPU reference: start + T(i) * delta in T, with no
// fused multiply-add (so float results match bit for bit).
template <typename T>
__device__ __forceinline__ T RangeValue(T start, T delta, int64_t i) {
  if constexpr (std::is_same<T, float>::value) {
    return __fadd_rn(start, __fmul_rn(static_cast<float>(i), delta));
  } else if constexpr (std::is_same<T, double>::value) {
    return __dadd_rn(start, __dmul_rn(static_cast<double>(i), delta));
  } else if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) {
    return FromFloat<T>(__fadd_rn(ToFloat(start), __fmul_rn(static_cast<float>(i), ToFloat(delta))));
  } else {
    return static_cast<T>(start + static_cast<T>(i) * delta);
  }
}

template <typename T>
__global__ void RangeKernel(const T* __restrict__ start, const T* __restrict__ delta,
                            T* __restrict__ out, int64_t n) {
  const T s = *start, d = *delta;
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>())
    out[i] = RangeValue(s, d, i);
}

// ---------------------------------------------------------------- concat/split

template <typename U, typename I>
__global__ void ConcatKernel(PartsParams p, U* __restrict__ out) {
  const int part = blockIdx.y;
  const U* src = static_cast<const U*>(p.ptr[part]);
  const I row = static_cast<I>(p.row[part]);
  const I n = static_cast<I>(p.outer) * row;
  const I wide = static_cast<I>(p.wide_row);
  const I offset = static_cast<I>(p.offset[part]);
  for (I i = GlobalThread<I>(); i < n; i += GridStride<I>()) {
    const I o = i / row, c = i - o * row;
    out[o * wide + offset + c] = src[i];
  }
}

template <typename U, typename I>
__global__ void SplitKernel(PartsParams p, const U* __restrict__ in) {
  const int part = blockIdx.y;
  U* dst = static_cast<U*>(p.ptr[part]);
  if (dst == nullptr) return;
  const I row = static_cast<I>(p.row[part]);
  const I n = static_cast<I>(p.outer) * row;
  const I wide = static_cast<I>(p.wide_row);
  const I offset = static_cast<I>(p.offset[part]);
  for (I i = GlobalThread<I>(); i < n; i += GridStride<I>()) {
    const I o = i / row, c = i - o * row;
    dst[i] = in[o * wide + offset + c];
  }
}

// ---------------------------------------------------------------- gather family

template <typename U, typename Idx, typename I>
__global__ void GatherKernel(const U* __restrict__ data, const Idx* __restrict__ indices,
                             U* __restrict__ out, I axis_len, I n_idx, I block, I n) {
  for (I i = GlobalThread<I>(); i < n; i += GridStride<I>()) {
    const I t = i / block, inner = i - t * block;
    const I o = t / n_idx, j = t - o * n_idx;
    int64_t index = static_cast<int64_t>(indices[j]);
    if (index < 0) index += axis_len;
    U value{};
    if (index >= 0 && index < static_cast<int64_t>(axis_len))
      value = data[(o * axis_len + static_cast<I>(index)) * block + inner];
    out[i] = value;
  }
}

// Position in data of element i of the indices tensor; false when the index
// is out of range.
template <typename Idx>
__device__ __forceinline__ bool ElementPosition(const ElementIndexParams& p,
                                                const Idx* __restrict__ indices, int64_t i,
                                                int64_t* pos) {
  int64_t rem = i, acc = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    int64_t c = rem % p.idx_dims[d];
    rem /= p.idx_dims[d];
    if (d == p.axis) {
      int64_t v = static_cast<int64_t>(indices[i]);
      if (v < 0) v += p.axis_len;
      if (v < 0 || v >= p.axis_len) return false;
      c = v;
    }
    acc += c * p.data_strides[d];
  }
  *pos = acc;
  return true;
}

template <typename U, typename Idx>
__global__ void GatherElementsKernel(const U* __restrict__ data, const Idx* __restrict__ indices,
                                     U* __restrict__ out, ElementIndexParams p, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    int64_t pos = 0;
    out[i] = ElementPosition(p, indices, i, &pos) ? data[pos] : U{};
  }
}

// Start (elements) of the data slice that row t of the indices selects.
template <typename Idx>
__device__ __forceinline__ bool NDPosition(const GatherNDParams& p, const Idx* __restrict__ indices,
                                           int64_t t, int64_t* pos) {
  const int64_t batch = t / p.per_batch;
  const Idx* idx = indices + t * p.m;
  int64_t acc = batch * p.batch_stride;
  for (int k = 0; k < p.m; ++k) {
    int64_t v = static_cast<int64_t>(idx[k]);
    if (v < 0) v += p.dims[k];
    if (v < 0 || v >= p.dims[k]) return false;
    acc += v * p.strides[k];
  }
  *pos = acc;
  return true;
}

template <typename U, typename Idx>
__global__ void GatherNDKernel(const U* __restrict__ data, const Idx* __restrict__ indices,
                               U* __restrict__ out, GatherNDParams p, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    const int64_t t = i / p.slice, s = i - t * p.slice;
    int64_t pos = 0;
    out[i] = NDPosition(p, indices, t, &pos) ? data[pos + s] : U{};
  }
}

// ---------------------------------------------------------------- scatter

template <typename T>
__device__ __forceinline__ T Reduce(ScatterReduction r, T a, T b) {
  if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) {
    return FromFloat<T>(Reduce(r, ToFloat(a), ToFloat(b)));
  } else {
    switch (r) {
      case ScatterReduction::kAdd: return static_cast<T>(a + b);
      case ScatterReduction::kMul: return static_cast<T>(a * b);
      case ScatterReduction::kMax: return a < b ? b : a;  // std::max
      case ScatterReduction::kMin: return b < a ? b : a;  // std::min
      default: return b;
    }
  }
}

// *addr = Reduce(r, *addr, value) atomically, by compare-and-swap on the
// element's width (1-byte elements: serially, see below).
template <typename T>
__device__ void AtomicReduce(T* addr, T value, ScatterReduction r) {
  if constexpr (sizeof(T) == 8) {
    auto* a = reinterpret_cast<unsigned long long*>(addr);
    unsigned long long old = *a, assumed;
    do {
      assumed = old;
      T next = Reduce(r, BitCast<T>(assumed), value);
      old = atomicCAS(a, assumed, BitCast<unsigned long long>(next));
    } while (old != assumed);
  } else if constexpr (sizeof(T) == 4) {
    auto* a = reinterpret_cast<unsigned int*>(addr);
    unsigned int old = *a, assumed;
    do {
      assumed = old;
      T next = Reduce(r, BitCast<T>(assumed), value);
      old = atomicCAS(a, assumed, BitCast<unsigned int>(next));
    } while (old != assumed);
  } else if constexpr (sizeof(T) == 2) {
    auto* a = reinterpret_cast<unsigned short int*>(addr);
    unsigned short int old = *a, assumed;
    do {
      assumed = old;
      T next = Reduce(r, BitCast<T>(assumed), value);
      old = atomicCAS(a, assumed, BitCast<unsigned short int>(next));
    } while (old != assumed);
  } else {
    // 1-byte elements have no CAS of their own (a wider CAS could touch
    // bytes past the allocation): their launches run on one thread, in order.
    static_assert(sizeof(T) == 1, "unexpected element size");
    *addr = Reduce(r, *addr, value);
  }
}

template <typename T>
__device__ __forceinline__ void ScatterApply(T* addr, T value, ScatterReduction r) {
  if (r == ScatterReduction::kNone) {
    *addr = value;
  } else {
    AtomicReduce(addr, value, r);
  }
}

template <typename T, typename Idx>
__global__ void ScatterElementsKernel(const T* __restrict__ updates,
                                      const Idx* __restrict__ indices, T* out,
                                      ScatterReduction r, ElementIndexParams p, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    int64_t pos = 0;
    if (ElementPosition(p, indices, i, &pos)) ScatterApply(out + pos, updates[i], r);
  }
}

template <typename T, typename Idx>
__global__ void ScatterNDKernel(const T* __restrict__ updates, const Idx* __restrict__ indices,
                                T* out, ScatterReduction r, GatherNDParams p, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    const int64_t t = i / p.slice, s = i - t * p.slice;
    int64_t pos = 0;
    if (NDPosition(p, indices, t, &pos)) ScatterApply(out + pos + s, updates[i], r);
  }
}

// Types reductions compute in (byte moves for kNone).
template <typename Fn>
void DispatchScatterType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(Tag<float>{}); break;
    case DType::kFloat16: fn(Tag<__half>{}); break;
    case DType::kBFloat16: fn(Tag<__nv_bfloat16>{}); break;
    case DType::kFloat64: fn(Tag<double>{}); break;
    case DType::kInt8: fn(Tag<int8_t>{}); break;
    case DType::kUInt8: fn(Tag<uint8_t>{}); break;
    case DType::kInt16: fn(Tag<int16_t>{}); break;
    case DType::kInt32: fn(Tag<int32_t>{}); break;
    case DType::kInt64: fn(Tag<int64_t>{}); break;
    default: Fail("scatter reductions do not support ", DTypeName(dtype));
  }
}

// ---------------------------------------------------------------- pad

__device__ __forceinline__ int64_t PadSource(int64_t x, int64_t n, PadKind mode) {
  if (x >= 0 && x < n) return x;
  switch (mode) {
    case PadKind::kConstant: return -1;
    case PadKind::kEdge: return x < 0 ? 0 : n - 1;
    case PadKind::kWrap: return ((x % n) + n) % n;
    case PadKind::kReflect: {
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      const int64_t r = ((x % period) + period) % period;
      return r < n ? r : period - r;
    }
  }
  return -1;
}

template <typename U, typename I>
__global__ void PadKernel(const U* __restrict__ in, U* __restrict__ out,
                          const U* __restrict__ fill_ptr, PadParams p, I n) {
  const U fill = fill_ptr ? *fill_ptr : static_cast<U>(p.fill_pattern);
  for (I i = GlobalThread<I>(); i < n; i += GridStride<I>()) {
    I rem = i, src = 0;
    bool filled = false;
    for (int d = p.rank - 1; d >= 0; --d) {
      const I od = static_cast<I>(p.out_dims[d]);
      const I c = rem % od;
      rem /= od;
      const int64_t x = PadSource(static_cast<int64_t>(c) - p.begins[d], p.in_dims[d], p.mode);
      if (x < 0) {
        filled = true;
      } else {
        src += static_cast<I>(x) * static_cast<I>(p.in_strides[d]);
      }
    }
    out[i] = filled ? fill : in[src];
  }
}

// ---------------------------------------------------------------- resize

// The CPU reference's coordinate transform, operation for operation in
// double with no fused multiply-adds, so nearest picks agree exactly.
__device__ double SourceCoordinate(const ResizeParams& p, const ResizeAxis& a, int64_t x) {
  const double xd = static_cast<double>(x);
  switch (p.coord) {
    case ResizeCoord::kHalfPixel:
      return __dsub_rn(__ddiv_rn(__dadd_rn(xd, 0.5), a.scale), 0.5);
    case ResizeCoord::kPytorchHalfPixel:
      return a.resized > 1 ? __dsub_rn(__ddiv_rn(__dadd_rn(xd, 0.5), a.scale), 0.5) : 0.0;
    case ResizeCoord::kAlignCorners:
      return a.resized == 1 ? 0.0
                            : __ddiv_rn(__dmul_rn(xd, static_cast<double>(a.in_len - 1)),
                                        __dsub_rn(a.resized, 1.0));
    case ResizeCoord::kAsymmetric:
      return __ddiv_rn(xd, a.scale);
    case ResizeCoord::kTfHalfPixelForNn:
      return __ddiv_rn(__dadd_rn(xd, 0.5), a.scale);
    case ResizeCoord::kHalfPixelSymmetric:
      return __dsub_rn(__dadd_rn(a.sym_offset, __ddiv_rn(__dadd_rn(xd, 0.5), a.scale)), 0.5);
    case ResizeCoord::kTfCropAndResize: {
      const double span = static_cast<double>(a.in_len - 1);
      if (a.resized == 1) return __dmul_rn(__dmul_rn(0.5, __dadd_rn(a.roi_start, a.roi_end)), span);
      return __dadd_rn(
          __dmul_rn(a.roi_start, span),
          __ddiv_rn(__dmul_rn(__dmul_rn(xd, __dsub_rn(a.roi_end, a.roi_start)), span),
                    __dsub_rn(a.resized, 1.0)));
    }
  }
  return 0.0;
}

__device__ __forceinline__ bool OutsideCrop(const ResizeParams& p, double coord, int64_t in_len) {
  return p.coord == ResizeCoord::kTfCropAndResize &&
         (coord < 0 || coord > static_cast<double>(in_len - 1));
}

__device__ __forceinline__ int64_t Clamp(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

__device__ int64_t NearestIndex(ResizeNearest mode, double coord, double scale, int64_t in_len) {
  const double fl = floor(coord);
  int64_t index;
  if (mode == ResizeNearest::kSimple) {
    index = static_cast<int64_t>(scale < 1.0 ? ceil(coord) : fl);
  } else if (mode == ResizeNearest::kFloor) {
    index = static_cast<int64_t>(fl);
  } else if (mode == ResizeNearest::kCeil) {
    index = static_cast<int64_t>(ceil(coord));
  } else if (__dsub_rn(coord, fl) == 0.5) {
    index = static_cast<int64_t>(mode == ResizeNearest::kRoundPreferCeil ? __dadd_rn(fl, 1.0) : fl);
  } else {
    index = static_cast<int64_t>(round(coord));
  }
  return Clamp(index, 0, in_len - 1);
}

template <typename U>
__global__ void ResizeNearestKernel(const U* __restrict__ in, U* __restrict__ out,
                                    ResizeParams p, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    int64_t rem = i, src = 0;
    bool outside = false;
    for (int d = p.rank - 1; d >= 0; --d) {
      const ResizeAxis& a = p.axes[d];
      const int64_t x = rem % a.out_len;
      rem /= a.out_len;
      int64_t s = x;
      if (!a.identity) {
        const double coord = SourceCoordinate(p, a, x);
        if (OutsideCrop(p, coord, a.in_len)) {
          outside = true;
          s = 0;
        } else {
          s = NearestIndex(p.nearest, coord, a.scale, a.in_len);
        }
      }
      src += s * p.in_strides[d];
    }
    out[i] = outside ? static_cast<U>(p.extrapolation_pattern) : in[src];
  }
}

__device__ __forceinline__ double CubicWeight(double x, double a) {
  x = fabs(x);
  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0;
}

template <typename T>
__global__ void ResizeInterpolateKernel(const T* __restrict__ in, T* __restrict__ out,
                                        ResizeParams p, int64_t n) {
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    int64_t coords[kMaxRank];
    int64_t rem = i;
    for (int d = p.rank - 1; d >= 0; --d) {
      coords[d] = rem % p.axes[d].out_len;
      rem /= p.axes[d].out_len;
    }
    int64_t base = 0;
    int axes = 0;
    int count[kMaxInterpolatedAxes];
    int64_t offset[kMaxInterpolatedAxes][4];
    float weight[kMaxInterpolatedAxes][4];
    bool outside = false;
    for (int d = 0; d < p.rank; ++d) {
      const ResizeAxis& a = p.axes[d];
      if (a.identity) {
        base += coords[d] * p.in_strides[d];
        continue;
      }
      const double coord = SourceCoordinate(p, a, coords[d]);
      if (OutsideCrop(p, coord, a.in_len)) {
        outside = true;
        break;
      }
      const double fl = floor(coord);
      const double frac = coord - fl;
      const int64_t i0 = static_cast<int64_t>(fl);
      const int64_t last = a.in_len - 1;
      if (p.interp == ResizeInterp::kLinear) {
        count[axes] = 2;
        offset[axes][0] = Clamp(i0, 0, last) * p.in_strides[d];
        offset[axes][1] = Clamp(i0 + 1, 0, last) * p.in_strides[d];
        weight[axes][0] = static_cast<float>(1 - frac);
        weight[axes][1] = static_cast<float>(frac);
      } else {
        count[axes] = 4;
        double w[4];
        double sum = 0;
        for (int k = 0; k < 4; ++k) {
          const int64_t index = i0 - 1 + k;
          w[k] = CubicWeight(frac - (k - 1), p.cubic_a);
          if (p.exclude_outside && (index < 0 || index > last)) w[k] = 0;
          offset[axes][k] = Clamp(index, 0, last) * p.in_strides[d];
          sum += w[k];
        }
        for (int k = 0; k < 4; ++k) {
          if (p.exclude_outside && sum != 0) w[k] /= sum;
          weight[axes][k] = static_cast<float>(w[k]);
        }
      }
      ++axes;
    }
    if (outside) {
      out[i] = FromFloat<T>(p.extrapolation);
      continue;
    }
    int total = 1;
    for (int a = 0; a < axes; ++a) total *= count[a];
    float acc = 0.f;
    for (int combo = 0; combo < total; ++combo) {
      int rest = combo;
      float w = 1.f;
      int64_t pos = base;
      for (int a = axes - 1; a >= 0; --a) {
        const int k = rest % count[a];
        rest /= count[a];
        w *= weight[a][k];
        pos += offset[a][k];
      }
      if (w == 0.f) continue;  // The CPU skips zero-weight taps (keeps inf/NaN out).
      acc += w * ToFloat(in[pos]);
    }
    out[i] = FromFloat<T>(acc);
  }
}

// ---------------------------------------------------------------- topk

template <typename T>
struct KeyOf {
  using type = long long;
};
template <>
struct KeyOf<float> {
  using type = float;
};
template <>
struct KeyOf<__half> {
  using type = float;
};
template <>
struct KeyOf<__nv_bfloat16> {
  using type = float;
};
template <>
struct KeyOf<double> {
  using type = double;
};

template <typename K, typename T>
__device__ __forceinline__ K ToKey(T x) {
  if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) {
    return ToFloat(x);
  } else {
    return static_cast<K>(x);
  }
}

template <typename K>
__device__ __forceinline__ bool Greater(K a, K b) {
  if constexpr (std::is_floating_point<K>::value) {
    if (isnan(a)) return !isnan(b);
    if (isnan(b)) return false;
  }
  return a > b;
}

// The CPU's order: by value (largest or smallest first), ties by lower index.
template <typename K>
__device__ __forceinline__ bool Before(K va, int ia, K vb, int ib, bool largest) {
  const bool a_over_b = Greater(va, vb), b_over_a = Greater(vb, va);
  if (a_over_b != b_over_a) return largest ? a_over_b : b_over_a;
  return ia < ib;
}

constexpr int kTopKSortMax = 4096;  // Rows up to this length sort in shared memory.
constexpr int kPadIndex = INT_MAX;  // Padding entries sort after everything.

template <typename T, typename K>
__global__ void TopKSortKernel(const T* __restrict__ in, T* __restrict__ values,
                               int64_t* __restrict__ indices, int64_t rows, int64_t len,
                               int64_t inner, int64_t k, int padded, bool largest) {
  extern __shared__ __align__(16) unsigned char smem[];
  K* keys = reinterpret_cast<K*>(smem);
  int* ids = reinterpret_cast<int*>(keys + padded);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t o = row / inner, in_i = row - o * inner;
    const T* x = in + o * len * inner + in_i;
    for (int t = threadIdx.x; t < padded; t += blockDim.x) {
      if (t < len) {
        keys[t] = ToKey<K>(x[t * inner]);
        ids[t] = t;
      } else {
        keys[t] = K(0);
        ids[t] = kPadIndex;
      }
    }
    __syncthreads();
    for (int size = 2; size <= padded; size <<= 1) {
      for (int stride = size >> 1; stride > 0; stride >>= 1) {
        for (int t = threadIdx.x; t < padded; t += blockDim.x) {
          const int partner = t ^ stride;
          if (partner <= t) continue;
          // before(a, b): a belongs ahead of b (padding last).
          auto before = [&](int a, int b) {
            if (ids[a] == kPadIndex) return false;
            if (ids[b] == kPadIndex) return true;
            return Before(keys[a], ids[a], keys[b], ids[b], largest);
          };
          const bool ascending = (t & size) == 0;
          const bool swap = ascending ? before(partner, t) : before(t, partner);
          if (swap) {
            const K tk = keys[t];
            keys[t] = keys[partner];
            keys[partner] = tk;
            const int ti = ids[t];
            ids[t] = ids[partner];
            ids[partner] = ti;
          }
        }
        __syncthreads();
      }
    }
    for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
      const int id = ids[j];
      const int64_t pos = (o * k + j) * inner + in_i;
      values[pos] = x[static_cast<int64_t>(id) * inner];
      indices[pos] = id;
    }
    __syncthreads();
  }
}

constexpr int kSelectThreads = 256;

// Long rows: k rounds of a block-wide search for the best element after the
// previous pick in the (value, index) order.
template <typename T, typename K>
__global__ void TopKSelectKernel(const T* __restrict__ in, T* __restrict__ values,
                                 int64_t* __restrict__ indices, int64_t rows, int64_t len,
                                 int64_t inner, int64_t k, bool largest) {
  __shared__ K warp_key[kSelectThreads / 32];
  __shared__ int warp_id[kSelectThreads / 32];
  __shared__ K pick_key;
  __shared__ int pick_id;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t o = row / inner, in_i = row - o * inner;
    const T* x = in + o * len * inner + in_i;
    K prev_key = K(0);
    int prev_id = -1;
    for (int64_t r = 0; r < k; ++r) {
      K best_key = K(0);
      int best_id = -1;
      for (int t = threadIdx.x; t < len; t += blockDim.x) {
        const K v = ToKey<K>(x[static_cast<int64_t>(t) * inner]);
        if (prev_id >= 0 && !Before(prev_key, prev_id, v, t, largest)) continue;
        if (best_id < 0 || Before(v, t, best_key, best_id, largest)) {
          best_key = v;
          best_id = t;
        }
      }
      for (int off = 16; off > 0; off >>= 1) {
        const K other_key = __shfl_down_sync(0xffffffffu, best_key, off);
        const int other_id = __shfl_down_sync(0xffffffffu, best_id, off);
        if (other_id >= 0 && (best_id < 0 || Before(other_key, other_id, best_key, best_id, largest))) {
          best_key = other_key;
          best_id = other_id;
        }
      }
      if (lane == 0) {
        warp_key[warp] = best_key;
        warp_id[warp] = best_id;
      }
      __syncthreads();
      if (warp == 0) {
        best_key = lane < warps ? warp_key[lane] : K(0);
        best_id = lane < warps ? warp_id[lane] : -1;
        for (int off = 16; off > 0; off >>= 1) {
          const K other_key = __shfl_down_sync(0xffffffffu, best_key, off);
          const int other_id = __shfl_down_sync(0xffffffffu, best_id, off);
          if (other_id >= 0 &&
              (best_id < 0 || Before(other_key, other_id, best_key, best_id, largest))) {
            best_key = other_key;
            best_id = other_id;
          }
        }
        if (lane == 0) {
          pick_key = best_key;
          pick_id = best_id;
          const int64_t pos = (o * k + r) * inner + in_i;
          values[pos] = x[static_cast<int64_t>(best_id) * inner];
          indices[pos] = best_id;
        }
      }
      __syncthreads();
      prev_key = pick_key;
      prev_id = pick_id;
      __syncthreads();
    }
  }
}

template <typename Fn>
void DispatchTopK(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(Tag<float>{}); break;
    case DType::kFloat16: fn(Tag<__half>{}); break;
    case DType::kBFloat16: fn(Tag<__nv_bfloat16>{}); break;
    case DType::kFloat64: fn(Tag<double>{}); break;
    case DType::kInt8: fn(Tag<int8_t>{}); break;
    case DType::kUInt8: fn(Tag<uint8_t>{}); break;
    case DType::kInt16: fn(Tag<int16_t>{}); break;
    case DType::kInt32: fn(Tag<int32_t>{}); break;
    case DType::kInt64: fn(Tag<int64_t>{}); break;
    default: Fail("TopK does not support ", DTypeName(dtype));
  }
}

// ---------------------------------------------------------------- cumsum

template <typename T>
struct AccOf {
  using type = T;
};
template <>
struct AccOf<__half> {
  using type = float;
};
template <>
struct AccOf<__nv_bfloat16> {
  using type = float;
};

template <typename A, typename T>
__device__ __forceinline__ A ToAcc(T x) {
  if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) {
    return ToFloat(x);
  } else {
    return static_cast<A>(x);
  }
}
template <typename T, typename A>
__device__ __forceinline__ T FromAcc(A x) {
  if constexpr (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value) {
    return FromFloat<T>(x);
  } else {
    return static_cast<T>(x);
  }
}

// One thread per (outer, inner) line, summing sequentially like the CPU.
template <typename T>
__global__ void CumSumLinesKernel(const T* __restrict__ in, T* __restrict__ out, int64_t len,
                                  int64_t inner, bool exclusive, bool reverse, int64_t lines) {
  using A = typename AccOf<T>::type;
  for (int64_t line = GlobalThread<int64_t>(); line < lines; line += GridStride<int64_t>()) {
    const int64_t o = line / inner, i = line - o * inner;
    const T* x = in + o * len * inner + i;
    T* y = out + o * len * inner + i;
    A sum = A(0);
    for (int64_t step = 0; step < len; ++step) {
      const int64_t a = reverse ? len - 1 - step : step;
      const A v = ToAcc<A>(x[a * inner]);
      if (exclusive) {
        y[a * inner] = FromAcc<T>(sum);
        sum = static_cast<A>(sum + v);
      } else {
        sum = static_cast<A>(sum + v);
        y[a * inner] = FromAcc<T>(sum);
      }
    }
  }
}

constexpr int kScanThreads = 256;

// Long contiguous rows (inner == 1): one block per row scans chunks.
template <typename T>
__global__ void CumSumRowsKernel(const T* __restrict__ in, T* __restrict__ out, int64_t rows,
                                 int64_t len, bool exclusive, bool reverse) {
  using A = typename AccOf<T>::type;
  using Scan = cub::BlockScan<A, kScanThreads>;
  __shared__ typename Scan::TempStorage storage;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* x = in + row * len;
    T* y = out + row * len;
    A carry = A(0);
    for (int64_t base = 0; base < len; base += kScanThreads) {
      const int64_t s = base + threadIdx.x;
      const int64_t a = reverse ? len - 1 - s : s;
      const A v = s < len ? ToAcc<A>(x[a]) : A(0);
      A before, total;
      Scan(storage).ExclusiveSum(v, before, total);
      if (s < len) y[a] = FromAcc<T>(exclusive ? static_cast<A>(carry + before)
                                                : static_cast<A>(carry + before + v));
      carry = static_cast<A>(carry + total);
      __syncthreads();
    }
  }
}

template <typename Fn>
void DispatchCumSum(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(Tag<float>{}); break;
    case DType::kFloat16: fn(Tag<__half>{}); break;
    case DType::kBFloat16: fn(Tag<__nv_bfloat16>{}); break;
    case DType::kFloat64: fn(Tag<double>{}); break;
    case DType::kInt32: fn(Tag<int32_t>{}); break;
    case DType::kInt64: fn(Tag<int64_t>{}); break;
    default: Fail("CumSum does not support ", DTypeName(dtype));
  }
}

// ---------------------------------------------------------------- trilu, onehot

template <typename U>
__global__ void TriluKernel(const U* __restrict__ in, U* __restrict__ out, int64_t rows,
                            int64_t cols, int64_t k, const int64_t* __restrict__ k_dev,
                            bool upper, int64_t n) {
  const int64_t kk = k_dev ? *k_dev : k;
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    const int64_t c = i % cols;
    const int64_t r = (i / cols) % rows;
    const bool keep = upper ? c >= r + kk : c <= r + kk;
    out[i] = keep ? in[i] : U(0);
  }
}

template <typename U, typename Idx>
__global__ void OneHotKernel(const Idx* __restrict__ indices, const U* __restrict__ values,
                             U* __restrict__ out, int64_t depth, int64_t inner, int64_t n) {
  const U off = values[0], on = values[1];
  for (int64_t i = GlobalThread<int64_t>(); i < n; i += GridStride<int64_t>()) {
    const int64_t t = i / inner, in_i = i - t * inner;
    const int64_t o = t / depth, d = t - o * depth;
    int64_t index;
    if constexpr (std::is_same<Idx, __half>::value) {
      index = static_cast<int64_t>(static_cast<double>(__half2float(indices[o * inner + in_i])));
    } else {
      index = static_cast<int64_t>(static_cast<double>(indices[o * inner + in_i]));
    }
    if (index < 0) index += depth;
    out[i] = index == d ? on : off;
  }
}

template <typename Fn>
void DispatchOneHotIndex(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kInt64: fn(Tag<int64_t>{}); break;
    case DType::kInt32: fn(Tag<int32_t>{}); break;
    case DType::kInt8: fn(Tag<int8_t>{}); break;
    case DType::kUInt8: fn(Tag<uint8_t>{}); break;
    case DType::kFloat32: fn(Tag<float>{}); break;
    case DType::kFloat64: fn(Tag<double>{}); break;
    case DType::kFloat16: fn(Tag<__half>{}); break;
    default: Fail("OneHot does not support ", DTypeName(dtype), " indices");
  }
}

}  // namespace

// ================================================================= launchers

bool PlanStridedCopy(const std::vector<int64_t>& dims, const std::vector<int64_t>& in_strides,
                     int64_t in_offset, const std::vector<int64_t>* out_strides,
                     int64_t out_offset, StridedCopyParams* params) {
  const size_t rank = dims.size();
  std::vector<int64_t> os(rank, 1);
  if (out_strides) {
    os = *out_strides;
  } else {
    for (size_t i = rank; i-- > 1;) os[i - 1] = os[i] * dims[i];
  }
  StridedCopyParams p;
  p.in_offset = in_offset;
  p.out_offset = out_offset;
  for (int64_t d : dims) {
    if (d == 0) {  // Empty: nothing to copy.
      p.rank = 1;
      p.dims[0] = 0;
      p.in_strides[0] = p.out_strides[0] = 1;
      *params = p;
      return true;
    }
  }
  std::vector<int64_t> kd, ki, ko;
  for (size_t i = 0; i < rank; ++i) {
    if (dims[i] == 1) continue;
    if (!kd.empty() && ki.back() == in_strides[i] * dims[i] && ko.back() == os[i] * dims[i]) {
      kd.back() *= dims[i];
      ki.back() = in_strides[i];
      ko.back() = os[i];
    } else {
      kd.push_back(dims[i]);
      ki.push_back(in_strides[i]);
      ko.push_back(os[i]);
    }
  }
  if (kd.size() > static_cast<size_t>(kMaxRank)) return false;
  p.rank = static_cast<int>(kd.size());
  int64_t expect = 1;
  bool contiguous = out_offset == 0;
  for (int i = p.rank - 1; i >= 0; --i) {
    p.dims[i] = kd[static_cast<size_t>(i)];
    p.in_strides[i] = ki[static_cast<size_t>(i)];
    p.out_strides[i] = ko[static_cast<size_t>(i)];
    contiguous = contiguous && p.out_strides[i] == expect;
    expect *= p.dims[i];
  }
  p.out_contiguous = contiguous;
  *params = p;
  return true;
}

int64_t NumElements(const StridedCopyParams& p) {
  int64_t n = 1;
  for (int i = 0; i < p.rank; ++i) n *= p.dims[i];
  return n;
}

namespace {

// When the innermost dim is contiguous on both sides, copies pairs of
// elements as one wider element (up to 16 bytes) while sizes, strides,
// offsets and pointer alignment allow: a head-split Transpose of [b,s,h,64]
// fp16 then moves 16-byte vectors with an eighth of the index math.
size_t WidenStridedCopy(const void* in, const void* out, size_t elem_size, StridedCopyParams* p) {
  while (elem_size < 16 && p->rank >= 1) {
    const int last = p->rank - 1;
    const size_t wide = elem_size * 2;
    if (p->in_strides[last] != 1 || (!p->out_contiguous && p->out_strides[last] != 1)) break;
    bool even = p->dims[last] % 2 == 0 && p->in_offset % 2 == 0 && p->out_offset % 2 == 0;
    for (int d = 0; d < last && even; ++d) {
      even = p->in_strides[d] % 2 == 0 && (p->out_contiguous || p->out_strides[d] % 2 == 0);
    }
    const auto base_in = reinterpret_cast<uintptr_t>(in) + static_cast<uintptr_t>(p->in_offset) * elem_size;
    const auto base_out = reinterpret_cast<uintptr_t>(out) + static_cast<uintptr_t>(p->out_offset) * elem_size;
    if (!even || base_in % wide != 0 || base_out % wide != 0) break;
    p->dims[last] /= 2;
    for (int d = 0; d < last; ++d) {
      p->in_strides[d] /= 2;
      if (!p->out_contiguous) p->out_strides[d] /= 2;
    }
    p->in_offset /= 2;
    p->out_offset /= 2;
    elem_size = wide;
  }
  return elem_size;
}

}  // namespace

void LaunchStridedCopy(const void* in, void* out, size_t elem_size, const StridedCopyParams& params,
                       cudaStream_t stream) {
  if (NumElements(params) == 0) return;
  StridedCopyParams p = params;
  elem_size = WidenStridedCopy(in, out, elem_size, &p);
  const int64_t n = NumElements(p);
  if (p.out_contiguous && (p.rank == 0 || (p.rank == 1 && p.in_strides[0] == 1))) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(out, static_cast<const char*>(in) + p.in_offset * static_cast<int64_t>(elem_size),
                                    static_cast<size_t>(n) * elem_size, cudaMemcpyDeviceToDevice,
                                    stream));
    return;
  }
  int64_t in_reach = p.in_offset < 0 ? -p.in_offset : p.in_offset;
  int64_t out_reach = p.out_offset;
  for (int i = 0; i < p.rank; ++i) {
    in_reach += (p.dims[i] - 1) * (p.in_strides[i] < 0 ? -p.in_strides[i] : p.in_strides[i]);
    out_reach += (p.dims[i] - 1) * (p.out_strides[i] < 0 ? -p.out_strides[i] : p.out_strides[i]);
  }
  const bool fits32 = n < kInt32Limit && in_reach < kInt32Limit && out_reach < kInt32Limit;
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    DispatchIndexMath(fits32, [&](auto idx) {
      using I = typename decltype(idx)::type;
      const U* src = static_cast<const U*>(in);
      U* dst = static_cast<U*>(out);
      if (p.out_contiguous) {
        StridedCopyKernel<U, I, true><<<Blocks(n), kThreads, 0, stream>>>(src, dst, p, static_cast<I>(n));
      } else {
        StridedCopyKernel<U, I, false><<<Blocks(n), kThreads, 0, stream>>>(src, dst, p, static_cast<I>(n));
      }
      KILN_LAUNCH_CHECK();
    });
  });
}

bool TransposeCastSupported(DType in_dtype, DType out_dtype) {
  if (in_dtype == out_dtype) {
    size_t s = DTypeSize(in_dtype);
    return s == 1 || s == 2 || s == 4 || s == 8;
  }
  auto is_float = [](DType d) {
    return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
  };
  return is_float(in_dtype) && is_float(out_dtype);
}

void LaunchTransposeBRC(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t B,
                        int64_t R, int64_t C, cudaStream_t stream) {
  const int64_t n = B * R * C;
  if (n == 0) return;
  if (in_dtype == out_dtype) {
    const size_t size = DTypeSize(in_dtype);
    if (R == 1 || C == 1) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(out, in, static_cast<size_t>(n) * size,
                                      cudaMemcpyDeviceToDevice, stream));
      return;
    }
    KILN_CHECK(size == 1 || size == 2 || size == 4 || size == 8, "transpose: unsupported dtype ",
               DTypeName(in_dtype));
    DispatchBySize(size, [&](auto u) {
      using U = typename decltype(u)::type;
      if constexpr (sizeof(U) <= 8) {
        TransposeBRCTyped(static_cast<const U*>(in), static_cast<U*>(out), B, R, C, stream);
      }
    });
    return;
  }
  DispatchFloat(in_dtype, [&](auto ti) {
    using In = typename decltype(ti)::type;
    DispatchFloat(out_dtype, [&](auto to) {
      using Out = typename decltype(to)::type;
      TransposeBRCTyped(static_cast<const In*>(in), static_cast<Out*>(out), B, R, C, stream);
    });
  });
}

void LaunchFill(void* out, int64_t n, size_t elem_size, uint64_t pattern, cudaStream_t stream) {
  if (n <= 0) return;
  if (pattern == 0) {
    KILN_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(n) * elem_size, stream));
    return;
  }
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    if constexpr (sizeof(U) <= 8) {
      FillKernel<U><<<Blocks(n), kThreads, 0, stream>>>(static_cast<U*>(out), static_cast<U>(pattern), n);
      KILN_LAUNCH_CHECK();
    }
  });
}

void LaunchWriteBlob(void* out, const Blob& blob, cudaStream_t stream) {
  if (blob.nbytes <= 0) return;
  KILN_CHECK(blob.nbytes <= kBlobBytes, "blob of ", blob.nbytes, " bytes is too large");
  WriteBlobKernel<<<1, kThreads, 0, stream>>>(static_cast<unsigned char*>(out), blob);
  KILN_LAUNCH_CHECK();
}

void LaunchEyeLike(void* out, size_t elem_size, int64_t rows, int64_t cols, int64_t k,
                   uint64_t one_pattern, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    if constexpr (sizeof(U) <= 8) {
      EyeLikeKernel<U><<<Blocks(n), kThreads, 0, stream>>>(static_cast<U*>(out), cols, k,
                                                           static_cast<U>(one_pattern), n);
      KILN_LAUNCH_CHECK();
    }
  });
}

template <typename Fn>
static void DispatchRange(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(Tag<float>{}); break;
    case DType::kFloat64: fn(Tag<double>{}); break;
    case DType::kFloat16: fn(Tag<__half>{}); break;
    case DType::kBFloat16: fn(Tag<__nv_bfloat16>{}); break;
    case DType::kInt16: fn(Tag<int16_t>{}); break;
    case DType::kInt32: fn(Tag<int32_t>{}); break;
    case DType::kInt64: fn(Tag<int64_t>{}); break;
    default: Fail("Range does not support ", DTypeName(dtype));
  }
}

bool RangeSupported(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64:
      return true;
    default:
      return false;
  }
}

void LaunchRange(const void* start, const void* delta, void* out, DType dtype, int64_t n,
                 cudaStream_t stream) {
  if (n <= 0) return;
  DispatchRange(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    RangeKernel<T><<<Blocks(n), kThreads, 0, stream>>>(static_cast<const T*>(start),
                                                       static_cast<const T*>(delta),
                                                       static_cast<T*>(out), n);
    KILN_LAUNCH_CHECK();
  });
}

void LaunchConcat(const PartsParams& p, void* out, size_t unit, cudaStream_t stream) {
  int64_t most = 0;
  for (int i = 0; i < p.count; ++i) most = std::max(most, p.outer * p.row[i]);
  if (most == 0 || p.count == 0) return;
  const bool fits32 = p.outer * p.wide_row < kInt32Limit;
  DispatchBySize(unit, [&](auto u) {
    using U = typename decltype(u)::type;
    DispatchIndexMath(fits32, [&](auto idx) {
      using I = typename decltype(idx)::type;
      dim3 grid(Blocks(most), static_cast<unsigned>(p.count));
      ConcatKernel<U, I><<<grid, kThreads, 0, stream>>>(p, static_cast<U*>(out));
      KILN_LAUNCH_CHECK();
    });
  });
}

void LaunchSplit(const PartsParams& p, const void* in, size_t unit, cudaStream_t stream) {
  int64_t most = 0;
  for (int i = 0; i < p.count; ++i)
    if (p.ptr[i]) most = std::max(most, p.outer * p.row[i]);
  if (most == 0 || p.count == 0) return;
  const bool fits32 = p.outer * p.wide_row < kInt32Limit;
  DispatchBySize(unit, [&](auto u) {
    using U = typename decltype(u)::type;
    DispatchIndexMath(fits32, [&](auto idx) {
      using I = typename decltype(idx)::type;
      dim3 grid(Blocks(most), static_cast<unsigned>(p.count));
      SplitKernel<U, I><<<grid, kThreads, 0, stream>>>(p, static_cast<const U*>(in));
      KILN_LAUNCH_CHECK();
    });
  });
}

void LaunchGather(const void* data, const void* indices, bool indices_int64, void* out,
                  int64_t outer, int64_t axis_len, int64_t n_idx, int64_t block, size_t unit,
                  cudaStream_t stream) {
  const int64_t n = outer * n_idx * block;
  if (n == 0) return;
  const bool fits32 = n < kInt32Limit && outer * axis_len * block < kInt32Limit;
  DispatchBySize(unit, [&](auto u) {
    using U = typename decltype(u)::type;
    DispatchIndex(indices_int64, [&](auto ix) {
      using Idx = typename decltype(ix)::type;
      DispatchIndexMath(fits32, [&](auto im) {
        using I = typename decltype(im)::type;
        GatherKernel<U, Idx, I><<<Blocks(n), kThreads, 0, stream>>>(
            static_cast<const U*>(data), static_cast<const Idx*>(indices), static_cast<U*>(out),
            static_cast<I>(axis_len), static_cast<I>(n_idx), static_cast<I>(block),
            static_cast<I>(n));
        KILN_LAUNCH_CHECK();
      });
    });
  });
}

void LaunchGatherElements(const void* data, const void* indices, bool indices_int64, void* out,
                          size_t elem_size, const ElementIndexParams& p, cudaStream_t stream) {
  int64_t n = 1;
  for (int i = 0; i < p.rank; ++i) n *= p.idx_dims[i];
  if (n == 0) return;
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    DispatchIndex(indices_int64, [&](auto ix) {
      using Idx = typename decltype(ix)::type;
      GatherElementsKernel<U, Idx><<<Blocks(n), kThreads, 0, stream>>>(
          static_cast<const U*>(data), static_cast<const Idx*>(indices), static_cast<U*>(out), p, n);
      KILN_LAUNCH_CHECK();
    });
  });
}

void LaunchGatherND(const void* data, const void* indices, bool indices_int64, void* out,
                    size_t elem_size, const GatherNDParams& p, cudaStream_t stream) {
  const int64_t n = p.batches * p.per_batch * p.slice;
  if (n == 0) return;
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    DispatchIndex(indices_int64, [&](auto ix) {
      using Idx = typename decltype(ix)::type;
      GatherNDKernel<U, Idx><<<Blocks(n), kThreads, 0, stream>>>(
          static_cast<const U*>(data), static_cast<const Idx*>(indices), static_cast<U*>(out), p, n);
      KILN_LAUNCH_CHECK();
    });
  });
}

bool ScatterReductionSupported(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kFloat64:
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64:
      return true;
    default:
      return false;
  }
}

// Scatters run on the compute type for reductions and on raw bytes otherwise.
template <typename Fn>
static void DispatchScatter(DType dtype, ScatterReduction reduction, Fn&& fn) {
  if (reduction == ScatterReduction::kNone) {
    DispatchBySize(DTypeSize(dtype), [&](auto u) {
      using U = typename decltype(u)::type;
      if constexpr (sizeof(U) <= 8) fn(u);
    });
  } else {
    DispatchScatterType(dtype, fn);
  }
}

void LaunchScatterElements(const void* updates, const void* indices, bool indices_int64,
                           void* out, DType dtype, ScatterReduction reduction,
                           const ElementIndexParams& p, cudaStream_t stream) {
  int64_t n = 1;
  for (int i = 0; i < p.rank; ++i) n *= p.idx_dims[i];
  if (n == 0) return;
  DispatchScatter(dtype, reduction, [&](auto t) {
    using T = typename decltype(t)::type;
    DispatchIndex(indices_int64, [&](auto ix) {
      using Idx = typename decltype(ix)::type;
      // 1-byte reductions run serially (no byte-wide atomics).
      const bool serial = reduction != ScatterReduction::kNone && sizeof(T) == 1;
      ScatterElementsKernel<T, Idx><<<serial ? 1u : Blocks(n), serial ? 1 : kThreads, 0, stream>>>(
          static_cast<const T*>(updates), static_cast<const Idx*>(indices), static_cast<T*>(out),
          reduction, p, n);
      KILN_LAUNCH_CHECK();
    });
  });
}

void LaunchScatterND(const void* updates, const void* indices, bool indices_int64, void* out,
                     DType dtype, ScatterReduction reduction, const GatherNDParams& p,
                     cudaStream_t stream) {
  const int64_t n = p.batches * p.per_batch * p.slice;
  if (n == 0) return;
  DispatchScatter(dtype, reduction, [&](auto t) {
    using T = typename decltype(t)::type;
    DispatchIndex(indices_int64, [&](auto ix) {
      using Idx = typename decltype(ix)::type;
      // 1-byte reductions run serially (no byte-wide atomics).
      const bool serial = reduction != ScatterReduction::kNone && sizeof(T) == 1;
      ScatterNDKernel<T, Idx><<<serial ? 1u : Blocks(n), serial ? 1 : kThreads, 0, stream>>>(
          static_cast<const T*>(updates), static_cast<const Idx*>(indices), static_cast<T*>(out),
          reduction, p, n);
      KILN_LAUNCH_CHECK();
    });
  });
}

void LaunchPad(const void* in, void* out, const void* fill, size_t elem_size, const PadParams& p,
               cudaStream_t stream) {
  int64_t n = 1, in_n = 1;
  for (int i = 0; i < p.rank; ++i) {
    n *= p.out_dims[i];
    in_n *= p.in_dims[i];
  }
  if (n == 0) return;
  const bool fits32 = n < kInt32Limit && in_n < kInt32Limit;
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    if constexpr (sizeof(U) <= 8) {
      DispatchIndexMath(fits32, [&](auto im) {
        using I = typename decltype(im)::type;
        PadKernel<U, I><<<Blocks(n), kThreads, 0, stream>>>(
            static_cast<const U*>(in), static_cast<U*>(out), static_cast<const U*>(fill), p,
            static_cast<I>(n));
        KILN_LAUNCH_CHECK();
      });
    }
  });
}

void LaunchResize(const void* in, void* out, DType dtype, int64_t out_numel,
                  const ResizeParams& p, cudaStream_t stream) {
  if (out_numel == 0) return;
  if (p.interp == ResizeInterp::kNearest) {
    DispatchBySize(DTypeSize(dtype), [&](auto u) {
      using U = typename decltype(u)::type;
      if constexpr (sizeof(U) <= 8) {
        ResizeNearestKernel<U><<<Blocks(out_numel), kThreads, 0, stream>>>(
            static_cast<const U*>(in), static_cast<U*>(out), p, out_numel);
        KILN_LAUNCH_CHECK();
      }
    });
    return;
  }
  DispatchFloat(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    ResizeInterpolateKernel<T><<<Blocks(out_numel), kThreads, 0, stream>>>(
        static_cast<const T*>(in), static_cast<T*>(out), p, out_numel);
    KILN_LAUNCH_CHECK();
  });
}

bool TopKSupported(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kFloat64:
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64:
      return true;
    default:
      return false;
  }
}

void LaunchTopK(const void* in, DType dtype, void* values, void* indices, int64_t outer,
                int64_t len, int64_t inner, int64_t k, bool largest, cudaStream_t stream) {
  const int64_t rows = outer * inner;
  if (rows == 0 || k == 0) return;
  KILN_CHECK(len < INT_MAX, "TopK axis of ", len, " elements is too long");
  DispatchTopK(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    using K = typename KeyOf<T>::type;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>(rows, kMaxBlocks * 16));
    if (len <= kTopKSortMax) {
      int padded = 1;
      while (padded < len) padded <<= 1;
      const size_t shared = static_cast<size_t>(padded) * (sizeof(K) + sizeof(int));
      const int threads = std::min(std::max(padded / 2, 32), 512);
      TopKSortKernel<T, K><<<grid, threads, shared, stream>>>(
          static_cast<const T*>(in), static_cast<T*>(values), static_cast<int64_t*>(indices), rows,
          len, inner, k, padded, largest);
    } else {
      TopKSelectKernel<T, K><<<grid, kSelectThreads, 0, stream>>>(
          static_cast<const T*>(in), static_cast<T*>(values), static_cast<int64_t*>(indices), rows,
          len, inner, k, largest);
    }
    KILN_LAUNCH_CHECK();
  });
}

bool CumSumSupported(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kFloat64:
    case DType::kInt32:
    case DType::kInt64:
      return true;
    default:
      return false;
  }
}

void LaunchCumSum(const void* in, void* out, DType dtype, int64_t outer, int64_t len,
                  int64_t inner, bool exclusive, bool reverse, cudaStream_t stream) {
  const int64_t lines = outer * inner;
  if (lines == 0 || len == 0) return;
  DispatchCumSum(dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    if (inner == 1 && len > 1024) {
      const unsigned grid = static_cast<unsigned>(std::min<int64_t>(lines, kMaxBlocks * 16));
      CumSumRowsKernel<T><<<grid, kScanThreads, 0, stream>>>(
          static_cast<const T*>(in), static_cast<T*>(out), lines, len, exclusive, reverse);
    } else {
      CumSumLinesKernel<T><<<Blocks(lines), kThreads, 0, stream>>>(
          static_cast<const T*>(in), static_cast<T*>(out), len, inner, exclusive, reverse, lines);
    }
    KILN_LAUNCH_CHECK();
  });
}

void LaunchTrilu(const void* in, void* out, size_t elem_size, int64_t matrices, int64_t rows,
                 int64_t cols, int64_t k, const void* k_dev, bool upper, cudaStream_t stream) {
  const int64_t n = matrices * rows * cols;
  if (n == 0) return;
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    if constexpr (sizeof(U) <= 8) {
      TriluKernel<U><<<Blocks(n), kThreads, 0, stream>>>(
          static_cast<const U*>(in), static_cast<U*>(out), rows, cols, k,
          static_cast<const int64_t*>(k_dev), upper, n);
      KILN_LAUNCH_CHECK();
    }
  });
}

bool OneHotIndexSupported(DType dtype) {
  switch (dtype) {
    case DType::kInt64:
    case DType::kInt32:
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kFloat32:
    case DType::kFloat64:
    case DType::kFloat16:
      return true;
    default:
      return false;
  }
}

void LaunchOneHot(const void* indices, DType indices_dtype, const void* values, void* out,
                  size_t elem_size, int64_t outer, int64_t depth, int64_t inner,
                  cudaStream_t stream) {
  const int64_t n = outer * depth * inner;
  if (n == 0) return;
  DispatchBySize(elem_size, [&](auto u) {
    using U = typename decltype(u)::type;
    if constexpr (sizeof(U) <= 8) {
      DispatchOneHotIndex(indices_dtype, [&](auto ix) {
        using Idx = typename decltype(ix)::type;
        OneHotKernel<U, Idx><<<Blocks(n), kThreads, 0, stream>>>(
            static_cast<const Idx*>(indices), static_cast<const U*>(values), static_cast<U*>(out),
            depth, inner, n);
        KILN_LAUNCH_CHECK();
      });
    }
  });
}

}  // namespace kiln::gpu::tensor_kernels
