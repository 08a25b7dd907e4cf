#include "pipeline/parallel_copy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <thread>
#include <vector>

namespace kiln::pipeline {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(ParallelCopier, CopiesEveryByteOfSeveralJobs) {
  ParallelCopier copier(4);
  EXPECT_EQ(copier.threads(), 4);
  // Odd sizes around the chunking thresholds, one empty job.
  const std::vector<size_t> sizes = {7, ParallelCopier::kMinChunkBytes * 3 + 13, 0,
                                     ParallelCopier::kMinParallelBytes + 1, 5 << 20};
  for (int round = 0; round < 3; ++round) {
    std::vector<std::vector<uint8_t>> src, dst;
    std::vector<CopyJob> jobs;
    for (size_t i = 0; i < sizes.size(); ++i) {
      src.push_back(RandomBytes(sizes[i], static_cast<uint32_t>(round * 10 + i)));
      dst.emplace_back(sizes[i], 0xAB);
    }
    for (size_t i = 0; i < sizes.size(); ++i) jobs.push_back({dst[i].data(), src[i].data(), sizes[i]});
    copier.Copy(jobs);
    for (size_t i = 0; i < sizes.size(); ++i) EXPECT_EQ(dst[i], src[i]) << "job " << i << " round " << round;
  }
}

TEST(ParallelCopier, SmallCopiesAndSingleThread) {
  ParallelCopier single(1);
  EXPECT_EQ(single.threads(), 1);
  auto src = RandomBytes(ParallelCopier::kMinParallelBytes * 2, 3);
  std::vector<uint8_t> dst(src.size());
  single.Copy({{dst.data(), src.data(), src.size()}});
  EXPECT_EQ(dst, src);
  ParallelCopier many(3);
  auto small = RandomBytes(100, 4);
  std::vector<uint8_t> small_dst(small.size());
  many.Copy({{small_dst.data(), small.data(), small.size()}});
  EXPECT_EQ(small_dst, small);
}

TEST(ParallelCopier, ConcurrentCallersEachGetTheirBytes) {
  ParallelCopier copier(3);
  const size_t n = 6 << 20;
  std::vector<std::thread> callers;
  std::vector<int> ok(4, 0);
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&, c] {
      auto src = RandomBytes(n, static_cast<uint32_t>(100 + c));
      std::vector<uint8_t> dst(n);
      bool all = true;
      for (int r = 0; r < 5; ++r) {
        std::fill(dst.begin(), dst.end(), 0);
        copier.Copy({{dst.data(), src.data(), n}});
        all = all && dst == src;
      }
      ok[static_cast<size_t>(c)] = all ? 1 : 0;
    });
  for (auto& t : callers) t.join();
  for (int c = 0; c < 4; ++c) EXPECT_EQ(ok[static_cast<size_t>(c)], 1) << "caller " << c;
}

TEST(ParallelCopier, AutomaticThreadCount) {
  EXPECT_EQ(StagingThreads(5), 5);
  EXPECT_GE(StagingThreads(0), 1);
  EXPECT_LE(StagingThreads(0), 8);
}

}  // namespace
}  // namespace kiln::pipeline
