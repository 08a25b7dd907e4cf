// Pooling kernels (see pool.h). One thread per output element for windowed
// pooling (consecutive threads take consecutive output elements in memory
// order, i.e. consecutive channels for NHWC); global pooling reduces a plane
// per warp/block (row-major) or walks the spatial positions per channel
// vector (NHWC, coalesced and vectorized along C).
#include "cuda/kernels/pool.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cuda/cuda_check.h"

namespace kiln::gpu::kernels {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int64_t kMaxGrid = int64_t{1} << 20;

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
__device__ __forceinline__ T FromVal(Val<T> v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return static_cast<T>(v);
  }
}

// The CPU kernel's numeric_limits<T>::lowest() of the compute type (float
// for the half types).
template <typename T>
__device__ __forceinline__ Val<T> Lowest() {
  if constexpr (IsFloatLike<T>::value) {
    return -3.402823466e+38f;
  } else {
    return static_cast<Val<T>>(std::numeric_limits<T>::lowest());
  }
}

unsigned GridFor(int64_t blocks) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxGrid)));
}

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// Windowed pooling. Thread work item g covers kVec consecutive channels of
// one output position (kVec > 1 only for NHWC, channels % kVec == 0); items
// are numbered in output memory order, so item g writes y[g * kVec ...].
// I is the index type (int32 when every offset fits, else int64).
// kMax: MaxPool (flag = column-major indices; indices only with kVec == 1);
// otherwise AveragePool (flag = count_include_pad).
template <typename T, typename I, int kVec, bool kMax>
__global__ void __launch_bounds__(256)
    PoolKernel(const T* __restrict__ x, T* __restrict__ y, int64_t* __restrict__ indices,
               bool flag, const PoolParams p) {
  using V = Val<T>;
  using P = Pack<T, kVec>;
  const I C = static_cast<I>(p.channels);
  const I D = static_cast<I>(p.in[0]), H = static_cast<I>(p.in[1]), W = static_cast<I>(p.in[2]);
  const I OD = static_cast<I>(p.out[0]), OH = static_cast<I>(p.out[1]),
          OW = static_cast<I>(p.out[2]);
  const I KD = static_cast<I>(p.kernel[0]), KH = static_cast<I>(p.kernel[1]),
          KW = static_cast<I>(p.kernel[2]);
  const I SD = static_cast<I>(p.stride[0]), SH = static_cast<I>(p.stride[1]),
          SW = static_cast<I>(p.stride[2]);
  const I DD = static_cast<I>(p.dilation[0]), DH = static_cast<I>(p.dilation[1]),
          DW = static_cast<I>(p.dilation[2]);
  const I PD = static_cast<I>(p.pad[0]), PH = static_cast<I>(p.pad[1]),
          PW = static_cast<I>(p.pad[2]);
  const I CV = C / kVec;
  const int64_t total = p.batch * p.channels / kVec * p.out[0] * p.out[1] * p.out[2];
  for (int64_t gi = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; gi < total;
       gi += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const I g = static_cast<I>(gi);
    I n, c, od, oh, ow;
    if (p.nhwc) {
      c = (g % CV) * kVec;
      I t = g / CV;
      ow = t % OW;
      t /= OW;
      oh = t % OH;
      n = t / OH;
      od = 0;
    } else {
      ow = g % OW;
      I t = g / OW;
      oh = t % OH;
      t /= OH;
      od = t % OD;
      t /= OD;
      c = t % C;
      n = t / C;
    }
    V acc[kVec];
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[j] = kMax ? Lowest<T>() : V(0);
    bool found = false;
    I count = 0, best_d = 0, best_h = 0, best_w = 0;
    const I d0 = od * SD - PD, h0 = oh * SH - PH, w0 = ow * SW - PW;
    for (I kd = 0; kd < KD; ++kd) {
      const I id = d0 + kd * DD;
      if (id < 0 || id >= D) continue;
      for (I kh = 0; kh < KH; ++kh) {
        const I ih = h0 + kh * DH;
        if (ih < 0 || ih >= H) continue;
        for (I kw = 0; kw < KW; ++kw) {
          const I iw = w0 + kw * DW;
          if (iw < 0 || iw >= W) continue;
          const I off = p.nhwc ? ((n * H + ih) * W + iw) * C + c
                               : ((n * C + c) * D + id) * H * W + ih * W + iw;
          const P v = *reinterpret_cast<const P*>(x + off);
#pragma unroll
          for (int j = 0; j < kVec; ++j) {
            const V value = ToVal<T>(v.v[j]);
            if constexpr (kMax) {
              // The first tap in the window wins until a strictly greater one.
              if (!found || value > acc[j]) {
                acc[j] = value;
                if constexpr (kVec == 1) {
                  best_d = id;
                  best_h = ih;
                  best_w = iw;
                }
              }
            } else {
              acc[j] += value;
            }
          }
          found = true;
          ++count;
        }
      }
    }
    P r;
    if constexpr (kMax) {
#pragma unroll
      for (int j = 0; j < kVec; ++j) r.v[j] = FromVal<T>(acc[j]);
      if constexpr (kVec == 1) {
        if (indices != nullptr) {
          // Flat NCHW index; storage_order 1 orders the spatial dims column-major.
          const int64_t spatial =
              flag ? (static_cast<int64_t>(best_w) * H + best_h) * D + best_d
                   : (static_cast<int64_t>(best_d) * H + best_h) * W + best_w;
          indices[gi] = (static_cast<int64_t>(n) * C + c) * (static_cast<int64_t>(D) * H * W) +
                        spatial;
        }
      }
    } else {
      if (flag) {
        // count_include_pad: taps inside the padded extent [-pad, in + pad_end).
        const int64_t o[3] = {od, oh, ow};
        int64_t taps_total = 1;
        for (int a = 0; a < 3; ++a) {
          int64_t taps = 0;
          for (int64_t k = 0; k < p.kernel[a]; ++k) {
            const int64_t idx = o[a] * p.stride[a] - p.pad[a] + k * p.dilation[a];
            taps += (idx >= -p.pad[a] && idx < p.in[a] + p.pad_end[a]) ? 1 : 0;
          }
          taps_total *= taps;
        }
        count = static_cast<I>(taps_total);
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j)
        r.v[j] = FromVal<T>(count > 0 ? acc[j] / static_cast<float>(count) : 0.f);
    }
    *reinterpret_cast<P*>(y + gi * kVec) = r;
  }
}

