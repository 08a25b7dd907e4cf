// Memory planning: where every value of an engine lives during an inference.
//
// Weights read on the device get offsets in one weight block. Activations
// share one arena: each gets [first write, last read] in layer order, and
// buffers whose lifetimes do not overlap reuse the same bytes (largest first,
// lowest fitting offset). Zero-copy views (Reshape, Flatten, ...) take their
// source's slot and extend its lifetime. Values bound to the caller's
// input/output pointers take no arena space.
#pragma once

#include <vector>

#include "runtime/engine_impl.h"

namespace kiln::runtime {

struct MemoryPlan {
  std::vector<ValueSlot> slots;  // By value index.
  std::vector<OutputCopy> output_copies;
  std::vector<bool> launches;    // Per node.
  size_t arena_bytes = 0;
  size_t weight_bytes = 0;
};

// Requires engine.values/descs/layers to be filled.
MemoryPlan PlanMemory(const Plan& engine);

// Alignment of every buffer in the arena and weight block.
constexpr size_t kBufferAlignment = 256;

}  // namespace kiln::runtime
