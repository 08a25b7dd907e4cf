// Tests for reductions, normalizations and the softmax family, checked
// against naive loops written independently of the kernels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "ops/registry.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::MaxAbsoluteError;
using testing::RandomTensor;
using testing::RunNode;

// Row-major multi-index of flat index i.
std::vector<int64_t> Unravel(int64_t i, const std::vector<int64_t>& dims) {
  std::vector<int64_t> index(dims.size());
  for (size_t d = dims.size(); d-- > 0;) {
    index[d] = i % dims[d];
    i /= dims[d];
  }
  return index;
}

int64_t Ravel(const std::vector<int64_t>& index, const std::vector<int64_t>& dims) {
  int64_t flat = 0;
  for (size_t d = 0; d < dims.size(); ++d) flat = flat * dims[d] + index[d];
  return flat;
}

// Naive reduction: gathers the values that fold into each output element and
// applies `fold` to the list. `axes` are non-negative; empty means all.
Tensor NaiveReduce(const Tensor& x, std::vector<int64_t> axes, bool keepdims,
                   const std::function<double(const std::vector<double>&)>& fold) {
  if (axes.empty())
    for (int i = 0; i < x.rank(); ++i) axes.push_back(i);
  std::vector<int64_t> kept_dims = x.dims();
  for (int64_t a : axes) kept_dims[static_cast<size_t>(a)] = 1;
  std::vector<std::vector<double>> groups(static_cast<size_t>(Product(kept_dims)));
  for (int64_t i = 0; i < x.numel(); ++i) {
    std::vector<int64_t> index = Unravel(i, x.dims());
    for (int64_t a : axes) index[static_cast<size_t>(a)] = 0;
    groups[static_cast<size_t>(Ravel(index, kept_dims))].push_back(x.GetAsDouble(i));
  }
  std::vector<float> values;
  for (const auto& g : groups) values.push_back(static_cast<float>(fold(g)));
  std::vector<int64_t> out_dims;
  for (size_t d = 0; d < kept_dims.size(); ++d) {
    bool reduced = std::find(axes.begin(), axes.end(), static_cast<int64_t>(d)) != axes.end();
    if (!reduced || keepdims) out_dims.push_back(kept_dims[d]);
  }
  return Tensor::FromFloats(out_dims, values);
}

double Sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}

struct ReduceCase {
  const char* op;
  std::function<double(const std::vector<double>&)> fold;
};

std::vector<ReduceCase> AllReductions() {
  return {
      {"ReduceSum", Sum},
      {"ReduceMean", [](const auto& v) { return Sum(v) / static_cast<double>(v.size()); }},
      {"ReduceMax", [](const auto& v) { return *std::max_element(v.begin(), v.end()); }},
      {"ReduceMin", [](const auto& v) { return *std::min_element(v.begin(), v.end()); }},
      {"ReduceProd",
       [](const auto& v) {
         double p = 1;
         for (double x : v) p *= x;
         return p;
       }},
      {"ReduceL1",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += std::fabs(x);
         return s;
       }},
      {"ReduceL2",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += x * x;
         return std::sqrt(s);
       }},
      {"ReduceSumSquare",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += x * x;
         return s;
       }},
      {"ReduceLogSum", [](const auto& v) { return std::log(Sum(v)); }},
      {"ReduceLogSumExp",
       [](const auto& v) {
         double s = 0;
         for (double x : v) s += std::exp(x);
         return std::log(s);
       }},
  };
}

// Runs a Reduce* node the way a model of `opset` writes it: axes as an
// attribute before the op's cut-over, as a constant input after.
Tensor RunReduce(const std::string& op, const Tensor& x, const std::vector<int64_t>& axes,
                 int64_t keepdims, int opset, bool axes_as_constant = true) {
  ir::Attributes attrs;
  attrs.set("keepdims", keepdims);
  int cutover = op == "ReduceSum" ? 13 : 18;
  if (opset < cutover) {
    if (!axes.empty()) attrs.set("axes", axes);
    return RunNode(op, {x}, attrs, 1, opset)[0];
  }
  if (axes.empty()) return RunNode(op, {x}, attrs, 1, opset)[0];
  Tensor axes_t = Tensor::FromInt64s({static_cast<int64_t>(axes.size())}, axes);
  return RunNode(op, {x, axes_t}, attrs, 1, opset, {false, axes_as_constant})[0];
}

std::vector<int64_t> Normalized(const std::vector<int64_t>& axes, int rank) {
  std::vector<int64_t> out;
  for (int64_t a : axes) out.push_back(a < 0 ? a + rank : a);
  return out;
}