// Reductions over aligned groups of kWidth lanes (all 32 lanes must call).
template <int kWidth, typename V>
__device__ __forceinline__ V WarpSum(V v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// Max like std::max_element: a later value replaces only when strictly
// greater, so a NaN first element stays and later NaNs are ignored.
template <int kWidth, typename V>
__device__ __forceinline__ V WarpMax(V v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) {
    const V other = __shfl_xor_sync(kFullMask, v, o);
    if (v < other) v = other;
  }
  return v;
}

// Row-major global pooling: one plane of `volume` contiguous elements per
// group of kGroup threads (8 or 32 lanes, or the block). Loops run over
// block-uniform bases so every lane takes part in the shuffles.
template <typename T, bool kMax, int kGroup>
__global__ void __launch_bounds__(256)
    GlobalPoolRowsKernel(const T* __restrict__ x, T* __restrict__ y, int64_t planes,
                         int64_t volume) {
  using V = Val<T>;
  __shared__ V smem[32];
  const int lane = static_cast<int>(threadIdx.x % kGroup);
  const int64_t per_block = blockDim.x / kGroup;
  const int64_t step = static_cast<int64_t>(gridDim.x) * per_block;
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * per_block; first < planes;
       first += step) {
    const int64_t plane = first + threadIdx.x / kGroup;
    const bool valid = plane < planes;
    const int64_t count = valid ? volume : 0;
    const T* in = x + (valid ? plane * volume : 0);
    V acc = kMax ? ToVal<T>(in[0]) : V(0);
    for (int64_t k = lane; k < count; k += kGroup) {
      const V v = ToVal<T>(in[k]);
      if constexpr (kMax) {
        if (acc < v) acc = v;
      } else {
        acc += v;
      }
    }
    constexpr int kWidth = kGroup < 32 ? kGroup : 32;
    acc = kMax ? WarpMax<kWidth>(acc) : WarpSum<kWidth>(acc);
    if constexpr (kGroup > 32) {
      const int wl = threadIdx.x & 31, warp = threadIdx.x >> 5;
      __syncthreads();
      if (wl == 0) smem[warp] = acc;
      __syncthreads();
      acc = smem[0];
      for (int i = 1; i < kGroup / 32; ++i) {
        if constexpr (kMax) {
          if (acc < smem[i]) acc = smem[i];
        } else {
          acc += smem[i];
        }
      }
    }
    if (lane == 0 && valid) {
      if constexpr (kMax) {
        y[plane] = FromVal<T>(acc);
      } else {
        y[plane] = FromVal<T>(acc / static_cast<float>(volume));
      }
    }
  }
}

