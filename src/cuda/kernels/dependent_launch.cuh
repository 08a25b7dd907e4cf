// Programmatic dependent launch (Hopper and later) for kiln's own kernels.
//
// In a CUDA Graph every kernel node normally waits until its predecessor has
// finished and only then is launched: a few microseconds per edge, which is
// most of the time of a small-batch transformer layer (BERT at batch 1 runs
// ~100 kernels of ~4 us). Launched with programmatic stream serialization, a
// kernel is scheduled while its predecessor drains, and blocks itself at
// WaitForPrerequisiteGrids() until the predecessor grid has completed and its
// memory is visible. Kernels launched this way must therefore call it before
// touching any memory (reads of the predecessor's outputs, and writes into
// buffers the predecessor may still read); it is a no-op when the kernel was
// launched normally.
//
// On by default, off with KILN_PDL=0. Measured on an H200 (2026-11-28, fifth
// session, one device call, the same engine from a warm timing cache,
// off/on alternated twice): BERT-base FP16 seq 128 batch 1 0.4245 / 0.4233 ms
// off against 0.4210 / 0.4198 ms on; batch 128 equal (5.594 / 5.616 off,
// 5.592 / 5.617 on). An earlier reading that they were slower (0.4754 vs
// 0.4430 ms) compared a run right after tactic timing in the same process,
// which is ~9% slower at batch 1 whatever the launch mode, with a run that
// loaded its tactics from the cache.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "cuda/cuda_check.h"

namespace kiln::gpu {

__device__ __forceinline__ void WaitForPrerequisiteGrids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Whether KILN_PDL is not "0" and the current device takes programmatic
// dependent launches (compute capability 9.0+).
inline bool DependentLaunchEnabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("KILN_PDL");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  if (!enabled) return false;
  constexpr int kMaxDevices = 64;
  static int major[kMaxDevices] = {};  // 0: not queried yet.
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kMaxDevices) {
    (void)cudaGetLastError();
    return false;
  }
  if (major[device] == 0) {
    int value = 0;
    if (cudaDeviceGetAttribute(&value, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    major[device] = value;
  }
  return major[device] >= 9;
}

// kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent
// launch where enabled. The kernel must start with
// WaitForPrerequisiteGrids().
template <typename... Params, typename... Args>
void LaunchDependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                     cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &attribute;
  config.numAttrs = DependentLaunchEnabled() ? 1 : 0;
  KILN_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace kiln::gpu
