// GPU reductions, ArgMax/ArgMin, softmax family and normalizations against
// the CPU reference backend.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "gpu_test_util.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::ExpectGpuMatchesCpu;
using testing::GpuNodeOptions;
using testing::RandomTensor;

ir::Attributes MakeAttrs(std::vector<std::pair<std::string, ir::AttrValue>> values) {
  ir::Attributes attrs;
  for (auto& [name, value] : values) attrs.set(name, std::move(value));
  return attrs;
}

GpuNodeOptions Opset(int opset, int num_outputs = 1, std::vector<bool> constants = {}) {
  GpuNodeOptions options;
  options.opset = opset;
  options.num_outputs = num_outputs;
  options.constant_inputs = std::move(constants);
  return options;
}

Tensor Half(const Tensor& t) { return t.CastTo(DType::kFloat16); }

// Integer-valued floats in [lo, hi): many ties for arg reductions.
Tensor Tied(std::vector<int64_t> dims, float lo, float hi, uint32_t seed) {
  return RandomTensor(std::move(dims), lo, hi, seed).CastTo(DType::kInt32).CastTo(DType::kFloat32);
}

const char* kReduceOps[] = {"ReduceSum", "ReduceMean",   "ReduceProd",      "ReduceMax",
                            "ReduceMin", "ReduceL1",     "ReduceL2",        "ReduceSumSquare",
                            "ReduceLogSum", "ReduceLogSumExp"};

// Positive inputs so log and prod stay well defined.
Tensor ReduceInput(const std::string& op, std::vector<int64_t> dims, uint32_t seed) {
  if (op == "ReduceProd") return RandomTensor(std::move(dims), 0.97f, 1.03f, seed);
  if (op == "ReduceLogSum") return RandomTensor(std::move(dims), 0.1f, 2.f, seed);
  return RandomTensor(std::move(dims), -2.f, 2.f, seed);
}

struct ReduceCase {
  std::vector<int64_t> dims;
  std::vector<int64_t> axes;  // Empty: all axes.
  int64_t keepdims;
};

const ReduceCase kReduceCases[] = {
    {{3, 5, 7}, {1}, 1},   {{3, 5, 7}, {-1}, 0},     {{3, 5, 7}, {0, 2}, 1},
    {{3, 5, 7}, {}, 0},    {{3, 5, 7}, {0}, 0},      {{2, 3, 4, 5}, {1, 3}, 0},
    {{2, 3, 4, 5}, {0, 1, 2}, 1}, {{1, 7, 1, 9}, {1}, 1}, {{4, 1000}, {1}, 0},
    {{33, 1}, {0}, 1},      {{5}, {0}, 0},       {{37, 9}, {1}, 0},
    {{6, 70}, {-1}, 1},     {{2, 5000}, {1}, 1},
};

TEST(GpuReduceTest, AllOpsAxesInputFloat32) {
  KILN_REQUIRE_GPU();
  for (const char* op : kReduceOps) {
    uint32_t seed = 1;
    for (const ReduceCase& c : kReduceCases) {
      SCOPED_TRACE(::testing::Message() << op << " " << DimsToString(c.dims) << " axes "
                                        << DimsToString(c.axes) << " keepdims " << c.keepdims);
      Tensor axes = Tensor::FromInt64s({static_cast<int64_t>(c.axes.size())}, c.axes);
      ExpectGpuMatchesCpu(op, {ReduceInput(op, c.dims, seed++), axes},
                          MakeAttrs({{"keepdims", c.keepdims}}), Opset(18, 1, {false, true}),
                          1e-4, 1e-5);
    }
  }
}

TEST(GpuReduceTest, AllOpsAxesAttributeFloat16) {
  KILN_REQUIRE_GPU();
  for (const char* op : kReduceOps) {
    if (std::string(op) == "ReduceSum") continue;  // Axes are an input from opset 13.
    uint32_t seed = 100;
    for (const ReduceCase& c : kReduceCases) {
      SCOPED_TRACE(::testing::Message() << op << " " << DimsToString(c.dims) << " axes "
                                        << DimsToString(c.axes));
      ir::Attributes attrs = MakeAttrs({{"keepdims", c.keepdims}});
      if (!c.axes.empty()) attrs.set("axes", c.axes);
      ExpectGpuMatchesCpu(op, {Half(ReduceInput(op, c.dims, seed++))}, attrs, Opset(13), 1e-2,
                          2e-3);
    }
  }
}

