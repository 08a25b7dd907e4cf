#include "cuda/device.h"

#include <cmath>
#include <vector>

#include "cuda/cuda_check.h"

namespace kiln::cuda {

bool DeviceAvailable(std::string* why) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    if (why) *why = cudaGetErrorString(status);
    cudaGetLastError();  // Clear the sticky error so later queries start clean.
    return false;
  }
  if (count == 0) {
    if (why) *why = "no CUDA device found";
    return false;
  }
  return true;
}

DeviceInfo QueryDevice(int ordinal) {
  cudaDeviceProp prop{};
  KILN_CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
  DeviceInfo info;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  info.total_memory = prop.totalGlobalMem;
  KILN_CUDA_CHECK(cudaDriverGetVersion(&info.driver_version));
  KILN_CUDA_CHECK(cudaRuntimeGetVersion(&info.runtime_version));
  return info;
}

namespace {
__global__ void FillNaNKernel(float* data, size_t count) {
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < count) data[i] = __int_as_float(0x7fc00000);
}
}  // namespace

void FillNaN(float* data, size_t count, void* stream) {
  if (count == 0) return;
  constexpr int kThreads = 256;
  unsigned blocks = static_cast<unsigned>((count + kThreads - 1) / kThreads);
  FillNaNKernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(data, count);
  KILN_CUDA_CHECK(cudaGetLastError());
}

int CountKernelNodes(CUgraph_st* graph) {
  size_t count = 0;
  KILN_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  if (count) KILN_CUDA_CHECK(cudaGraphGetNodes(graph, nodes.data(), &count));
  int kernels = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    KILN_CUDA_CHECK(cudaGraphNodeGetType(node, &type));
    if (type == cudaGraphNodeTypeKernel) ++kernels;
  }
  return kernels;
}

}  // namespace kiln::cuda
