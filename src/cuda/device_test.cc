// GPU tests skip (visibly, with the reason) where no device is present.
#include "cuda/device.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "cuda/cuda_check.h"

namespace kiln::cuda {
namespace {

#define KILN_REQUIRE_GPU()                                   \
  do {                                                       \
    std::string why;                                         \
    if (!DeviceAvailable(&why)) GTEST_SKIP() << "no GPU: " << why; \
  } while (0)

TEST(CudaDeviceTest, QueryReportsComputeCapability) {
  KILN_REQUIRE_GPU();
  DeviceInfo info = QueryDevice(0);
  EXPECT_GE(info.compute_major, 7);
  EXPECT_GT(info.multiprocessors, 0);
  EXPECT_GT(info.total_memory, 0u);
}

TEST(CudaDeviceTest, FillNaNWritesEveryElement) {
  KILN_REQUIRE_GPU();
  constexpr size_t kCount = 1000003;
  float* device = nullptr;
  KILN_CUDA_CHECK(cudaMalloc(&device, kCount * sizeof(float)));
  KILN_CUDA_CHECK(cudaMemset(device, 0, kCount * sizeof(float)));
  FillNaN(device, kCount, nullptr);
  std::vector<float> host(kCount, 1.f);
  KILN_CUDA_CHECK(cudaMemcpy(host.data(), device, kCount * sizeof(float), cudaMemcpyDeviceToHost));
  KILN_CUDA_CHECK(cudaFree(device));
  for (size_t i = 0; i < kCount; ++i) ASSERT_TRUE(std::isnan(host[i])) << i;
}

}  // namespace
}  // namespace kiln::cuda