TEST(GpuReduceTest, ReduceSumOpset11AttributeAndNoop) {
  KILN_REQUIRE_GPU();
  ExpectGpuMatchesCpu("ReduceSum", {RandomTensor({4, 6, 3})},
                      MakeAttrs({{"axes", std::vector<int64_t>{-2}}}), Opset(11));
  // noop_with_empty_axes: an identity (the op maps each element alone).
  Tensor empty = Tensor::FromInt64s({0}, {});
  for (const char* op : {"ReduceSum", "ReduceL2", "ReduceSumSquare"}) {
    ExpectGpuMatchesCpu(op, {RandomTensor({4, 6, 3}), empty},
                        MakeAttrs({{"noop_with_empty_axes", int64_t{1}}}),
                        Opset(18, 1, {false, true}), 1e-5, 1e-6);
  }
  // Empty axes without noop: reduce everything.
  ExpectGpuMatchesCpu("ReduceMean", {RandomTensor({1000003}), empty}, {},
                      Opset(18, 1, {false, true}), 1e-4, 1e-5);
}

TEST(GpuReduceTest, LargeShapes) {
  KILN_REQUIRE_GPU();
  Tensor axes0 = Tensor::FromInt64s({1}, {0});
  Tensor axes1 = Tensor::FromInt64s({1}, {1});
  for (const char* op : {"ReduceSum", "ReduceMax", "ReduceLogSumExp", "ReduceMean"}) {
    SCOPED_TRACE(op);
    ExpectGpuMatchesCpu(op, {RandomTensor({100003, 3}), axes0}, {}, Opset(18, 1, {false, true}),
                        1e-4, 1e-4);
    ExpectGpuMatchesCpu(op, {RandomTensor({3, 100003}), axes1}, {}, Opset(18, 1, {false, true}),
                        1e-4, 1e-4);
    ExpectGpuMatchesCpu(op, {Half(RandomTensor({7, 4099, 3})), axes1}, {},
                        Opset(18, 1, {false, true}), 1e-2, 1e-2);
  }
}

TEST(GpuReduceTest, IntegerAndBool) {
  KILN_REQUIRE_GPU();
  Tensor axes = Tensor::FromInt64s({1}, {1});
  Tensor axes_last = Tensor::FromInt64s({1}, {-1});
  for (DType dtype : {DType::kInt32, DType::kInt64}) {
    Tensor x = RandomTensor({5, 37, 3}, -100.f, 100.f, 7).CastTo(dtype);
    for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1",
                           "ReduceSumSquare", "ReduceL2"}) {
      SCOPED_TRACE(::testing::Message() << op << " " << DTypeName(dtype));
      ExpectGpuMatchesCpu(op, {x, axes}, {}, Opset(18, 1, {false, true}));
      ExpectGpuMatchesCpu(op, {x, axes_last}, {}, Opset(18, 1, {false, true}));
    }
  }
  for (DType dtype : {DType::kInt8, DType::kUInt8}) {
    Tensor x = RandomTensor({5, 37, 3}, 0.f, 120.f, 9).CastTo(dtype);
    for (const char* op : {"ReduceMax", "ReduceMin"}) {
      ExpectGpuMatchesCpu(op, {x, axes}, {}, Opset(18, 1, {false, true}));
      ExpectGpuMatchesCpu(op, {x, axes_last}, {}, Opset(18, 1, {false, true}));
    }
  }
  Tensor b = RandomTensor({6, 9}, 0.f, 2.f, 3).CastTo(DType::kInt32).CastTo(DType::kBool);
  ExpectGpuMatchesCpu("ReduceMax", {b, axes}, {}, Opset(20, 1, {false, true}));
  ExpectGpuMatchesCpu("ReduceMin", {b, Tensor::FromInt64s({1}, {0})}, {},
                      Opset(20, 1, {false, true}));
}

TEST(GpuArgReduceTest, AxesTiesAndSelectLast) {
  KILN_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> dims;
    int64_t axis;
  };
  const Case cases[] = {{{5, 33}, 1}, {{5, 33}, 0}, {{2, 3, 7}, -2}, {{6, 2000}, -1},
                        {{1}, 0},     {{4, 1, 5}, 1}};
  uint32_t seed = 1;
  for (const char* op : {"ArgMax", "ArgMin"}) {
    for (const Case& c : cases) {
      for (int64_t select_last : {0, 1}) {
        for (int64_t keepdims : {0, 1}) {
          SCOPED_TRACE(::testing::Message() << op << " " << DimsToString(c.dims) << " axis "
                                            << c.axis << " last " << select_last);
          ir::Attributes attrs = MakeAttrs({{"axis", c.axis},
                                            {"keepdims", keepdims},
                                            {"select_last_index", select_last}});
          Tensor x = Tied(c.dims, -3.f, 3.f, seed++);
          ExpectGpuMatchesCpu(op, {x}, attrs);
          ExpectGpuMatchesCpu(op, {Half(x)}, attrs);
          ExpectGpuMatchesCpu(op, {x.CastTo(DType::kInt64)}, attrs);
          ExpectGpuMatchesCpu(op, {RandomTensor(c.dims, -1.f, 1.f, seed++)}, attrs);
        }
      }
    }
  }
  ExpectGpuMatchesCpu("ArgMax", {Tied({3, 11}, 0.f, 100.f, 4).CastTo(DType::kUInt8)},
                      MakeAttrs({{"axis", int64_t{1}}}));
}