// NHWC global pooling: one thread per (n, kVec consecutive channels), walking
// the spatial positions; neighbouring threads read neighbouring channels.
template <typename T, bool kMax, int kVec>
__global__ void GlobalPoolNhwcKernel(const T* __restrict__ x, T* __restrict__ y, int64_t batch,
                                     int64_t channels, int64_t volume) {
  using V = Val<T>;
  using P = Pack<T, kVec>;
  const int64_t vecs = channels / kVec;
  const int64_t total = batch * vecs;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / vecs, cv = i % vecs;
    const T* in = x + n * volume * channels + cv * kVec;
    V acc[kVec];
    const P first = *reinterpret_cast<const P*>(in);
#pragma unroll
    for (int j = 0; j < kVec; ++j) acc[j] = kMax ? ToVal<T>(first.v[j]) : V(0);
    for (int64_t s = kMax ? 1 : 0; s < volume; ++s) {
      const P p = *reinterpret_cast<const P*>(in + s * channels);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const V v = ToVal<T>(p.v[j]);
        if constexpr (kMax) {
          if (acc[j] < v) acc[j] = v;
        } else {
          acc[j] += v;
        }
      }
    }
    P r;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      if constexpr (kMax) {
        r.v[j] = FromVal<T>(acc[j]);
      } else {
        r.v[j] = FromVal<T>(acc[j] / static_cast<float>(volume));
      }
    }
    *reinterpret_cast<P*>(y + n * channels + cv * kVec) = r;
  }
}

template <typename F>
void DispatchPool(DType dtype, bool allow_int8, F&& f) {
  switch (dtype) {
    case DType::kFloat32: f(Tag<float>{}); break;
    case DType::kFloat16: f(Tag<__half>{}); break;
    case DType::kBFloat16: f(Tag<__nv_bfloat16>{}); break;
    case DType::kInt8:
      KILN_CHECK(allow_int8, "GPU average pooling does not support int8");
      f(Tag<int8_t>{});
      break;
    case DType::kUInt8:
      KILN_CHECK(allow_int8, "GPU average pooling does not support uint8");
      f(Tag<uint8_t>{});
      break;
    default: Fail("GPU pooling does not support dtype ", DTypeName(dtype));
  }
}

template <typename T, typename I, int kVec, bool kMax>
void LaunchPoolKernel(const T* x, T* y, int64_t* indices, bool flag, const PoolParams& p,
                      int64_t items, cudaStream_t stream) {
  PoolKernel<T, I, kVec, kMax>
      <<<GridFor((items + 255) / 256), 256, 0, stream>>>(x, y, indices, flag, p);
}