TEST(ReduceTest, AllReductionsMatchNaiveLoops) {
  // Positive inputs keep ReduceLogSum defined; ReduceProd stays well scaled.
  Tensor x = RandomTensor({2, 3, 4, 5}, 0.5f, 1.5f, 7);
  const std::vector<std::vector<int64_t>> axis_sets = {
      {}, {0}, {1}, {3}, {-1}, {0, 2}, {1, 3}, {-3, -2}, {0, 1, 2, 3}, {2, 0}};
  for (const ReduceCase& c : AllReductions()) {
    for (int opset : {13, 18}) {
      for (const auto& axes : axis_sets) {
        for (int64_t keepdims : {0, 1}) {
          SCOPED_TRACE(::testing::Message() << c.op << " opset " << opset << " axes "
                                            << DimsToString(axes) << " keepdims " << keepdims);
          Tensor expected = NaiveReduce(x, Normalized(axes, 4), keepdims != 0, c.fold);
          Tensor actual = RunReduce(c.op, x, axes, keepdims, opset);
          ASSERT_EQ(actual.dims(), expected.dims());
          EXPECT_LT(testing::MaxRelativeError(actual, expected), 1e-5);
        }
      }
    }
  }
}

TEST(ReduceTest, SizeOneAxesAndScalars) {
  // Size-1 axes between others change how groups merge, not the result.
  Tensor x = RandomTensor({3, 1, 4, 1, 2}, -1, 1, 9);
  for (const ReduceCase& c : AllReductions()) {
    if (std::string(c.op) == "ReduceLogSum") continue;  // Needs positive sums.
    for (const std::vector<int64_t>& axes : {std::vector<int64_t>{1}, {1, 2}, {0, 3, 4}, {3}}) {
      SCOPED_TRACE(::testing::Message() << c.op << " axes " << DimsToString(axes));
      Tensor expected = NaiveReduce(x, axes, false, c.fold);
      Tensor actual = RunReduce(c.op, x, axes, 0, 18);
      ASSERT_EQ(actual.dims(), expected.dims());
      EXPECT_LT(testing::MaxRelativeError(actual, expected), 1e-5);
    }
  }
  // A rank-0 input reduces to itself.
  Tensor scalar = Tensor::Scalar(-2.5f);
  EXPECT_EQ(RunReduce("ReduceSum", scalar, {}, 1, 13).ToFloatVector(), (std::vector<float>{-2.5f}));
  EXPECT_EQ(RunReduce("ReduceL1", scalar, {}, 0, 13).ToFloatVector(), (std::vector<float>{2.5f}));
}

TEST(ReduceTest, AxesInputKnownOnlyAtRunTime) {
  Tensor x = RandomTensor({3, 4, 5}, -1, 1, 3);
  Tensor actual = RunReduce("ReduceSum", x, {0, 2}, 0, 13, /*axes_as_constant=*/false);
  Tensor expected = NaiveReduce(x, {0, 2}, false, Sum);
  EXPECT_LT(MaxAbsoluteError(actual, expected), 1e-5);
}

TEST(ReduceTest, HandWorkedSumAndMean) {
  Tensor x = Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(RunReduce("ReduceSum", x, {1}, 1, 13).ToFloatVector(), (std::vector<float>{6, 15}));
  EXPECT_EQ(RunReduce("ReduceSum", x, {0}, 0, 11).ToFloatVector(), (std::vector<float>{5, 7, 9}));
  Tensor all = RunReduce("ReduceMean", x, {}, 0, 13);
  EXPECT_EQ(all.rank(), 0);
  EXPECT_FLOAT_EQ(all.ToFloatVector()[0], 3.5f);
}