TEST(GpuSoftmaxTest, AxesOpsetsDtypes) {
  KILN_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> dims;
    int64_t axis;
    int opset;
  };
  const Case cases[] = {{{2, 3, 4, 5}, -1, 13}, {{2, 3, 4, 5}, 1, 13}, {{2, 3, 4, 5}, 0, 13},
                        {{2, 3, 4, 5}, 1, 11},  {{2, 3, 4, 5}, -1, 11}, {{3, 5000}, -1, 13},
                        {{7, 1}, 0, 13},        {{1}, 0, 13},          {{4, 1025}, 1, 11},
                        {{9, 128}, -1, 13},     {{3, 768}, 1, 13},     {{3, 2048}, -1, 13},
                        {{5, 1, 16}, -1, 13}};
  uint32_t seed = 1;
  for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(::testing::Message() << op << " " << DimsToString(c.dims) << " axis "
                                        << c.axis << " opset " << c.opset);
      ir::Attributes attrs = MakeAttrs({{"axis", c.axis}});
      Tensor x = std::string(op) == "Hardmax" ? Tied(c.dims, -3.f, 3.f, seed++)
                                              : RandomTensor(c.dims, -5.f, 5.f, seed++);
      ExpectGpuMatchesCpu(op, {x}, attrs, Opset(c.opset), 1e-5, 1e-6);
      ExpectGpuMatchesCpu(op, {Half(x)}, attrs, Opset(c.opset), 1e-2, 1e-3);
    }
  }
  // Default axis and bfloat16.
  ExpectGpuMatchesCpu("Softmax", {RandomTensor({6, 77}).CastTo(DType::kBFloat16)}, {}, Opset(13),
                      2e-2, 2e-3);
}

TEST(GpuLpNormTest, PAndAxis) {
  KILN_REQUIRE_GPU();
  uint32_t seed = 1;
  for (int64_t p : {1, 2}) {
    for (int64_t axis : {-1, 0, 1}) {
      ir::Attributes attrs = MakeAttrs({{"axis", axis}, {"p", p}});
      Tensor x = RandomTensor({4, 9, 5}, -1.f, 1.f, seed++);
      ExpectGpuMatchesCpu("LpNormalization", {x}, attrs, Opset(1), 1e-5, 1e-6);
      ExpectGpuMatchesCpu("LpNormalization", {Half(x)}, attrs, Opset(1), 1e-2, 1e-3);
    }
    ExpectGpuMatchesCpu("LpNormalization", {RandomTensor({3, 3000})},
                        MakeAttrs({{"p", p}}), Opset(1), 1e-5, 1e-6);
  }
  // An all-zero row stays zero.
  ExpectGpuMatchesCpu("LpNormalization", {Tensor::FromFloats({2, 3}, {0, 0, 0, 1, 2, 3})}, {},
                      Opset(1));
}

TEST(GpuLayerNormTest, ShapesAndDtypes) {
  KILN_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> dims;
    int64_t axis;
    std::vector<int64_t> scale_dims;
  };
  const Case cases[] = {
      {{2, 7, 768}, -1, {768}},   // BERT rows: vectorized warp path.
      {{5, 33}, -1, {33}},        // Odd n: scalar warp path.
      {{3, 1000}, 1, {1000}},     // float16: vectorized, 4 chunks.
      {{2, 3000}, -1, {3000}},    // Block path.
      {{2, 3, 8}, 1, {3, 8}},     // Multi-dim normalized shape.
      {{2, 3, 8}, 1, {8}},        // Broadcast scale: block path with a map.
      {{2, 3, 8}, 0, {1, 3, 1}},  // Broadcast along a middle axis.
      {{1}, 0, {1}},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    for (bool bias : {true, false}) {
      SCOPED_TRACE(::testing::Message() << DimsToString(c.dims) << " axis " << c.axis
                                        << " scale " << DimsToString(c.scale_dims) << " bias "
                                        << bias);
      ir::Attributes attrs = MakeAttrs({{"axis", c.axis}, {"epsilon", 1e-3f}});
      Tensor x = RandomTensor(c.dims, -2.f, 3.f, seed++);
      Tensor scale = RandomTensor(c.scale_dims, 0.5f, 1.5f, seed++);
      Tensor b = bias ? RandomTensor(c.scale_dims, -1.f, 1.f, seed++) : Tensor();
      ExpectGpuMatchesCpu("LayerNormalization", {x, scale, b}, attrs, Opset(17, 3), 1e-4, 1e-4);
      ExpectGpuMatchesCpu("LayerNormalization", {Half(x), Half(scale), bias ? Half(b) : b}, attrs,
                          Opset(17, 1), 1e-2, 1e-2);
      ExpectGpuMatchesCpu("LayerNormalization",
                          {x.CastTo(DType::kBFloat16), scale.CastTo(DType::kBFloat16),
                           bias ? b.CastTo(DType::kBFloat16) : b},
                          attrs, Opset(17, 1), 3e-2, 3e-2);
    }
  }
}

