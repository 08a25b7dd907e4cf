// Helper kernels of the convolution and GEMM layers (see nn.h).
#include "cuda/kernels/nn.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "cuda/cuda_check.h"

namespace kiln::gpu {
namespace {

constexpr int kThreads = 256;

// A 1-D grid for a grid-stride loop over `count` items (count > 0).
unsigned int GridFor(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(blocks, 65536));
}

__device__ __forceinline__ float Load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float Load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void Store(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void Store(__half* p, int64_t i, float v) { p[i] = __float2half(v); }
__device__ __forceinline__ void Store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16(v);
}

__device__ __forceinline__ float Sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

__device__ __forceinline__ float Activate(float x, NnActivation act, float alpha, float beta) {
  switch (act) {
    case NnActivation::kNone:
      return x;
    case NnActivation::kRelu:
      return x < 0.f ? 0.f : x;  // NaN stays NaN.
    case NnActivation::kClip:
      x = x < alpha ? alpha : x;
      return x > beta ? beta : x;
    case NnActivation::kSigmoid:
      return Sigmoid(x);
    case NnActivation::kTanh:
      return tanhf(x);
    case NnActivation::kLeakyRelu:
      return x < 0.f ? alpha * x : x;
    case NnActivation::kHardSigmoid:
      return fmaxf(0.f, fminf(1.f, alpha * x + beta));
    case NnActivation::kHardSwish:
      return x * fmaxf(0.f, fminf(1.f, x * (1.f / 6.f) + 0.5f));
    case NnActivation::kSiLU:
      return x * Sigmoid(x);
    case NnActivation::kGeluErf:
      return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));
    case NnActivation::kGeluTanh: {
      const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.f + tanhf(inner));
    }
  }
  return x;
}

template <typename T>
__global__ void BiasResidualActivationKernel(T* y, const T* bias, const T* z, int64_t count,
                                             int64_t channels, int64_t inner,
                                             NnActivation act, float alpha, float beta) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += step) {
    float v = Load(y, i);
    if (bias) v += Load(bias, (i / inner) % channels);
    if (z) v += Load(z, i);
    Store(y, i, Activate(v, act, alpha, beta));
  }
}

template <typename T>
void LaunchEpilogue(void* y, const void* bias, const void* z, int64_t count, int64_t channels,
                    int64_t inner, NnActivation act, float alpha, float beta,
                    cudaStream_t stream) {
  BiasResidualActivationKernel<T><<<GridFor(count), kThreads, 0, stream>>>(
      static_cast<T*>(y), static_cast<const T*>(bias), static_cast<const T*>(z), count,
      channels, inner, act, alpha, beta);
  KILN_CUDA_CHECK(cudaGetLastError());
}

template <typename T>
__global__ void PadCopyKernel(const T* in, T* out, PadCopyParams p, int64_t count) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += step) {
    int64_t rest = i;
    int64_t in_offset = 0;
    int64_t in_stride = 1;
    bool inside = true;
    for (int d = p.rank - 1; d >= 0; --d) {
      const int64_t o = rest % p.out_dims[d];
      rest /= p.out_dims[d];
      const int64_t c = o - p.begin[d];
      if (c < 0 || c >= p.in_dims[d]) inside = false;
      in_offset += c * in_stride;
      in_stride *= p.in_dims[d];
    }
    out[i] = inside ? in[in_offset] : T(0);
  }
}

template <typename T>
__global__ void Broadcast2DKernel(const T* c, int64_t c_rows, int64_t c_cols, T* y, int64_t m,
                                  int64_t n) {
  const int64_t count = m * n;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += step) {
    const int64_t row = i / n, col = i % n;
    y[i] = c[(c_rows == 1 ? 0 : row) * c_cols + (c_cols == 1 ? 0 : col)];
  }
}

template <typename Fn>
void DispatchBytes(size_t elem_size, Fn&& fn) {
  switch (elem_size) {
    case 1: fn(uint8_t{}); break;
    case 2: fn(uint16_t{}); break;
    case 4: fn(uint32_t{}); break;
    case 8: fn(uint64_t{}); break;
    default: Fail("unsupported element size ", elem_size);
  }
}

}  // namespace

void LaunchBiasResidualActivation(void* y, const void* bias, const void* z, int64_t count,
                                  int64_t channels, int64_t inner, DType dtype,
                                  NnActivation activation, float alpha, float beta,
                                  cudaStream_t stream) {
  if (count <= 0) return;
  KILN_CHECK(channels >= 1 && inner >= 1, "epilogue: invalid channels ", channels, " / inner ",
             inner);
  switch (dtype) {
    case DType::kFloat32:
      LaunchEpilogue<float>(y, bias, z, count, channels, inner, activation, alpha, beta, stream);
      break;
    case DType::kFloat16:
      LaunchEpilogue<__half>(y, bias, z, count, channels, inner, activation, alpha, beta, stream);
      break;
    case DType::kBFloat16:
      LaunchEpilogue<__nv_bfloat16>(y, bias, z, count, channels, inner, activation, alpha, beta,
                                    stream);
      break;
    default:
      Fail("epilogue: unsupported dtype ", DTypeName(dtype));
  }
}

void LaunchPadCopy(const void* in, void* out, const PadCopyParams& params, size_t elem_size,
                   cudaStream_t stream) {
  KILN_CHECK(params.rank >= 1 && params.rank <= kPadCopyMaxRank, "pad copy: invalid rank ",
             params.rank);
  int64_t count = 1;
  for (int d = 0; d < params.rank; ++d) {
    KILN_CHECK(params.out_dims[d] >= 0 && params.in_dims[d] >= 0, "pad copy: negative dim");
    count *= params.out_dims[d];
  }
  if (count == 0) return;
  DispatchBytes(elem_size, [&](auto tag) {
    using T = decltype(tag);
    PadCopyKernel<T><<<GridFor(count), kThreads, 0, stream>>>(static_cast<const T*>(in),
                                                              static_cast<T*>(out), params, count);
    KILN_CUDA_CHECK(cudaGetLastError());
  });
}

void LaunchBroadcast2D(const void* c, int64_t c_rows, int64_t c_cols, void* y, int64_t m,
                       int64_t n, size_t elem_size, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return;
  KILN_CHECK((c_rows == 1 || c_rows == m) && (c_cols == 1 || c_cols == n),
             "broadcast: [", c_rows, ",", c_cols, "] does not broadcast to [", m, ",", n, "]");
  DispatchBytes(elem_size, [&](auto tag) {
    using T = decltype(tag);
    Broadcast2DKernel<T><<<GridFor(m * n), kThreads, 0, stream>>>(
        static_cast<const T*>(c), c_rows, c_cols, static_cast<T*>(y), m, n);
    KILN_CUDA_CHECK(cudaGetLastError());
  });
}

}  // namespace kiln::gpu