TEST(ReduceTest, NoopWithEmptyAxes) {
  Tensor x = Tensor::FromFloats({2, 2}, {1, -2, 3, -4});
  ir::Attributes attrs;
  attrs.set("noop_with_empty_axes", int64_t{1});
  // Without axes the input passes through (after the per-element map).
  EXPECT_EQ(RunNode("ReduceSum", {x}, attrs, 1, 13)[0].ToFloatVector(), x.ToFloatVector());
  Tensor empty_axes = Tensor::FromInt64s({0}, {});
  Tensor same = RunNode("ReduceSum", {x, empty_axes}, attrs, 1, 13, {false, true})[0];
  EXPECT_EQ(same.dims(), x.dims());
  EXPECT_EQ(same.ToFloatVector(), x.ToFloatVector());
  EXPECT_EQ(RunNode("ReduceSumSquare", {x}, attrs, 1, 18)[0].ToFloatVector(),
            (std::vector<float>{1, 4, 9, 16}));
  EXPECT_EQ(RunNode("ReduceL1", {x}, attrs, 1, 18)[0].ToFloatVector(),
            (std::vector<float>{1, 2, 3, 4}));
  // Empty axes without noop reduce everything.
  attrs.set("noop_with_empty_axes", int64_t{0});
  Tensor all = RunNode("ReduceSum", {x, empty_axes}, attrs, 1, 13, {false, true})[0];
  EXPECT_EQ(all.dims(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(all.ToFloatVector(), (std::vector<float>{-2}));
}

TEST(ReduceTest, IntegerReductions) {
  Tensor x = Tensor::FromInt64s({2, 3}, {1, -7, 3, 4, 5, 6});
  Tensor sum = RunReduce("ReduceSum", x, {1}, 0, 13);
  EXPECT_EQ(sum.dtype(), DType::kInt64);
  EXPECT_EQ(sum.ToInt64Vector(), (std::vector<int64_t>{-3, 15}));
  Tensor x32 = x.CastTo(DType::kInt32);
  Tensor mx = RunReduce("ReduceMax", x32, {0}, 1, 13);
  EXPECT_EQ(mx.dtype(), DType::kInt32);
  EXPECT_EQ(mx.ToInt64Vector(), (std::vector<int64_t>{4, 5, 6}));
  EXPECT_EQ(RunReduce("ReduceMin", x32, {}, 0, 18).ToInt64Vector(), (std::vector<int64_t>{-7}));
  // Integer mean truncates toward zero like numpy's mean().astype(int).
  EXPECT_EQ(RunReduce("ReduceMean", x32, {1}, 0, 13).ToInt64Vector(),
            (std::vector<int64_t>{-1, 5}));
  EXPECT_EQ(RunReduce("ReduceProd", x, {1}, 0, 13).ToInt64Vector(),
            (std::vector<int64_t>{-21, 120}));
  EXPECT_EQ(RunReduce("ReduceL1", x, {1}, 0, 13).ToInt64Vector(), (std::vector<int64_t>{11, 15}));
  // ReduceMax/ReduceMin accept bool (opset 20): any / all.
  Tensor b = Tensor::FromInt64s({2, 2}, {0, 1, 0, 0}).CastTo(DType::kBool);
  Tensor any = RunReduce("ReduceMax", b, {1}, 0, 20);
  EXPECT_EQ(any.dtype(), DType::kBool);
  EXPECT_EQ(any.ToInt64Vector(), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(RunReduce("ReduceMin", b, {0}, 0, 20).ToInt64Vector(), (std::vector<int64_t>{0, 0}));
  EXPECT_THROW(RunReduce("ReduceSum", b, {0}, 0, 20), Error);
}

TEST(ReduceTest, Float16AccumulatesInFloat32) {
  // 4096 halves sum to 2048; a float16 accumulator would stall at 1024, where
  // float16's spacing becomes 1 and adding 0.5 rounds back to even.
  std::vector<float> values(4096, 0.5f);
  Tensor x = Tensor::FromFloats({4096}, values).CastTo(DType::kFloat16);
  Tensor sum = RunReduce("ReduceSum", x, {0}, 0, 13);
  EXPECT_EQ(sum.dtype(), DType::kFloat16);
  EXPECT_FLOAT_EQ(sum.ToFloatVector()[0], 2048.0f);
  Tensor mean = RunReduce("ReduceMean", x, {0}, 0, 13);
  EXPECT_FLOAT_EQ(mean.ToFloatVector()[0], 0.5f);
}

TEST(ReduceTest, LogSumExpIsStableForLargeInputs) {
  Tensor x = Tensor::FromFloats({1, 3}, {1000, 1000, 1000});
  Tensor y = RunReduce("ReduceLogSumExp", x, {1}, 0, 13);
  EXPECT_NEAR(y.ToFloatVector()[0], 1000 + std::log(3.0), 1e-3);
}

TEST(ReduceTest, EmptyReductionYieldsIdentity) {
  Tensor x(DType::kFloat32, {2, 0, 3});
  EXPECT_EQ(RunReduce("ReduceSum", x, {1}, 0, 13).ToFloatVector(), std::vector<float>(6, 0.f));
  EXPECT_EQ(RunReduce("ReduceProd", x, {1}, 0, 13).ToFloatVector(), std::vector<float>(6, 1.f));
  Tensor mx = RunReduce("ReduceMax", x, {1}, 1, 13);
  EXPECT_EQ(mx.dims(), (std::vector<int64_t>{2, 1, 3}));
  EXPECT_TRUE(std::isinf(mx.ToFloatVector()[0]) && mx.ToFloatVector()[0] < 0);
}

TEST(ReduceTest, ErrorsNameTheProblem) {
  Tensor x = RandomTensor({2, 3});
  EXPECT_THROW(RunReduce("ReduceSum", x, {2}, 1, 13), Error);
  EXPECT_THROW(RunReduce("ReduceMean", x, {-3}, 1, 11), Error);
  EXPECT_THROW(RunReduce("ReduceMax", x, {1, -1}, 1, 18), Error);  // Repeated axis.
  // Before opset 13 ReduceSum has no axes input.
  Tensor axes = Tensor::FromInt64s({1}, {0});
  EXPECT_THROW(RunNode("ReduceSum", {x, axes}, {}, 1, 11, {false, true}), Error);
  // Float axes are rejected.
  EXPECT_THROW(RunNode("ReduceSum", {x, Tensor::FromFloats({1}, {0})}, {}, 1, 13, {false, true}),
               Error);
  try {
    RunReduce("ReduceSum", x, {5}, 1, 13);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("axis 5"), std::string::npos) << e.what();
  }
}

TEST(ReduceTest, SymbolicShapeInference) {
  ir::Graph g;
  g.opset_version = 18;
  ir::Value* x = g.AddValue("x");
  ir::Value* y = g.AddValue("y");
  ir::Node* node = g.AddNode("ReduceMean", "mean", {x, nullptr}, {y});
  ir::TensorType xt{DType::kFloat32,
                    ir::Shape{ir::Dim::Symbol("batch"), ir::Dim::Known(8), ir::Dim::Known(1)}};
  Tensor axes = Tensor::FromInt64s({1}, {1});
  ir::TensorType axes_t = ir::TensorType::Of(axes);
  node->inputs[1] = g.AddValue("axes");

  // Known axes: the symbolic batch dim survives.
  auto out = InferNode(*node, {&xt, &axes_t}, {nullptr, &axes});
  ASSERT_TRUE(out[0].has_rank());
  EXPECT_EQ(ir::ShapeToString(*out[0].shape), "[batch,1,1]");

  // Unknown axes with keepdims: rank known, only size-1 dims certain.
  out = InferNode(*node, {&xt, &axes_t}, {nullptr, nullptr});
  ASSERT_TRUE(out[0].has_rank());
  EXPECT_EQ(ir::ShapeToString(*out[0].shape), "[?,?,1]");

  // Unknown axes without keepdims: unknown rank.
  node->attrs.set("keepdims", int64_t{0});
  out = InferNode(*node, {&xt, &axes_t}, {nullptr, nullptr});
  EXPECT_FALSE(out[0].has_rank());
}

// ---------------------------------------------------------------------------
// ArgMax / ArgMin

// Naive arg-reduction along `axis`, output with keepdims.
std::vector<int64_t> NaiveArg(const Tensor& x, int axis, bool is_max, bool last) {
  std::vector<int64_t> out_dims = x.dims();
  out_dims[static_cast<size_t>(axis)] = 1;
  std::vector<int64_t> result(static_cast<size_t>(Product(out_dims)));
  for (int64_t o = 0; o < Product(out_dims); ++o) {
    std::vector<int64_t> index = Unravel(o, out_dims);
    int64_t best = 0;
    double best_value = 0;
    for (int64_t k = 0; k < x.dim(axis); ++k) {
      index[static_cast<size_t>(axis)] = k;
      double v = x.GetAsDouble(Ravel(index, x.dims()));
      bool better =
          k == 0 || (is_max ? v > best_value : v < best_value) || (last && v == best_value);
      if (better) {
        best = k;
        best_value = v;
      }
    }
    result[static_cast<size_t>(o)] = best;
  }
  return result;
}

TEST(ReduceArgTest, MatchesNaiveLoopsWithTies) {
  // Small integers give many ties, exercising select_last_index.
  Tensor x(DType::kFloat32, {3, 4, 5});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>((i * 7) % 4);
  for (const char* op : {"ArgMax", "ArgMin"}) {
    for (int64_t axis : {0, 1, 2, -1, -2}) {
      for (int64_t last : {0, 1}) {
        for (int64_t keepdims : {0, 1}) {
          SCOPED_TRACE(::testing::Message()
                       << op << " axis " << axis << " last " << last << " keepdims " << keepdims);
          ir::Attributes attrs;
          attrs.set("axis", axis);
          attrs.set("select_last_index", last);
          attrs.set("keepdims", keepdims);
          Tensor y = RunNode(op, {x}, attrs, 1, 13)[0];
          int a = static_cast<int>(axis < 0 ? axis + 3 : axis);
          std::vector<int64_t> dims = x.dims();
          if (keepdims) {
            dims[static_cast<size_t>(a)] = 1;
          } else {
            dims.erase(dims.begin() + a);
          }
          EXPECT_EQ(y.dtype(), DType::kInt64);
          EXPECT_EQ(y.dims(), dims);
          EXPECT_EQ(y.ToInt64Vector(), NaiveArg(x, a, std::string(op) == "ArgMax", last != 0));
        }
      }
    }
  }
}

TEST(ReduceArgTest, IntegerAndHalfInputs) {
  Tensor x = Tensor::FromInt64s({2, 3}, {5, 9, 9, -1, -4, 2});
  ir::Attributes attrs;
  attrs.set("axis", int64_t{1});
  attrs.set("keepdims", int64_t{0});
  EXPECT_EQ(RunNode("ArgMax", {x}, attrs, 1, 11)[0].ToInt64Vector(), (std::vector<int64_t>{1, 2}));
  Tensor h = Tensor::FromFloats({2, 3}, {5, 9, 9, -1, -4, 2}).CastTo(DType::kFloat16);
  EXPECT_EQ(RunNode("ArgMin", {h}, attrs, 1, 11)[0].ToInt64Vector(), (std::vector<int64_t>{0, 1}));
}

TEST(ReduceArgTest, BadAxisThrows) {
  ir::Attributes attrs;
  attrs.set("axis", int64_t{2});
  EXPECT_THROW(RunNode("ArgMax", {RandomTensor({2, 3})}, attrs), Error);
  attrs.set("axis", int64_t{0});
  EXPECT_THROW(RunNode("ArgMax", {Tensor(DType::kFloat32, {0, 3})}, attrs), Error);
}

// ---------------------------------------------------------------------------
// Softmax family

// Naive softmax over the flattened index set {outer} x [begin, end) of axes.
// `rows` groups flat indices: element i belongs to row key(i).
Tensor NaiveSoftmax(const Tensor& x, const std::function<int64_t(int64_t)>& row_of, bool log) {
  std::vector<double> max(static_cast<size_t>(x.numel()), -INFINITY);
  std::vector<double> sum(static_cast<size_t>(x.numel()), 0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    size_t r = static_cast<size_t>(row_of(i));
    max[r] = std::max(max[r], x.GetAsDouble(i));
  }
  for (int64_t i = 0; i < x.numel(); ++i) {
    size_t r = static_cast<size_t>(row_of(i));
    sum[r] += std::exp(x.GetAsDouble(i) - max[r]);
  }
  std::vector<float> out;
  for (int64_t i = 0; i < x.numel(); ++i) {
    size_t r = static_cast<size_t>(row_of(i));
    double e = x.GetAsDouble(i) - max[r];
    out.push_back(static_cast<float>(log ? e - std::log(sum[r]) : std::exp(e) / sum[r]));
  }
  return Tensor::FromFloats(x.dims(), out);
}

// Row key for "along one axis": the multi-index with that axis zeroed.
std::function<int64_t(int64_t)> AlongAxis(const std::vector<int64_t>& dims, int axis) {
  return [dims, axis](int64_t i) {
    std::vector<int64_t> index = Unravel(i, dims);
    index[static_cast<size_t>(axis)] = 0;
    return Ravel(index, dims);
  };
}

// Row key for the pre-13 semantics: flatten to 2-D at axis.
std::function<int64_t(int64_t)> Coerced2D(const std::vector<int64_t>& dims, int axis) {
  int64_t cols = Product(dims, static_cast<size_t>(axis));
  return [cols](int64_t i) { return i / cols; };
}

TEST(ReduceSoftmaxTest, Opset13AlongOneAxis) {
  Tensor x = RandomTensor({2, 3, 4}, -3, 3, 11);
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    bool log = std::string(op) == "LogSoftmax";
    for (int64_t axis : {0, 1, 2, -1, -2}) {
      SCOPED_TRACE(::testing::Message() << op << " axis " << axis);
      ir::Attributes attrs;
      attrs.set("axis", axis);
      Tensor y = RunNode(op, {x}, attrs, 1, 13)[0];
      int a = static_cast<int>(axis < 0 ? axis + 3 : axis);
      EXPECT_LT(MaxAbsoluteError(y, NaiveSoftmax(x, AlongAxis(x.dims(), a), log)), 1e-5);
    }
    // Default axis is -1 from opset 13.
    Tensor y = RunNode(op, {x}, {}, 1, 13)[0];
    EXPECT_LT(MaxAbsoluteError(y, NaiveSoftmax(x, AlongAxis(x.dims(), 2), log)), 1e-5);
  }
}

TEST(ReduceSoftmaxTest, BeforeOpset13CoercesTo2D) {
  Tensor x = RandomTensor({2, 3, 4}, -3, 3, 12);
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    bool log = std::string(op) == "LogSoftmax";
    for (int64_t axis : {0, 1, 2, -1}) {
      SCOPED_TRACE(::testing::Message() << op << " axis " << axis);
      ir::Attributes attrs;
      attrs.set("axis", axis);
      Tensor y = RunNode(op, {x}, attrs, 1, 11)[0];
      int a = static_cast<int>(axis < 0 ? axis + 3 : axis);
      EXPECT_LT(MaxAbsoluteError(y, NaiveSoftmax(x, Coerced2D(x.dims(), a), log)), 1e-5);
    }
    // Default axis is 1: each batch row of 12 values sums to one.
    Tensor y = RunNode(op, {x}, {}, 1, 11)[0];
    EXPECT_LT(MaxAbsoluteError(y, NaiveSoftmax(x, Coerced2D(x.dims(), 1), log)), 1e-5);
  }
}