template <typename T, bool kMax>
void LaunchPoolTyped(const T* x, T* y, int64_t* indices, bool flag, const PoolParams& p,
                     cudaStream_t stream) {
  const int64_t outputs = p.batch * p.channels * p.out[0] * p.out[1] * p.out[2];
  if (outputs == 0) return;
  const int64_t inputs = p.batch * p.channels * p.in[0] * p.in[1] * p.in[2];
  // int32 index math when every offset (and the index-space padding) fits.
  const int64_t slack = 4 * (p.kernel[0] + p.kernel[1] + p.kernel[2]) *
                            (p.dilation[0] + p.dilation[1] + p.dilation[2]) +
                        4 * (p.pad[0] + p.pad[1] + p.pad[2] + p.stride[0] + p.stride[1] +
                             p.stride[2]);
  const bool small = std::max(inputs, outputs) + slack < (int64_t{1} << 30) &&
                     p.out[0] * p.stride[0] + slack < (int64_t{1} << 30) &&
                     p.out[1] * p.stride[1] + slack < (int64_t{1} << 30) &&
                     p.out[2] * p.stride[2] + slack < (int64_t{1} << 30);
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  const bool vec = p.nhwc && indices == nullptr && p.channels % kVec == 0 &&
                   reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(y) % 16 == 0;
  if (vec && small) {
    LaunchPoolKernel<T, int32_t, kVec, kMax>(x, y, indices, flag, p, outputs / kVec, stream);
  } else if (small) {
    LaunchPoolKernel<T, int32_t, 1, kMax>(x, y, indices, flag, p, outputs, stream);
  } else {
    LaunchPoolKernel<T, int64_t, 1, kMax>(x, y, indices, flag, p, outputs, stream);
  }
  KILN_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

bool MaxPoolSupportsDType(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16 ||
         dtype == DType::kInt8 || dtype == DType::kUInt8;
}

void LaunchMaxPool(DType dtype, const void* x, void* y, int64_t* indices,
                   bool column_major_indices, const PoolParams& p, cudaStream_t stream) {
  DispatchPool(dtype, true, [&](auto tag) {
    using T = typename decltype(tag)::type;
    LaunchPoolTyped<T, true>(static_cast<const T*>(x), static_cast<T*>(y), indices,
                             column_major_indices, p, stream);
  });
}

void LaunchAveragePool(DType dtype, const void* x, void* y, bool count_include_pad,
                       const PoolParams& p, cudaStream_t stream) {
  DispatchPool(dtype, false, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (IsFloatLike<T>::value) {
      LaunchPoolTyped<T, false>(static_cast<const T*>(x), static_cast<T*>(y), nullptr,
                                count_include_pad, p, stream);
    }
  });
}

void LaunchGlobalPool(bool is_max, DType dtype, const void* x, void* y, int64_t batch,
                      int64_t channels, int64_t volume, bool nhwc, cudaStream_t stream) {
  const int64_t planes = batch * channels;
  if (planes == 0) return;
  KILN_CHECK(volume > 0, "global pooling over an empty spatial extent");
  DispatchPool(dtype, is_max, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    T* out = static_cast<T*>(y);
    auto launch = [&](auto max_tag) {
      constexpr bool kMax = decltype(max_tag)::value;
      if (nhwc) {
        constexpr int kVec = static_cast<int>(16 / sizeof(T));
        const bool vec = channels % kVec == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                         reinterpret_cast<uintptr_t>(y) % 16 == 0;
        if (vec) {
          const int64_t threads = batch * (channels / kVec);
          GlobalPoolNhwcKernel<T, kMax, kVec><<<GridFor((threads + 255) / 256), 256, 0, stream>>>(
              in, out, batch, channels, volume);
        } else {
          GlobalPoolNhwcKernel<T, kMax, 1><<<GridFor((planes + 255) / 256), 256, 0, stream>>>(
              in, out, batch, channels, volume);
        }
      } else if (volume <= 64) {
        GlobalPoolRowsKernel<T, kMax, 8>
            <<<GridFor((planes + 31) / 32), 256, 0, stream>>>(in, out, planes, volume);
      } else if (volume <= 1024) {
        GlobalPoolRowsKernel<T, kMax, 32>
            <<<GridFor((planes + 7) / 8), 256, 0, stream>>>(in, out, planes, volume);
      } else {
        GlobalPoolRowsKernel<T, kMax, 256>
            <<<GridFor(planes), 256, 0, stream>>>(in, out, planes, volume);
      }
      KILN_CUDA_CHECK(cudaGetLastError());
    };
    if (is_max) {
      launch(std::true_type{});
    } else if constexpr (IsFloatLike<T>::value) {
      launch(std::false_type{});
    }
  });
}

}  // namespace kiln::gpu::kernels