// KilnSumLayerNorm (src/builder/fuse_layernorm.h): rows gathered from a
// table plus a term repeating every 7 rows plus one broadcast row, then
// LayerNorm; the reference adds the same rounded values in float32 and
// normalizes with the CPU backend's LayerNormalization. Indices cover
// negative and out-of-range values (the latter add zeros, as the GPU Gather).
TEST(GpuSumLayerNormTest, MatchesGatherAddLayerNormOnTheCpu) {
  KILN_REQUIRE_GPU();
  constexpr int64_t kTableRows = 50, kRows = 14, kPeriod = 7;
  uint32_t seed = 100;
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (int64_t n : {768, 36}) {  // 36: not a multiple of 8 halves, the scalar path.
      for (bool bias : {true, false}) {
        const bool int32_ids = bias;
        SCOPED_TRACE(::testing::Message() << DTypeName(dtype) << " n " << n << " bias " << bias);
        // Inputs rounded to dtype, and their float32 values for the reference.
        auto rounded = [&](std::vector<int64_t> dims, float lo, float hi) {
          return RandomTensor(std::move(dims), lo, hi, seed++).CastTo(dtype).CastTo(
              DType::kFloat32);
        };
        const Tensor table = rounded({kTableRows, n}, -2, 2);
        const Tensor period = rounded({kPeriod, n}, -1, 1);
        const Tensor row = rounded({1, n}, -1, 1);
        const Tensor scale = rounded({n}, 0.5, 1.5);
        const Tensor b = bias ? rounded({n}, -1, 1) : Tensor();
        Tensor ids = RandomTensor({2, kPeriod}, -kTableRows - 3, kTableRows + 3, seed++)
                         .CastTo(DType::kInt64);
        ids.data<int64_t>()[0] = -1;
        ids.data<int64_t>()[1] = kTableRows;  // Out of range: adds zeros.
        Tensor sum(DType::kFloat32, {2, kPeriod, n});
        for (int64_t r = 0; r < kRows; ++r) {
          int64_t id = ids.data<int64_t>()[r];
          if (id < 0) id += kTableRows;
          const bool valid = id >= 0 && id < kTableRows;
          for (int64_t k = 0; k < n; ++k)
            sum.data<float>()[r * n + k] = (valid ? table.data<float>()[id * n + k] : 0.f) +
                                            period.data<float>()[(r % kPeriod) * n + k] +
                                            row.data<float>()[k];
        }
        ir::Attributes attrs = MakeAttrs({{"epsilon", 1e-5f}});
        testing::GpuNodeOptions options;
        options.output_types = {{dtype, ir::ShapeFromDims({2, kPeriod, n})}};
        const Tensor expected =
            testing::RunNode("LayerNormalization", {sum, scale, b},
                             MakeAttrs({{"axis", int64_t{-1}}, {"epsilon", 1e-5f}}))[0];
        auto runs = testing::RunNodeOnGpu(
            "KilnSumLayerNorm",
            {scale.CastTo(dtype), bias ? b.CastTo(dtype) : Tensor(),
             int32_ids ? ids.CastTo(DType::kInt32) : ids, table.CastTo(dtype), period.CastTo(dtype),
             row.CastTo(dtype)},
            attrs, options);
        ASSERT_EQ(runs.size(), 1u);
        const Tensor got = runs[0][0].CastTo(DType::kFloat32);
        ASSERT_EQ(got.dims(), expected.dims());
        for (int64_t i = 0; i < got.numel(); ++i)
          ASSERT_FALSE(std::isnan(got.data<float>()[i])) << "element " << i << " not written";
        const double tol = dtype == DType::kFloat32 ? 1e-4 : dtype == DType::kFloat16 ? 1e-2 : 4e-2;
        EXPECT_LE(testing::MaxAbsoluteError(got, expected), tol);
      }
    }
  }
}

