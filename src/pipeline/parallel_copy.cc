#include "pipeline/parallel_copy.h"

#include <algorithm>
#include <cstring>

namespace kiln::pipeline {

int StagingThreads(int requested) {
  if (requested > 0) return requested;
  const int hardware = static_cast<int>(std::thread::hardware_concurrency());
  return std::clamp(hardware / 2, 1, 8);
}

ParallelCopier::ParallelCopier(int threads) {
  for (int i = 1; i < threads; ++i) helpers_.emplace_back([this] { HelperLoop(); });
}

ParallelCopier::~ParallelCopier() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : helpers_) t.join();
}

size_t ParallelCopier::RunChunks() {
  size_t copied = 0;
  for (size_t i = next_chunk_.fetch_add(1); i < chunks_.size(); i = next_chunk_.fetch_add(1)) {
    const CopyJob& c = chunks_[i];
    std::memcpy(c.dst, c.src, c.bytes);
    ++copied;
  }
  return copied;
}

void ParallelCopier::HelperLoop() {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    ++busy_;
    lock.unlock();
    const size_t copied = RunChunks();
    lock.lock();
    --busy_;
    chunks_done_ += copied;
    done_.notify_all();
  }
}

void ParallelCopier::Copy(const std::vector<CopyJob>& jobs) {
  size_t total = 0;
  for (const CopyJob& j : jobs) total += j.bytes;
  if (helpers_.empty() || total < kMinParallelBytes) {
    for (const CopyJob& j : jobs)
      if (j.bytes) std::memcpy(j.dst, j.src, j.bytes);
    return;
  }
  std::lock_guard<std::mutex> copy_lock(copy_mu_);
  const size_t chunk = std::max(kMinChunkBytes, (total + 4 * threads() - 1) / (4 * threads()));
  {
    // A helper that woke late for the previous copy may still be reading
    // chunks_ (finding nothing left): wait for it before rewriting them.
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return busy_ == 0; });
    chunks_.clear();  // Capacity stays: no allocation once warm.
    for (const CopyJob& j : jobs)
      for (size_t offset = 0; offset < j.bytes; offset += chunk)
        chunks_.push_back({static_cast<char*>(j.dst) + offset, static_cast<const char*>(j.src) + offset,
                           std::min(chunk, j.bytes - offset)});
    next_chunk_.store(0);
    chunks_done_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  const size_t copied = RunChunks();
  std::unique_lock<std::mutex> lock(mu_);
  chunks_done_ += copied;
  done_.wait(lock, [&] { return chunks_done_ == chunks_.size(); });
}

}  // namespace kiln::pipeline
