// A count of operations in flight that a thread can wait to see drain to
// zero: the gRPC frontend's asynchronous calls before Stop() returns, kiln
// perf's call chains and calls before their client goes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace kiln::serve {

class InFlightCount {
 public:
  void Add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++count_;
  }
  // The last Done() wakes WaitIdle(). It notifies under the lock, so a waiter
  // that then destroys this object cannot race with it.
  void Done() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--count_ == 0) idle_.notify_all();
  }
  void WaitIdle() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_.wait(lock, [&] { return count_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable idle_;
  int64_t count_ = 0;
};

}  // namespace kiln::serve