TEST(GpuGroupNormTest, Opset18And21) {
  KILN_REQUIRE_GPU();
  Tensor x = RandomTensor({2, 6, 5, 7}, -2.f, 2.f, 1);
  ir::Attributes attrs = MakeAttrs({{"num_groups", int64_t{3}}, {"epsilon", 1e-4f}});
  Tensor gs = RandomTensor({3}, 0.5f, 1.5f, 2), gb = RandomTensor({3}, -1.f, 1.f, 3);
  ExpectGpuMatchesCpu("GroupNormalization", {x, gs, gb}, attrs, Opset(18), 1e-4, 1e-4);
  ExpectGpuMatchesCpu("GroupNormalization", {Half(x), Half(gs), Half(gb)}, attrs, Opset(18), 1e-2,
                      1e-2);
  Tensor cs = RandomTensor({6}, 0.5f, 1.5f, 4), cb = RandomTensor({6}, -1.f, 1.f, 5);
  ExpectGpuMatchesCpu("GroupNormalization", {x, cs, cb}, attrs, Opset(21), 1e-4, 1e-4);
  ExpectGpuMatchesCpu("GroupNormalization", {Half(x), Half(cs), Half(cb)}, attrs, Opset(21), 1e-2,
                      1e-2);
  // Large groups (block reduction over many elements), rank 3.
  Tensor big = RandomTensor({1, 4, 30001}, -1.f, 1.f, 6);
  ExpectGpuMatchesCpu("GroupNormalization",
                      {big, RandomTensor({4}, 0.5f, 1.f, 7), RandomTensor({4}, 0.f, 1.f, 8)},
                      MakeAttrs({{"num_groups", int64_t{2}}}), Opset(21), 1e-4, 1e-4);
}

TEST(GpuInstanceNormTest, Dtypes) {
  KILN_REQUIRE_GPU();
  for (const std::vector<int64_t>& dims :
       {std::vector<int64_t>{2, 3, 7, 9}, std::vector<int64_t>{1, 5, 11},
        std::vector<int64_t>{2, 2, 3, 4, 5}, std::vector<int64_t>{1, 2, 70000}}) {
    Tensor x = RandomTensor(dims, -2.f, 3.f, 1);
    Tensor s = RandomTensor({dims[1]}, 0.5f, 1.5f, 2), b = RandomTensor({dims[1]}, -1.f, 1.f, 3);
    ir::Attributes attrs = MakeAttrs({{"epsilon", 1e-5f}});
    ExpectGpuMatchesCpu("InstanceNormalization", {x, s, b}, attrs, Opset(6), 1e-4, 1e-4);
    ExpectGpuMatchesCpu("InstanceNormalization", {Half(x), Half(s), Half(b)}, attrs, Opset(6),
                        1e-2, 1e-2);
  }
}

TEST(GpuMeanVarianceNormTest, Axes) {
  KILN_REQUIRE_GPU();
  Tensor x = RandomTensor({3, 4, 5, 6}, -2.f, 3.f, 1);
  ExpectGpuMatchesCpu("MeanVarianceNormalization", {x}, {}, Opset(13), 1e-4, 1e-4);
  ExpectGpuMatchesCpu("MeanVarianceNormalization", {Half(x)}, {}, Opset(13), 1e-2, 1e-2);
  for (const std::vector<int64_t>& axes :
       {std::vector<int64_t>{1}, std::vector<int64_t>{-1}, std::vector<int64_t>{0, 1, 2, 3},
        std::vector<int64_t>{1, 3}}) {
    ExpectGpuMatchesCpu("MeanVarianceNormalization", {x}, MakeAttrs({{"axes", axes}}), Opset(13),
                        1e-4, 1e-4);
  }
}

TEST(GpuReduceTest, RejectsUnsupported) {
  KILN_REQUIRE_GPU();
  // Non-constant axes input.
  EXPECT_THROW(testing::RunNodeOnGpu("ReduceSum",
                                     {RandomTensor({2, 3}), Tensor::FromInt64s({1}, {1})}, {},
                                     Opset(13)),
               Error);
  // float64 is not supported on the GPU.
  EXPECT_THROW(testing::RunNodeOnGpu("Softmax", {RandomTensor({2, 3}).CastTo(DType::kFloat64)},
                                     {}, Opset(13)),
               Error);
}

}  // namespace
}  // namespace kiln
