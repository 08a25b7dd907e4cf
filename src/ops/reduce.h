// Axis handling shared by the Reduce* definitions (ops/reduce.cc) and their
// CPU kernels (cpu/reduce.cc), so inference and execution agree on which axes
// a node reduces.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln {

// The axes of a Reduce* node as written in the model.
struct ReduceAxesArg {
  bool known = true;  // False when the axes input's value is unknown (import time).
  std::vector<int64_t> axes;
  bool noop_with_empty_axes = false;
};

// Reads the axes from the `axes` attribute before `axes_input_opset` (13 for
// ReduceSum, 18 for the others) and from input 1 from then on. `axes_value`
// is input 1's value, or nullptr when absent or not yet known.
ReduceAxesArg ReadReduceAxes(const ir::Node& node, int axes_input_opset, bool has_axes_input,
                             const Tensor* axes_value);

// One flag per input axis: true where the axis is reduced. Empty axes mean
// all axes, or none with noop_with_empty_axes. Throws on an out-of-range or
// repeated axis.
std::vector<bool> ReducedAxesMask(const std::vector<int64_t>& axes, bool noop_with_empty_axes,
                                  int rank);

// The opset from which `op_type` (a Reduce* operator) takes axes as an input.
int ReduceAxesInputOpset(const std::string& op_type);

}  // namespace kiln