TEST(ReduceSoftmaxTest, LargeInputsAndHalf) {
  Tensor x = Tensor::FromFloats({1, 3}, {10000, 10001, 10002});
  Tensor y = RunNode("Softmax", {x}, {}, 1, 13)[0];
  std::vector<float> expected = {0.09003057f, 0.24472847f, 0.66524096f};
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(y.ToFloatVector()[i], expected[i], 1e-6);
  Tensor ly = RunNode("LogSoftmax", {x}, {}, 1, 13)[0];
  EXPECT_NEAR(ly.ToFloatVector()[0], std::log(expected[0]), 1e-5);
  // float16 cannot hold 10001 exactly; shift the same logits to 0, 1, 2.
  Tensor small = Tensor::FromFloats({1, 3}, {0, 1, 2});
  Tensor h = RunNode("Softmax", {small.CastTo(DType::kFloat16)}, {}, 1, 13)[0];
  EXPECT_EQ(h.dtype(), DType::kFloat16);
  EXPECT_NEAR(h.ToFloatVector()[2], expected[2], 1e-3);
}

TEST(ReduceSoftmaxTest, HardmaxPicksFirstMaximum) {
  Tensor x = Tensor::FromFloats({2, 2, 3}, {1, 3, 3, 0, -1, -2, 4, 4, 4, 2, 7, 1});
  ir::Attributes attrs;
  attrs.set("axis", int64_t{-1});
  EXPECT_EQ(RunNode("Hardmax", {x}, attrs, 1, 13)[0].ToFloatVector(),
            (std::vector<float>{0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0}));
  // Along axis 1 (stride 3) at opset 13.
  attrs.set("axis", int64_t{1});
  EXPECT_EQ(RunNode("Hardmax", {x}, attrs, 1, 13)[0].ToFloatVector(),
            (std::vector<float>{1, 1, 1, 0, 0, 0, 1, 0, 1, 0, 1, 0}));
  // Opset 11, axis 1: one maximum over each flattened row of 6.
  EXPECT_EQ(RunNode("Hardmax", {x}, attrs, 1, 11)[0].ToFloatVector(),
            (std::vector<float>{0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}));
}

