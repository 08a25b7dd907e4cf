// The list of GPU layer families. Each family file defines its
// Register*GpuLayers function next to the layers it registers.
#include "cuda/layer.h"

namespace kiln::gpu {

void RegisterElementwiseGpuLayers(GpuLayerRegistry& registry);  // layers/elementwise.cc
void RegisterReduceGpuLayers(GpuLayerRegistry& registry);       // layers/reduce.cc
void RegisterTensorGpuLayers(GpuLayerRegistry& registry);       // layers/tensor.cc
void RegisterNnGpuLayers(GpuLayerRegistry& registry);           // layers/conv.cc, layers/gemm.cc

void RegisterAllGpuLayers(GpuLayerRegistry& registry) {
  RegisterElementwiseGpuLayers(registry);
  RegisterReduceGpuLayers(registry);
  RegisterTensorGpuLayers(registry);
  RegisterNnGpuLayers(registry);
}

}  // namespace kiln::gpu
