// GPU discovery: whether a usable CUDA device is present and what it is.
#pragma once

#include <cstddef>
#include <string>

struct CUgraph_st;  // cudaGraph_t, without the CUDA headers.

namespace kiln::cuda {

struct DeviceInfo {
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int multiprocessors = 0;
  size_t total_memory = 0;
  int driver_version = 0;
  int runtime_version = 0;
};

// True when at least one CUDA device can be used; otherwise `why` (if given)
// says why not (no driver, no device, ...). Never throws.
bool DeviceAvailable(std::string* why = nullptr);
// Facts about device `ordinal`; throws kiln::Error if it cannot be queried.
DeviceInfo QueryDevice(int ordinal = 0);

// Fills `count` floats at device pointer `data` with NaN on `stream`
// (outputs are poisoned before correctness checks).
void FillNaN(float* data, size_t count, void* stream);

// Kernel nodes in a captured CUDA Graph: the kernel launches of one replay
// (the builder's tactic choice and kiln bench's launch count).
int CountKernelNodes(CUgraph_st* graph);

}  // namespace kiln::cuda
