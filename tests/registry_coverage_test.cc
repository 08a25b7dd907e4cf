// Checks that every operator kiln's foundation claims is registered with
// inference and a CPU kernel, over a sane opset range. One test per operator,
// so a failure names the missing one.

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ops/registry.h"

namespace kiln {
namespace {

const std::vector<std::string>& ClaimedOperators() {
  static const std::vector<std::string> ops = {
      "Conv", "ConvTranspose", "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Clip",
      "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Gelu", "Erf", "MaxPool",
      "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Gemm", "MatMul", "Add", "Sub", "Mul",
      "Div", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Neg", "Abs", "Softmax", "LogSoftmax",
      "LayerNormalization", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ArgMax",
      "Flatten", "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Squeeze",
      "Unsqueeze", "Shape", "Size", "Cast", "Constant", "ConstantOfShape", "Identity", "Dropout",
      "Expand", "Where", "Equal", "Less", "Greater", "Not", "And", "Or", "Resize", "Pad", "Tile",
      "Range", "TopK", "Einsum", "QuantizeLinear", "DequantizeLinear",
  };
  return ops;
}

class RegistryCoverageTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RegistryCoverageTest, RegisteredWithInferenceAndCpuKernel) {
  const std::string& op = GetParam();
  const OpDef* def = OpRegistry::Global().Find(op);
  ASSERT_NE(def, nullptr) << op << " is not registered in OpRegistry";
  EXPECT_EQ(def->name, op);
  EXPECT_TRUE(static_cast<bool>(def->infer)) << op << " has no shape inference (ops/<family>.cc)";
  EXPECT_TRUE(static_cast<bool>(def->cpu_kernel)) << op << " has no CPU kernel (cpu/<family>.cc)";
  // Every claimed operator still exists in the newest opset kiln supports, and
  // must serve opset 17 (the ONNX test suite's and the exported models'),
  // unless ONNX introduced it later.
  EXPECT_EQ(def->max_opset, kMaxSupportedOpset) << op;
  const int needed = op == "Gelu" ? 20 : 17;
  EXPECT_LE(def->min_opset, needed) << op << " does not accept opset " << needed;
}

// The prefix keeps --gtest_filter='RegistryCoverage*' selecting these too.
INSTANTIATE_TEST_SUITE_P(RegistryCoverage, RegistryCoverageTest,
                         ::testing::ValuesIn(ClaimedOperators()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// A kernel registered under a name that has no definition (a typo in
// cpu/<family>.cc, or a definition that was dropped) leaves a half entry.
TEST(RegistryCoverageTest, EveryKernelHasADefinition) {
  const OpRegistry& registry = OpRegistry::Global();
  for (const std::string& name : registry.Names()) {
    const OpDef* def = registry.Find(name);
    ASSERT_NE(def, nullptr) << name;
    if (def->cpu_kernel) {
      EXPECT_TRUE(static_cast<bool>(def->infer))
          << name << " has a CPU kernel but no definition (inference)";
    }
  }
}

TEST(RegistryCoverageTest, UnknownOperatorIsNotFound) {
  EXPECT_EQ(OpRegistry::Global().Find("NoSuchOperator"), nullptr);
}

}  // namespace
}  // namespace kiln
