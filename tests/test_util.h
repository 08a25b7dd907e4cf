// Shared helpers for kiln's GoogleTest suites.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"
#include "kiln/tensor.h"

namespace kiln::testing {

// Runs a one-node graph on the CPU backend: `inputs` feed the node in order
// (an undefined Tensor marks an omitted optional input), `attrs` are set on
// the node. Inputs flagged in `constant_inputs` become initializers (so
// shape-valued inputs are visible to import-time inference). Returns the
// node's outputs.
std::vector<Tensor> RunNode(const std::string& op_type, const std::vector<Tensor>& inputs,
                            const ir::Attributes& attrs = {}, int num_outputs = 1,
                            int opset = 17, const std::vector<bool>& constant_inputs = {});

// A rank-4 tensor's NCHW <-> NHWC memory order on the CPU (Transpose): dims
// [N, C, H, W] -> [N, H, W, C] and back.
Tensor NchwToNhwc(const Tensor& t);
Tensor NhwcToNchw(const Tensor& t);

// Deterministic uniform random float32 tensor in [lo, hi).
Tensor RandomTensor(std::vector<int64_t> dims, float lo = -1.f, float hi = 1.f,
                    uint32_t seed = 1);

// Largest |a-b| / max(1e-6, max|b|) over elements (relative to the reference's
// scale); requires equal dims.
double MaxRelativeError(const Tensor& actual, const Tensor& expected);
// Largest |a-b|.
double MaxAbsoluteError(const Tensor& actual, const Tensor& expected);

}  // namespace kiln::testing
