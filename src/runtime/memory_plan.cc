#include "runtime/memory_plan.h"

#include <algorithm>

namespace kiln::runtime {
namespace {

size_t Align(size_t n) { return (n + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment; }

struct Interval {
  int value;
  size_t bytes;
  int first, last;  // Node indices.
  size_t offset = 0;
};

}  // namespace

MemoryPlan PlanMemory(const Plan& e) {
  MemoryPlan plan;
  const size_t n_values = e.values.size();
  const auto& nodes = e.graph->nodes();
  plan.slots.resize(n_values);
  plan.launches.assign(nodes.size(), false);

  // Each value's root: itself, or the value it is a view of.
  std::vector<int> root(n_values);
  for (size_t i = 0; i < n_values; ++i) root[i] = static_cast<int>(i);
  std::vector<int> producer(n_values, -1);
  for (size_t n = 0; n < nodes.size(); ++n) {
    const ir::Node& node = *nodes[n];
    for (size_t o = 0; o < node.outputs.size(); ++o) {
      if (!node.outputs[o]) continue;
      int idx = e.value_index.at(node.outputs[o]);
      producer[static_cast<size_t>(idx)] = static_cast<int>(n);
      int alias = e.layers[n]->AliasOf(static_cast<int>(o));
      if (alias >= 0) {
        const ir::Value* src = node.inputs.at(static_cast<size_t>(alias));
        root[static_cast<size_t>(idx)] = root[static_cast<size_t>(e.value_index.at(src))];
      } else {
        plan.launches[n] = true;
      }
    }
  }

  // Graph bindings. An output that is a view, a constant, an input, or that
  // appears twice is filled by a copy at the end.
  std::vector<bool> is_bound_output(n_values, false);
  for (size_t b = 0; b < e.graph->inputs().size(); ++b) {
    int idx = e.value_index.at(e.graph->inputs()[b]);
    plan.slots[static_cast<size_t>(idx)] = {Storage::kInput, 0, static_cast<int>(b)};
  }
  for (size_t b = 0; b < e.graph->outputs().size(); ++b) {
    int idx = e.value_index.at(e.graph->outputs()[b]);
    size_t i = static_cast<size_t>(idx);
    bool direct = root[i] == idx && !e.values[i]->is_constant() && !e.values[i]->is_graph_input &&
                  !is_bound_output[i];
    if (direct) {
      plan.slots[i] = {Storage::kOutput, 0, static_cast<int>(b)};
      is_bound_output[i] = true;
    } else {
      plan.output_copies.push_back({root[i], static_cast<int>(b), e.descs[i].nbytes()});
    }
  }

  // Weights read on the device.
  std::vector<bool> needs_device(n_values, false);
  for (size_t n = 0; n < nodes.size(); ++n)
    for (size_t i = 0; i < nodes[n]->inputs.size(); ++i)
      if (nodes[n]->inputs[i] && e.layers[n]->ReadsInputOnDevice(static_cast<int>(i)))
        needs_device[static_cast<size_t>(e.value_index.at(nodes[n]->inputs[i]))] = true;
  for (const OutputCopy& c : plan.output_copies) needs_device[static_cast<size_t>(c.value)] = true;
  for (size_t i = 0; i < n_values; ++i) {
    if (!e.values[i]->is_constant() || !needs_device[i]) continue;
    plan.slots[i] = {Storage::kWeight, plan.weight_bytes, -1};
    plan.weight_bytes += Align(e.descs[i].nbytes());
  }

  // Activation lifetimes, per root.
  std::vector<int> first(n_values, -1), last(n_values, -1);
  for (size_t i = 0; i < n_values; ++i) {
    if (producer[i] < 0) continue;
    size_t r = static_cast<size_t>(root[i]);
    if (first[r] < 0 || producer[i] < first[r]) first[r] = producer[i];
    last[r] = std::max(last[r], producer[i]);
  }
  for (size_t n = 0; n < nodes.size(); ++n)
    for (const ir::Value* v : nodes[n]->inputs) {
      if (!v) continue;
      size_t r = static_cast<size_t>(root[static_cast<size_t>(e.value_index.at(v))]);
      last[r] = std::max(last[r], static_cast<int>(n));
    }
  // Output copies read at the very end.
  for (const OutputCopy& c : plan.output_copies) last[static_cast<size_t>(c.value)] = static_cast<int>(nodes.size());

  std::vector<Interval> intervals;
  for (size_t i = 0; i < n_values; ++i) {
    if (root[i] != static_cast<int>(i) || producer[i] < 0) continue;
    if (plan.slots[i].storage != Storage::kNone) continue;  // Bound output.
    intervals.push_back({static_cast<int>(i), Align(std::max<size_t>(e.descs[i].nbytes(), 1)),
                         first[i], last[i]});
  }
  std::sort(intervals.begin(), intervals.end(), [](const Interval& a, const Interval& b) {
    return a.bytes != b.bytes ? a.bytes > b.bytes : a.value < b.value;
  });
  std::vector<const Interval*> placed;
  for (Interval& iv : intervals) {
    // Lowest offset that avoids every placed buffer alive at the same time.
    std::vector<std::pair<size_t, size_t>> busy;
    for (const Interval* p : placed)
      if (p->first <= iv.last && iv.first <= p->last) busy.push_back({p->offset, p->offset + p->bytes});
    std::sort(busy.begin(), busy.end());
    size_t offset = 0;
    for (const auto& [begin, end] : busy) {
      if (offset + iv.bytes <= begin) break;
      offset = std::max(offset, end);
    }
    iv.offset = offset;
    placed.push_back(&iv);
    plan.arena_bytes = std::max(plan.arena_bytes, offset + iv.bytes);
    plan.slots[static_cast<size_t>(iv.value)] = {Storage::kArena, offset, -1};
  }

  // Views take their root's slot.
  for (size_t i = 0; i < n_values; ++i)
    if (root[i] != static_cast<int>(i)) plan.slots[i] = plan.slots[static_cast<size_t>(root[i])];
  return plan;
}

}  // namespace kiln::runtime