TEST(ReduceSoftmaxTest, BadAxisThrows) {
  ir::Attributes attrs;
  attrs.set("axis", int64_t{3});
  for (const char* op : {"Softmax", "LogSoftmax", "Hardmax"}) {
    EXPECT_THROW(RunNode(op, {RandomTensor({2, 3, 4})}, attrs, 1, 13), Error) << op;
    EXPECT_THROW(RunNode(op, {RandomTensor({2, 3, 4})}, attrs, 1, 11), Error) << op;
  }
  EXPECT_THROW(RunNode("Softmax", {Tensor::FromInt64s({2}, {1, 2})}, {}, 1, 13), Error);
}

// ---------------------------------------------------------------------------
// Normalizations

// Naive LayerNorm over trailing dims from `axis`; scale/bias broadcast from
// the right. Returns {Y, Mean, InvStdDev}.
std::vector<Tensor> NaiveLayerNorm(const Tensor& x, int axis, const Tensor& scale,
                                   const Tensor* bias, double eps) {
  int64_t rows = Product(x.dims(), 0, static_cast<size_t>(axis));
  int64_t n = Product(x.dims(), static_cast<size_t>(axis));
  std::vector<float> y, means, inv_stds;
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t k = 0; k < n; ++k) mean += x.GetAsDouble(r * n + k) / static_cast<double>(n);
    for (int64_t k = 0; k < n; ++k)
      var += std::pow(x.GetAsDouble(r * n + k) - mean, 2) / static_cast<double>(n);
    double inv = 1 / std::sqrt(var + eps);
    for (int64_t k = 0; k < n; ++k) {
      double s = scale.GetAsDouble(k % scale.numel());
      double b = bias ? bias->GetAsDouble(k % bias->numel()) : 0.0;
      y.push_back(static_cast<float>((x.GetAsDouble(r * n + k) - mean) * inv * s + b));
    }
    means.push_back(static_cast<float>(mean));
    inv_stds.push_back(static_cast<float>(inv));
  }
  std::vector<int64_t> stat_dims = x.dims();
  for (size_t d = static_cast<size_t>(axis); d < stat_dims.size(); ++d) stat_dims[d] = 1;
  return {Tensor::FromFloats(x.dims(), y), Tensor::FromFloats(stat_dims, means),
          Tensor::FromFloats(stat_dims, inv_stds)};
}

