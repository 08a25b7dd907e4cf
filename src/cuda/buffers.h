// Owning device and pinned-host buffers for build-time, tool and test code
// (tactic timing, kiln bench, GPU tests). The inference path never allocates:
// engines and contexts own their memory from creation.
#pragma once

#include <cstddef>

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

}  // namespace kiln::cuda
