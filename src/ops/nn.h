// Window geometry shared by the neural-network op definitions (ops/nn.cc) and
// their CPU kernels (cpu/nn.cc): convolution, transposed convolution and
// pooling all derive kernel/stride/dilation/padding per spatial axis from the
// same attributes, and inference and kernels must agree on the result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln::nn {

// Per spatial axis. Sizes of -1 mean "unknown" (symbolic input dims at import
// time); kernels only see fully known geometry.
struct WindowGeometry {
  std::vector<int64_t> input;   // Spatial input sizes.
  std::vector<int64_t> kernel;  // Kernel sizes (undilated).
  std::vector<int64_t> strides;
  std::vector<int64_t> dilations;
  std::vector<int64_t> pads_begin;  // May be negative only for ConvTranspose with output_shape.
  std::vector<int64_t> pads_end;
  std::vector<int64_t> output;  // Spatial output sizes.

  int rank() const { return static_cast<int>(input.size()); }
};

// Conv and pooling: `input` holds the spatial input sizes (-1 unknown) and
// `kernel` the spatial kernel sizes (from the weight or kernel_shape).
// ceil_mode rounds the output size up (pooling only). Reads strides,
// dilations, pads and auto_pad from attrs and validates them.
WindowGeometry ComputeWindowGeometry(const ir::Attributes& attrs,
                                     const std::vector<int64_t>& input,
                                     const std::vector<int64_t>& kernel, bool ceil_mode);

// ConvTranspose: output sizes come from output_shape when given, else from
// strides, output_padding and pads (or auto_pad). pads_begin is where output
// index 0 falls in the un-cropped "full" result, whose size along an axis is
// stride*(in-1) + dilation*(k-1) + 1; output positions outside it receive only
// the bias.
WindowGeometry ComputeConvTransposeGeometry(const ir::Attributes& attrs,
                                            const std::vector<int64_t>& input,
                                            const std::vector<int64_t>& kernel);

// An Einsum equation with every term spelled out per axis: each letter gets a
// label id (0..51) and each dim an ellipsis covers gets its own id (52 + k,
// aligned from the right like numpy broadcasting). Whitespace is ignored; an
// implicit output ("ij,jk") lists the ellipsis dims then the letters used
// exactly once, in ASCII order.
struct EinsumSpec {
  std::vector<std::vector<int>> inputs;  // Label id of each axis of each operand.
  std::vector<int> output;               // Label id of each output axis.
  int num_labels = 0;                    // Ids are < num_labels.
};

// Throws kiln::Error for a malformed equation or one that does not fit the
// operand ranks.
EinsumSpec ParseEinsum(const std::string& equation, const std::vector<int>& input_ranks);

}  // namespace kiln::nn