TEST(ReduceLayerNormTest, LastAxisWithStatistics) {
  Tensor x = RandomTensor({2, 3, 8}, -2, 2, 21);
  Tensor scale = RandomTensor({8}, 0.5, 1.5, 22);
  Tensor bias = RandomTensor({8}, -1, 1, 23);
  ir::Attributes attrs;
  attrs.set("axis", int64_t{-1});
  attrs.set("epsilon", 1e-3f);
  std::vector<Tensor> out = RunNode("LayerNormalization", {x, scale, bias}, attrs, 3, 17);
  std::vector<Tensor> expected = NaiveLayerNorm(x, 2, scale, &bias, 1e-3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(out[i].dims(), expected[i].dims()) << i;
    EXPECT_LT(MaxAbsoluteError(out[i], expected[i]), 1e-5) << i;
  }
  EXPECT_EQ(out[1].dtype(), DType::kFloat32);
}

TEST(ReduceLayerNormTest, Axis1WithoutBiasAndBroadcastScale) {
  Tensor x = RandomTensor({2, 3, 4}, -2, 2, 24);
  // Scale [4] broadcasts over the normalized shape [3, 4].
  Tensor scale = RandomTensor({4}, 0.5, 1.5, 25);
  ir::Attributes attrs;
  attrs.set("axis", int64_t{1});
  std::vector<Tensor> out = RunNode("LayerNormalization", {x, scale}, attrs, 1, 17);
  std::vector<Tensor> expected = NaiveLayerNorm(x, 1, scale, nullptr, 1e-5);
  EXPECT_LT(MaxAbsoluteError(out[0], expected[0]), 1e-5);
  // Full-shape scale [3, 4], and an old-opset model.
  Tensor full_scale = RandomTensor({3, 4}, 0.5, 1.5, 26);
  Tensor bias = RandomTensor({3, 4}, -1, 1, 27);
  out = RunNode("LayerNormalization", {x, full_scale, bias}, attrs, 1, 11);
  expected = NaiveLayerNorm(x, 1, full_scale, &bias, 1e-5);
  EXPECT_LT(MaxAbsoluteError(out[0], expected[0]), 1e-5);
}

