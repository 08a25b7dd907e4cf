// The per-model request queue and its workers (Triton's dynamic batcher).
//
// `instance_count` worker threads serve one bounded queue. One idle worker
// at a time forms a batch: it takes the oldest request and gathers later
// requests whose inputs have the same dtypes and non-batch dims, until the
// batch reaches max_batch_size, a preferred batch size, or max_queue_delay
// has passed since the oldest was queued. The batch's input tensors go to
// Backend::RunBatch as parts (the backend gathers them along dim 0, the GPU
// backend straight into its pinned staging), and the outputs are copied back
// per request at once (they may be views of the backend's staging). Requests
// whose timeout expires while queued fail with kTimeout. Without dynamic batching
// (or with max_batch_size 0) every request runs alone.
//
// Requests must be validated before Enqueue (ServerCore does that).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "serve/backend.h"
#include "serve/server_core.h"

namespace kiln::serve {

// A model's counters, shared by its batcher and the core (which counts the
// requests refused before queuing).
struct StatsBox {
  mutable std::mutex mu;
  ModelStats stats;
  // One failed request, received at `received` (its duration ends now).
  void AddFailure(std::chrono::steady_clock::time_point received);
};

// Non-negative nanoseconds of a steady_clock duration.
uint64_t DurationNs(std::chrono::steady_clock::duration d);

class Batcher {
 public:
  using Clock = std::chrono::steady_clock;
  using Callback = ServerCore::Callback;

  Batcher(ModelConfig config, std::string version, std::shared_ptr<Backend> backend,
          std::shared_ptr<StatsBox> stats, int default_max_queue_size);
  ~Batcher();  // Shutdown().

  // Queues a validated request; refusals (queue full, shutting down) call
  // `done` at once with kUnavailable.
  void Enqueue(InferRequest request, Callback done);
  // Stops accepting, runs everything still queued, joins the workers.
  // Idempotent; safe from any thread but a worker's callback.
  void Shutdown();
  size_t QueueSize() const;
  int max_queue_size() const { return max_queue_size_; }

 private:
  struct Pending {
    InferRequest request;
    Callback done;
    Clock::time_point enqueued, deadline;
    int64_t batch = 1;  // Rows this request adds (1 without a batch dim).
  };

  void Worker(int instance);
  // Chooses queue_ entries (indices, ascending) to run now; empty: wait
  // until `wake`.
  std::vector<size_t> Select(Clock::time_point now, Clock::time_point* wake) const;
  bool Compatible(const Pending& a, const Pending& b) const;
  void Execute(std::vector<Pending>& batch, int instance);
  void Finish(Pending& p, InferResponse response);
  void FailAll(std::vector<Pending>& list, StatusCode code, const std::string& message);

  const ModelConfig config_;
  const std::string version_;
  const std::shared_ptr<Backend> backend_;
  const std::shared_ptr<StatsBox> stats_;
  const bool batching_;
  int max_queue_size_;

  mutable std::mutex mu_;
  // Idle workers wait on idle_cv_ for a batch to form; the one forming waits
  // on forming_cv_ for more requests. Each arrival wakes one thread, not
  // every instance (at low load a herd of wake-ups is latency jitter).
  std::condition_variable idle_cv_, forming_cv_;
  std::deque<Pending> queue_;
  bool forming_ = false;   // A worker is forming a batch.
  bool stopping_ = false;  // No new requests; drain what is queued.
  std::mutex join_mu_;
  std::vector<std::thread> workers_;
};

// Concatenates tensors of equal dtype and trailing dims along dim 0.
Tensor ConcatBatch(const std::vector<const Tensor*>& parts);
// Rows [begin, begin + count) of `t` along dim 0, as a new tensor.
Tensor SliceBatch(const Tensor& t, int64_t begin, int64_t count);

}  // namespace kiln::serve
