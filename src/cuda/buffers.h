// Owning device and pinned-host buffers for build-time, tool and test code
// (tactic timing, kiln bench, GPU tests). The inference path never allocates:
// engines and contexts own their memory from creation.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "cuda/cuda_check.h"

namespace kiln::cuda {

// cudaMalloc'd bytes (none, and ptr == nullptr, for a zero size).
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (n) KILN_CUDA_CHECK(cudaMalloc(&ptr, n));
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Page-locked host bytes (fast, asynchronous copies).
struct PinnedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit PinnedBuffer(size_t n) : bytes(n) {
    if (n) KILN_CUDA_CHECK(cudaMallocHost(&ptr, n));
  }
  ~PinnedBuffer() {
    if (ptr) cudaFreeHost(ptr);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
};

// Page-locks memory the caller already owns (cudaHostRegister), e.g. a
// client's shared memory mapping, so the GPU copies straight from it. Pinning
// is an optimization: TryPin returns null (and `why`) where the driver
// refuses, and callers then copy through their own staging. Unpins when
// destroyed, which must happen before the memory is unmapped.
class HostPin {
 public:
  static std::unique_ptr<HostPin> TryPin(void* ptr, size_t bytes, std::string* why = nullptr) {
    const cudaError_t status = cudaHostRegister(ptr, bytes, cudaHostRegisterPortable);
    if (status != cudaSuccess) {
      if (why) *why = cudaGetErrorString(status);
      (void)cudaGetLastError();  // Not sticky: clear it for the next caller.
      return nullptr;
    }
    return std::unique_ptr<HostPin>(new HostPin(ptr));
  }
  ~HostPin() { (void)cudaHostUnregister(ptr_); }
  HostPin(const HostPin&) = delete;
  HostPin& operator=(const HostPin&) = delete;

 private:
  explicit HostPin(void* ptr) : ptr_(ptr) {}
  void* ptr_;
};

// Whether the GPU can read `ptr` with an asynchronous copy: page-locked host
// memory (cudaMallocHost or a HostPin). Never throws.
inline bool IsPinnedHost(const void* ptr) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeHost;
}

}  // namespace kiln::cuda
