// Host memcpy spread over a few persistent threads. One thread copies about
// 5-10 GB/s from pageable memory, below what PCIe and the GPU take (a
// ResNet-50 batch of 256 float32 images is 154 MB: ~20 ms on one thread,
// ~6 ms on the GPU), so the pipeline's staging copy would set the pace.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <cstdint>
#include <vector>

namespace kiln::pipeline {

struct CopyJob {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
};

class ParallelCopier {
 public:
  // `threads` <= 1 copies on the caller only; otherwise threads - 1 helpers
  // plus the caller. Threads are created here, never per copy.
  explicit ParallelCopier(int threads);
  ~ParallelCopier();
  ParallelCopier(const ParallelCopier&) = delete;
  ParallelCopier& operator=(const ParallelCopier&) = delete;

  // Copies every job and returns when all bytes are in place. Copies of less
  // than kMinParallelBytes run on the caller. Safe from several threads (one
  // copy at a time uses the helpers; the others wait).
  void Copy(const std::vector<CopyJob>& jobs);
  int threads() const { return static_cast<int>(helpers_.size()) + 1; }

  static constexpr size_t kMinParallelBytes = size_t{2} << 20;
  static constexpr size_t kMinChunkBytes = size_t{1} << 20;

 private:
  void HelperLoop();
  // Copies chunks until none is left; returns how many it copied.
  size_t RunChunks();

  std::mutex copy_mu_;  // One Copy at a time.
  std::mutex mu_;
  std::condition_variable wake_, done_;
  std::vector<CopyJob> chunks_;
  std::atomic<size_t> next_chunk_{0};
  size_t chunks_done_ = 0;
  int busy_ = 0;  // Helpers inside RunChunks.
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> helpers_;
};

// Staging threads for `requested` (0: automatic, half the hardware threads,
// at most 8).
int StagingThreads(int requested);

}  // namespace kiln::pipeline