TEST(ReduceLayerNormTest, Float16Input) {
  Tensor x = RandomTensor({4, 16}, -2, 2, 28);
  Tensor scale = RandomTensor({16}, 0.5, 1.5, 29);
  std::vector<Tensor> out = RunNode(
      "LayerNormalization", {x.CastTo(DType::kFloat16), scale.CastTo(DType::kFloat16)}, {}, 2, 17);
  EXPECT_EQ(out[0].dtype(), DType::kFloat16);
  EXPECT_EQ(out[1].dtype(), DType::kFloat32);
  std::vector<Tensor> expected = NaiveLayerNorm(x, 1, scale, nullptr, 1e-5);
  EXPECT_LT(MaxAbsoluteError(out[0], expected[0]), 2e-2);
}

TEST(ReduceLayerNormTest, BadShapesThrow) {
  Tensor x = RandomTensor({2, 3, 4});
  EXPECT_THROW(RunNode("LayerNormalization", {x, RandomTensor({3})}, {}, 1, 17), Error);
  ir::Attributes attrs;
  attrs.set("axis", int64_t{3});
  EXPECT_THROW(RunNode("LayerNormalization", {x, RandomTensor({4})}, attrs, 1, 17), Error);
  EXPECT_THROW(RunNode("LayerNormalization", {x}, {}, 1, 17), Error);  // Scale is required.
}

// Naive group norm: each (n, g) block normalized, then per-channel affine.
Tensor NaiveGroupNorm(const Tensor& x, int64_t groups, const std::vector<float>& channel_scale,
                      const std::vector<float>& channel_bias, double eps) {
  int64_t n = x.dim(0), c = x.dim(1), spatial = Product(x.dims(), 2);
  int64_t block = c / groups * spatial;
  std::vector<float> y(static_cast<size_t>(x.numel()));
  for (int64_t b = 0; b < n * groups; ++b) {
    double mean = 0, var = 0;
    for (int64_t k = 0; k < block; ++k) mean += x.GetAsDouble(b * block + k) / block;
    for (int64_t k = 0; k < block; ++k) var += std::pow(x.GetAsDouble(b * block + k) - mean, 2);
    var /= block;
    for (int64_t k = 0; k < block; ++k) {
      int64_t i = b * block + k;
      int64_t channel = (i / spatial) % c;
      y[static_cast<size_t>(i)] = static_cast<float>(
          (x.GetAsDouble(i) - mean) / std::sqrt(var + eps) * channel_scale[channel] +
          channel_bias[channel]);
    }
  }
  return Tensor::FromFloats(x.dims(), y);
}

TEST(ReduceGroupNormTest, Opset18PerGroupAndOpset21PerChannel) {
  Tensor x = RandomTensor({2, 4, 3, 2}, -2, 2, 31);
  ir::Attributes attrs;
  attrs.set("num_groups", int64_t{2});
  attrs.set("epsilon", 1e-4f);
  Tensor group_scale = Tensor::FromFloats({2}, {2, 0.5});
  Tensor group_bias = Tensor::FromFloats({2}, {1, -1});
  Tensor y18 = RunNode("GroupNormalization", {x, group_scale, group_bias}, attrs, 1, 18)[0];
  EXPECT_LT(MaxAbsoluteError(y18, NaiveGroupNorm(x, 2, {2, 2, 0.5, 0.5}, {1, 1, -1, -1}, 1e-4)),
            1e-5);

  std::vector<float> scale = {1, 2, 3, 4}, bias = {0.5, 0, -0.5, 1};
  Tensor y21 =
      RunNode("GroupNormalization",
              {x, Tensor::FromFloats({4}, scale), Tensor::FromFloats({4}, bias)}, attrs, 1, 21)[0];
  EXPECT_LT(MaxAbsoluteError(y21, NaiveGroupNorm(x, 2, scale, bias, 1e-4)), 1e-5);

  // Per-group parameters at opset 21 (or per-channel at 18) are rejected.
  EXPECT_THROW(RunNode("GroupNormalization", {x, group_scale, group_bias}, attrs, 1, 21), Error);
  attrs.set("num_groups", int64_t{3});
  EXPECT_THROW(RunNode("GroupNormalization", {x, group_scale, group_bias}, attrs, 1, 18), Error);
}

