#include "builder/tactic_choice.h"

#include <gtest/gtest.h>

namespace kiln::builder {
namespace {

TEST(ChooseTactic, FastestUnlessFewerKernelsAreAsFast) {
  EXPECT_EQ(ChooseTactic({}), -1);
  EXPECT_EQ(ChooseTactic({{0, 2.0, 1}, {1, 1.0, 1}, {2, 1.5, 1}}), 1);
  // Split-K (2 kernels) 2% faster than one kernel: the one kernel.
  EXPECT_EQ(ChooseTactic({{0, 1.00, 1}, {1, 0.98, 2}}), 0);
  // 10% faster: it earns its second kernel.
  EXPECT_EQ(ChooseTactic({{0, 1.00, 1}, {1, 0.90, 2}}), 1);
  // Among near-ties with the fewest kernels, the faster.
  EXPECT_EQ(ChooseTactic({{3, 1.01, 1}, {4, 1.00, 2}, {5, 1.005, 1}}), 5);
}

}  // namespace
}  // namespace kiln::builder
