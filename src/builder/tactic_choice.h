// How Engine::Build picks a layer's tactic from its timings (builder.cc).
//
// The fastest median wins, except that a tactic launching fewer kernels
// (kernel nodes in the captured timing graph, per enqueue: a split-K GEMM's
// reduction or a two-kernel cuDNN algorithm count) wins when it is within
// kFewerKernelsTolerance of the fastest. Timings of few-microsecond layers
// differ by a few percent from run to run; without this, such near-ties
// flipped between builds and ResNet-50 at batch 1 had 55 kernels in one
// build and 58 in the next, with the same speed.
#pragma once

#include <vector>

namespace kiln::builder {

inline constexpr double kFewerKernelsTolerance = 0.03;

struct TimedTactic {
  int index = -1;         // The layer's tactic number.
  double median_ms = 0;   // Median time per enqueue.
  int kernels = 1;        // Kernel launches per enqueue.
};

// The chosen tactic's index; -1 for an empty list.
inline int ChooseTactic(const std::vector<TimedTactic>& timed) {
  const TimedTactic* fastest = nullptr;
  for (const TimedTactic& t : timed)
    if (!fastest || t.median_ms < fastest->median_ms) fastest = &t;
  if (!fastest) return -1;
  const TimedTactic* chosen = fastest;
  for (const TimedTactic& t : timed) {
    if (t.median_ms > fastest->median_ms * (1 + kFewerKernelsTolerance)) continue;
    if (t.kernels < chosen->kernels ||
        (t.kernels == chosen->kernels && t.median_ms < chosen->median_ms))
      chosen = &t;
  }
  return chosen->index;
}

}  // namespace kiln::builder