TEST(ReduceLpNormTest, P1AndP2) {
  Tensor x = Tensor::FromFloats({2, 2}, {3, 4, 0, 0});
  ir::Attributes attrs;
  attrs.set("axis", int64_t{1});
  EXPECT_EQ(RunNode("LpNormalization", {x}, attrs, 1, 11)[0].ToFloatVector(),
            (std::vector<float>{0.6f, 0.8f, 0, 0}));
  attrs.set("p", int64_t{1});
  std::vector<float> y = RunNode("LpNormalization", {x}, attrs, 1, 11)[0].ToFloatVector();
  EXPECT_FLOAT_EQ(y[0], 3.f / 7);
  EXPECT_FLOAT_EQ(y[1], 4.f / 7);
  // Along axis 0 (strided): columns [3,0] and [4,0].
  attrs.set("axis", int64_t{0});
  EXPECT_EQ(RunNode("LpNormalization", {x}, attrs, 1, 11)[0].ToFloatVector(),
            (std::vector<float>{1, 1, 0, 0}));
  attrs.set("p", int64_t{3});
  EXPECT_THROW(RunNode("LpNormalization", {x}, attrs, 1, 11), Error);
}

TEST(ReduceMvnTest, DefaultAxesMatchNaive) {
  Tensor x = RandomTensor({2, 3, 2, 4}, -2, 2, 41);
  Tensor y = RunNode("MeanVarianceNormalization", {x}, {}, 1, 13)[0];
  // Per channel c: statistics over n, h, w.
  std::vector<float> expected(static_cast<size_t>(x.numel()));
  for (int64_t c = 0; c < 3; ++c) {
    std::vector<int64_t> members;
    for (int64_t i = 0; i < x.numel(); ++i)
      if (Unravel(i, x.dims())[1] == c) members.push_back(i);
    double mean = 0, var = 0;
    for (int64_t i : members) mean += x.GetAsDouble(i) / static_cast<double>(members.size());
    for (int64_t i : members)
      var += std::pow(x.GetAsDouble(i) - mean, 2) / static_cast<double>(members.size());
    for (int64_t i : members)
      expected[static_cast<size_t>(i)] =
          static_cast<float>((x.GetAsDouble(i) - mean) / (std::sqrt(var) + 1e-9));
  }
  EXPECT_LT(MaxAbsoluteError(y, Tensor::FromFloats(x.dims(), expected)), 1e-5);
  // Default axes need rank 4.
  EXPECT_THROW(RunNode("MeanVarianceNormalization", {RandomTensor({2, 3})}, {}, 1, 13), Error);
}

// ---- Opsets before 7: same semantics, axes/axis as attributes ----

TEST(ReduceOldOpset, ReductionsAndSoftmaxAtOpset1And6) {
  Tensor x = RandomTensor({2, 3, 4}, 0.5, 2, 21);
  auto sum = [](const std::vector<double>& v) {
    double s = 0;
    for (double e : v) s += e;
    return s;
  };
  for (int opset : {1, 6}) {
    SCOPED_TRACE(::testing::Message() << "opset " << opset);
    EXPECT_LT(MaxAbsoluteError(RunReduce("ReduceSum", x, {2}, 1, opset),
                               NaiveReduce(x, {2}, true, sum)),
              1e-5);
    EXPECT_LT(MaxAbsoluteError(RunReduce("ReduceMean", x, {2}, 0, opset),
                               NaiveReduce(x, {2}, false,
                                           [&](const std::vector<double>& v) {
                                             return sum(v) / static_cast<double>(v.size());
                                           })),
              1e-5);
    EXPECT_LT(MaxAbsoluteError(RunReduce("ReduceLogSum", x, {2, 1}, 0, opset),
                               NaiveReduce(x, {1, 2}, false,
                                           [&](const std::vector<double>& v) {
                                             return std::log(sum(v));
                                           })),
              1e-5);
    for (const char* op : {"Softmax", "LogSoftmax"}) {
      ir::Attributes attrs;
      attrs.set("axis", int64_t{2});
      Tensor y = RunNode(op, {x}, attrs, 1, opset)[0];
      EXPECT_LT(MaxAbsoluteError(
                    y, NaiveSoftmax(x, Coerced2D(x.dims(), 2), std::string(op) == "LogSoftmax")),
                1e-5)
          << op;
    }
  }
  // A bad axis still fails cleanly at the old opsets.
  EXPECT_THROW(RunReduce("ReduceSum", x, {3}, 1, 6), Error);
}

}  // namespace
}  // namespace kiln
