// Tests for the elementwise family: every op against a plain reference loop
// with std:: math, broadcasting, integer paths, half types and error paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "kiln/error.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::RandomTensor;
using testing::RunNode;

template <typename T>
Tensor Make(DType dtype, std::vector<int64_t> dims, const std::vector<T>& values) {
  Tensor t(dtype, std::move(dims));
  EXPECT_EQ(static_cast<int64_t>(values.size()), t.numel());
  EXPECT_EQ(sizeof(T), DTypeSize(dtype));
  std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

Tensor Floats(std::vector<int64_t> dims, const std::vector<float>& v) {
  return Tensor::FromFloats(std::move(dims), v);
}
Tensor Bools(std::vector<int64_t> dims, const std::vector<uint8_t>& v) {
  return Make<uint8_t>(DType::kBool, std::move(dims), v);
}
Tensor Int32s(std::vector<int64_t> dims, const std::vector<int32_t>& v) {
  return Make<int32_t>(DType::kInt32, std::move(dims), v);
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  EXPECT_EQ(sizeof(T), DTypeSize(t.dtype()));
  const T* p = t.data<T>();
  return std::vector<T>(p, p + t.numel());
}

// Flat index into an input of dims `in` read by output element `flat` of a
// numpy broadcast to `out` (the textbook definition, for reference results).
int64_t SourceIndex(int64_t flat, const std::vector<int64_t>& out, const std::vector<int64_t>& in) {
  int64_t index = 0;
  int64_t stride = 1;
  int e = static_cast<int>(in.size()) - 1;
  for (int d = static_cast<int>(out.size()) - 1; d >= 0; --d, --e) {
    int64_t coord = flat % out[static_cast<size_t>(d)];
    flat /= out[static_cast<size_t>(d)];
    if (e < 0) continue;
    if (in[static_cast<size_t>(e)] != 1) index += coord * stride;
    stride *= in[static_cast<size_t>(e)];
  }
  return index;
}

// Reference float binary op with broadcasting.
Tensor ReferenceBinary(const Tensor& a, const Tensor& b, std::vector<int64_t> out_dims,
                       const std::function<float(float, float)>& fn) {
  Tensor out(DType::kFloat32, out_dims);
  for (int64_t i = 0; i < out.numel(); ++i) {
    out.data<float>()[i] = fn(a.data<float>()[SourceIndex(i, out_dims, a.dims())],
                              b.data<float>()[SourceIndex(i, out_dims, b.dims())]);
  }
  return out;
}

void ExpectNear(const Tensor& actual, const Tensor& expected, double tol = 1e-6) {
  ASSERT_EQ(actual.dtype(), expected.dtype());
  ASSERT_EQ(actual.dims(), expected.dims());
  for (int64_t i = 0; i < actual.numel(); ++i) {
    double a = actual.GetAsDouble(i);
    double e = expected.GetAsDouble(i);
    if (std::isnan(e)) {
      EXPECT_TRUE(std::isnan(a)) << "element " << i;
      continue;
    }
    if (std::isinf(e)) {
      EXPECT_EQ(a, e) << "element " << i;
      continue;
    }
    EXPECT_NEAR(a, e, tol * std::max(1.0, std::fabs(e))) << "element " << i;
  }
}

Tensor Run1(const std::string& op, const std::vector<Tensor>& inputs,
            const ir::Attributes& attrs = {}, int opset = 17) {
  return RunNode(op, inputs, attrs, 1, opset).at(0);
}

// ---- Broadcasting ----

TEST(ElementwiseBroadcast, ArithmeticMatchesReferenceForManyShapes) {
  struct Case {
    std::vector<int64_t> a, b, out;
  };
  const std::vector<Case> cases = {
      {{2, 3, 4}, {2, 3, 4}, {2, 3, 4}},
      {{2, 3, 4}, {3, 1}, {2, 3, 4}},
      {{2, 3, 4}, {}, {2, 3, 4}},
      {{}, {2, 3, 4}, {2, 3, 4}},
      {{1, 4, 1, 6}, {3, 1, 5, 6}, {3, 4, 5, 6}},
      {{3, 4, 5}, {5}, {3, 4, 5}},
      {{2, 1, 4}, {1, 3, 1}, {2, 3, 4}},
      {{}, {}, {}},
      {{2, 3, 1, 1}, {1, 3, 4, 5}, {2, 3, 4, 5}},
      {{1}, {7}, {7}},
  };
  const std::vector<std::pair<std::string, std::function<float(float, float)>>> ops = {
      {"Add", [](float x, float y) { return x + y; }},
      {"Sub", [](float x, float y) { return x - y; }},
      {"Mul", [](float x, float y) { return x * y; }},
      {"Div", [](float x, float y) { return x / y; }},
  };
  uint32_t seed = 1;
  for (const Case& c : cases) {
    Tensor a = RandomTensor(c.a, -2, 2, seed++);
    Tensor b = RandomTensor(c.b, 0.5f, 2, seed++);
    for (const auto& [op, fn] : ops) {
      SCOPED_TRACE(op + " " + DimsToString(c.a) + " " + DimsToString(c.b));
      Tensor out = Run1(op, {a, b});
      EXPECT_EQ(out.dims(), c.out);
      ExpectNear(out, ReferenceBinary(a, b, c.out, fn));
    }
  }
}

TEST(ElementwiseBroadcast, EmptyTensors) {
  Tensor a(DType::kFloat32, {0, 3});
  Tensor out = Run1("Add", {a, Floats({3}, {1, 2, 3})});
  EXPECT_EQ(out.dims(), (std::vector<int64_t>{0, 3}));
}

TEST(ElementwiseBroadcast, IncompatibleShapesThrow) {
  EXPECT_THROW(Run1("Add", {RandomTensor({2, 3}), RandomTensor({4})}), Error);
  EXPECT_THROW(Run1("Mul", {RandomTensor({2, 3, 4}), RandomTensor({3, 3})}), Error);
  EXPECT_THROW(Run1("Where", {Bools({2}, {1, 0}), RandomTensor({3}), RandomTensor({3})}), Error);
  EXPECT_THROW(Run1("Sum", {RandomTensor({2}), RandomTensor({2}), RandomTensor({5})}), Error);
}

TEST(ElementwiseBroadcast, MismatchedDtypesThrow) {
  EXPECT_THROW(Run1("Add", {RandomTensor({2}), Int32s({2}, {1, 2})}), Error);
  EXPECT_THROW(Run1("Less", {RandomTensor({2}), Int32s({2}, {1, 2})}), Error);
  EXPECT_THROW(Run1("And", {RandomTensor({2}), RandomTensor({2})}), Error);
  EXPECT_THROW(Run1("Add", {Bools({1}, {1}), Bools({1}, {0})}), Error);
}

TEST(ElementwiseBroadcast, LegacyBroadcastBeforeOpset7) {
  Tensor a = Floats({2, 3}, {1, 2, 3, 4, 5, 6});
  ir::Attributes attrs;
  attrs.set("broadcast", int64_t{1});
  attrs.set("axis", int64_t{0});
  // B [2] aligned at axis 0 of A [2,3]: adds per row (numpy would reject this).
  Tensor out = Run1("Add", {a, Floats({2}, {10, 20})}, attrs, 6);
  EXPECT_EQ(out.ToFloatVector(), (std::vector<float>{11, 12, 13, 24, 25, 26}));
  // Default axis aligns B with A's trailing dims.
  ir::Attributes suffix;
  suffix.set("broadcast", int64_t{1});
  out = Run1("Sub", {a, Floats({3}, {1, 1, 2})}, suffix, 6);
  EXPECT_EQ(out.ToFloatVector(), (std::vector<float>{0, 1, 1, 3, 4, 4}));
  attrs.set("axis", int64_t{1});
  EXPECT_THROW(Run1("Add", {a, Floats({1, 3}, {1, 1, 1})}, attrs, 6), Error);
}

// ---- Integer arithmetic ----

TEST(ElementwiseInteger, ArithmeticWrapsAndTruncates) {
  Tensor a = Int32s({4}, {7, -7, 7, -7});
  Tensor b = Int32s({4}, {2, 2, -2, -2});
  EXPECT_EQ(Values<int32_t>(Run1("Div", {a, b})), (std::vector<int32_t>{3, -3, -3, 3}));
  EXPECT_EQ(Values<int32_t>(Run1("Add", {a, b})), (std::vector<int32_t>{9, -5, 5, -9}));
  EXPECT_EQ(Values<int32_t>(Run1("Mul", {a, b})), (std::vector<int32_t>{14, -14, -14, 14}));
  // uint8 arithmetic wraps modulo 256 like numpy.
  Tensor u = Make<uint8_t>(DType::kUInt8, {3}, {250, 3, 200});
  Tensor v = Make<uint8_t>(DType::kUInt8, {3}, {10, 5, 100});
  EXPECT_EQ(Values<uint8_t>(Run1("Add", {u, v})), (std::vector<uint8_t>{4, 8, 44}));
  EXPECT_EQ(Values<uint8_t>(Run1("Sub", {u, v})), (std::vector<uint8_t>{240, 254, 100}));
  EXPECT_EQ(Values<uint8_t>(Run1("Mul", {u, v})), (std::vector<uint8_t>{196, 15, 32}));
  EXPECT_EQ(Values<uint8_t>(Run1("Div", {u, v})), (std::vector<uint8_t>{25, 0, 2}));
  // int64 with broadcasting, and overflow without UB.
  Tensor big = Tensor::FromInt64s({2}, {std::numeric_limits<int64_t>::max(), -5});
  EXPECT_EQ(Run1("Add", {big, Tensor::FromInt64s({}, {1})}).ToInt64Vector(),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -4}));
  EXPECT_EQ(Run1("Div", {Tensor::FromInt64s({1}, {std::numeric_limits<int64_t>::min()}),
                         Tensor::FromInt64s({1}, {-1})})
                .ToInt64Vector(),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min()}));
}

TEST(ElementwiseInteger, DivisionByZeroThrows) {
  EXPECT_THROW(Run1("Div", {Int32s({2}, {1, 2}), Int32s({2}, {1, 0})}), Error);
  ir::Attributes attrs;
  EXPECT_THROW(Run1("Mod", {Int32s({1}, {1}), Int32s({1}, {0})}, attrs), Error);
}

TEST(ElementwiseInteger, NegAbsSignRelu) {
  Tensor x = Int32s({4}, {-3, 0, 5, std::numeric_limits<int32_t>::min()});
  EXPECT_EQ(Values<int32_t>(Run1("Neg", {x})),
            (std::vector<int32_t>{3, 0, -5, std::numeric_limits<int32_t>::min()}));
  EXPECT_EQ(Values<int32_t>(Run1("Abs", {x})),
            (std::vector<int32_t>{3, 0, 5, std::numeric_limits<int32_t>::min()}));
  EXPECT_EQ(Values<int32_t>(Run1("Sign", {x})), (std::vector<int32_t>{-1, 0, 1, -1}));
  EXPECT_EQ(Values<int32_t>(Run1("Relu", {x})), (std::vector<int32_t>{0, 0, 5, 0}));
}

TEST(ElementwiseInteger, ModPythonAndCStyle) {
  Tensor a = Int32s({6}, {-4, 7, 5, 4, -7, 8});
  Tensor b = Int32s({6}, {2, -3, 8, -2, 3, 5});
  // numpy.mod: result takes the divisor's sign.
  EXPECT_EQ(Values<int32_t>(Run1("Mod", {a, b})), (std::vector<int32_t>{0, -2, 5, 0, 2, 3}));
  ir::Attributes fmod;
  fmod.set("fmod", int64_t{1});
  // numpy.fmod: result takes the dividend's sign.
  EXPECT_EQ(Values<int32_t>(Run1("Mod", {a, b}, fmod)), (std::vector<int32_t>{0, 1, 5, 0, -1, 3}));
  Tensor fa = Floats({4}, {-4.3f, 7.2f, 5.0f, -1.5f});
  Tensor fb = Floats({4}, {2.1f, -3.4f, 8.0f, 0.4f});
  Tensor out = Run1("Mod", {fa, fb}, fmod);
  for (int i = 0; i < 4; ++i)
    EXPECT_FLOAT_EQ(out.data<float>()[i], std::fmod(fa.data<float>()[i], fb.data<float>()[i]));
  // Float Mod without fmod=1 is invalid.
  EXPECT_THROW(Run1("Mod", {fa, fb}), Error);
}

TEST(ElementwiseInteger, BitwiseOps) {
  Tensor a = Make<uint8_t>(DType::kUInt8, {3}, {0xF0, 0x0F, 0xAA});
  Tensor b = Make<uint8_t>(DType::kUInt8, {1}, {0x3C});
  EXPECT_EQ(Values<uint8_t>(Run1("BitwiseAnd", {a, b}, {}, 18)),
            (std::vector<uint8_t>{0x30, 0x0C, 0x28}));
  EXPECT_EQ(Values<uint8_t>(Run1("BitwiseOr", {a, b}, {}, 18)),
            (std::vector<uint8_t>{0xFC, 0x3F, 0xBE}));
  EXPECT_EQ(Values<uint8_t>(Run1("BitwiseXor", {a, b}, {}, 18)),
            (std::vector<uint8_t>{0xCC, 0x33, 0x96}));
  EXPECT_EQ(Values<uint8_t>(Run1("BitwiseNot", {a}, {}, 18)),
            (std::vector<uint8_t>{0x0F, 0xF0, 0x55}));
  EXPECT_EQ(Values<int32_t>(Run1("BitwiseNot", {Int32s({2}, {0, -1})}, {}, 18)),
            (std::vector<int32_t>{-1, 0}));
  EXPECT_THROW(Run1("BitwiseAnd", {RandomTensor({2}), RandomTensor({2})}, {}, 18), Error);
}

// ---- Pow ----

TEST(ElementwisePow, FloatAndMixedTypes) {
  Tensor base = Floats({3}, {1.5f, 2.f, -3.f});
  Tensor out = Run1("Pow", {base, Floats({3}, {2.f, 0.5f, 3.f})});
  ExpectNear(out, Floats({3}, {2.25f, std::sqrt(2.f), -27.f}));
  // Broadcast scalar exponent.
  ExpectNear(Run1("Pow", {base, Floats({}, {2.f})}), Floats({3}, {2.25f, 4.f, 9.f}));
  // Float base, int64 exponent (opset 12+): output keeps the base type.
  out = Run1("Pow", {base, Tensor::FromInt64s({3}, {2, -1, 3})});
  ExpectNear(out, Floats({3}, {2.25f, 0.5f, -27.f}));
  // Int base, float exponent: computed in floating point then truncated.
  Tensor ib = Int32s({3}, {1, 2, 3});
  EXPECT_EQ(Values<int32_t>(Run1("Pow", {ib, Floats({3}, {4.f, 5.f, 0.5f})})),
            (std::vector<int32_t>{1, 32, 1}));
  // Int base, int exponent: exact even beyond double precision.
  Tensor big = Tensor::FromInt64s({3}, {3, 2, -2});
  EXPECT_EQ(Run1("Pow", {big, Tensor::FromInt64s({3}, {39, 62, 3})}).ToInt64Vector(),
            (std::vector<int64_t>{4052555153018976267LL, int64_t{1} << 62, -8}));
  EXPECT_EQ(Run1("Pow", {Tensor::FromInt64s({3}, {2, 1, -1}), Tensor::FromInt64s({1}, {-1})})
                .ToInt64Vector(),
            (std::vector<int64_t>{0, 1, -1}));
}

// ---- Comparisons and logic ----

TEST(ElementwiseCompare, ComparisonsReturnBool) {
  Tensor a = Floats({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Floats({3}, {2, 2, 7});
  struct Op {
    const char* name;
    int opset;
    std::function<bool(float, float)> fn;
  };
  const std::vector<Op> ops = {
      {"Equal", 13, [](float x, float y) { return x == y; }},
      {"Less", 13, [](float x, float y) { return x < y; }},
      {"Greater", 13, [](float x, float y) { return x > y; }},
      {"LessOrEqual", 16, [](float x, float y) { return x <= y; }},
      {"GreaterOrEqual", 16, [](float x, float y) { return x >= y; }},
  };
  for (const Op& op : ops) {
    SCOPED_TRACE(op.name);
    Tensor out = Run1(op.name, {a, b}, {}, op.opset);
    ASSERT_EQ(out.dtype(), DType::kBool);
    ASSERT_EQ(out.dims(), (std::vector<int64_t>{2, 3}));
    for (int64_t i = 0; i < 6; ++i)
      EXPECT_EQ(out.data<uint8_t>()[i], op.fn(a.data<float>()[i], b.data<float>()[i % 3]) ? 1 : 0);
  }
  Tensor eq = Run1("Equal", {Int32s({3}, {1, 5, 7}), Int32s({}, {5})});
  EXPECT_EQ(Values<uint8_t>(eq), (std::vector<uint8_t>{0, 1, 0}));
  Tensor beq = Run1("Equal", {Bools({2}, {1, 0}), Bools({2}, {1, 1})});
  EXPECT_EQ(Values<uint8_t>(beq), (std::vector<uint8_t>{1, 0}));
}

TEST(ElementwiseCompare, LogicalOps) {
  Tensor a = Bools({2, 2}, {0, 0, 1, 1});
  Tensor b = Bools({2}, {0, 1});
  EXPECT_EQ(Values<uint8_t>(Run1("And", {a, b})), (std::vector<uint8_t>{0, 0, 0, 1}));
  EXPECT_EQ(Values<uint8_t>(Run1("Or", {a, b})), (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ(Values<uint8_t>(Run1("Xor", {a, b})), (std::vector<uint8_t>{0, 1, 1, 0}));
  EXPECT_EQ(Values<uint8_t>(Run1("Not", {a})), (std::vector<uint8_t>{1, 1, 0, 0}));
  EXPECT_THROW(Run1("Not", {RandomTensor({2})}), Error);
}

TEST(ElementwiseWhere, BroadcastsAllThreeInputs) {
  Tensor cond = Bools({2, 1}, {1, 0});
  Tensor x = Tensor::FromInt64s({1, 3}, {1, 2, 3});
  Tensor y = Tensor::FromInt64s({}, {-9});
  Tensor out = Run1("Where", {cond, x, y});
  EXPECT_EQ(out.dims(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(out.ToInt64Vector(), (std::vector<int64_t>{1, 2, 3, -9, -9, -9}));
  // Half types are copied bit for bit.
  Tensor xh = Floats({2}, {1.5f, -2.25f}).CastTo(DType::kFloat16);
  Tensor yh = Floats({2}, {7.f, 8.f}).CastTo(DType::kFloat16);
  Tensor oh = Run1("Where", {Bools({2}, {0, 1}), xh, yh});
  EXPECT_EQ(oh.dtype(), DType::kFloat16);
  EXPECT_EQ(oh.ToFloatVector(), (std::vector<float>{7.f, -2.25f}));
  EXPECT_THROW(Run1("Where", {Floats({2}, {1, 0}), xh, yh}), Error);
  EXPECT_THROW(Run1("Where", {Bools({2}, {1, 0}), x, Floats({1}, {1})}), Error);
}

// ---- Unary math and activations ----

struct UnaryCase {
  const char* op;
  int opset;
  ir::Attributes attrs;
  std::function<double(double)> reference;
};

ir::Attributes FloatAttrs(std::initializer_list<std::pair<const char*, float>> values) {
  ir::Attributes attrs;
  for (const auto& [name, value] : values) attrs.set(name, value);
  return attrs;
}

std::vector<UnaryCase> UnaryCases() {
  const double pi = 3.14159265358979323846;
  auto softplus = [](double x) { return std::log1p(std::exp(x)); };
  ir::Attributes gelu_tanh;
  gelu_tanh.set("approximate", std::string("tanh"));
  return {
      {"Relu", 14, {}, [](double x) { return x > 0 ? x : 0; }},
      {"LeakyRelu", 16, FloatAttrs({{"alpha", 0.1f}}),
       [](double x) { return x < 0 ? 0.1f * x : x; }},
      {"LeakyRelu", 6, {}, [](double x) { return x < 0 ? 0.01f * x : x; }},
      {"Sigmoid", 13, {}, [](double x) { return 1 / (1 + std::exp(-x)); }},
      {"HardSigmoid", 6, FloatAttrs({{"alpha", 0.5f}, {"beta", 0.6f}}),
       [](double x) { return std::clamp(0.5f * x + 0.6f, 0.0, 1.0); }},
      {"HardSigmoid", 6, {}, [](double x) { return std::clamp(0.2 * x + 0.5, 0.0, 1.0); }},
      {"HardSwish", 14, {}, [](double x) { return x * std::clamp(x / 6 + 0.5, 0.0, 1.0); }},
      {"Tanh", 13, {}, [](double x) { return std::tanh(x); }},
      {"Elu", 6, FloatAttrs({{"alpha", 2.f}}),
       [](double x) { return x < 0 ? 2 * (std::exp(x) - 1) : x; }},
      {"Selu",
       6,
       {},
       [](double x) {
         return 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * (std::exp(x) - 1));
       }},
      {"Selu", 6, FloatAttrs({{"alpha", 2.f}, {"gamma", 3.f}}),
       [](double x) { return 3 * (x > 0 ? x : 2 * (std::exp(x) - 1)); }},
      {"Celu", 12, FloatAttrs({{"alpha", 2.f}}),
       [](double x) { return std::max(0.0, x) + std::min(0.0, 2 * (std::exp(x / 2) - 1)); }},
      {"ThresholdedRelu", 10, FloatAttrs({{"alpha", 0.5f}}),
       [](double x) { return x > 0.5 ? x : 0; }},
      {"Softplus", 1, {}, softplus},
      {"Softsign", 1, {}, [](double x) { return x / (1 + std::fabs(x)); }},
      {"Mish", 18, {}, [softplus](double x) { return x * std::tanh(softplus(x)); }},
      {"Gelu", 20, {}, [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }},
      {"Gelu", 20, gelu_tanh,
       [pi](double x) {
         return 0.5 * x * (1 + std::tanh(std::sqrt(2 / pi) * (x + 0.044715 * x * x * x)));
       }},
      {"Erf", 13, {}, [](double x) { return std::erf(x); }},
      {"Exp", 13, {}, [](double x) { return std::exp(x); }},
      {"Neg", 13, {}, [](double x) { return -x; }},
      {"Abs", 13, {}, [](double x) { return std::fabs(x); }},
      {"Floor", 13, {}, [](double x) { return std::floor(x); }},
      {"Ceil", 13, {}, [](double x) { return std::ceil(x); }},
      {"Sign", 13, {}, [](double x) { return x > 0   ? 1.0
                                             : x < 0 ? -1.0
                                                     : 0.0; }},
      {"Sin", 7, {}, [](double x) { return std::sin(x); }},
      {"Cos", 7, {}, [](double x) { return std::cos(x); }},
      {"Reciprocal", 13, {}, [](double x) { return 1 / x; }},
  };
}

TEST(ElementwiseUnary, MatchesStdMathFloat32AndFloat64) {
  Tensor x = RandomTensor({3, 4, 5}, -4, 4, 7);
  x.data<float>()[0] = 0.f;
  x.data<float>()[1] = -0.5f;
  for (const UnaryCase& c : UnaryCases()) {
    SCOPED_TRACE(std::string(c.op) + " opset " + std::to_string(c.opset));
    Tensor expected(DType::kFloat32, x.dims());
    for (int64_t i = 0; i < x.numel(); ++i)
      expected.data<float>()[i] = static_cast<float>(c.reference(x.data<float>()[i]));
    ExpectNear(Run1(c.op, {x}, c.attrs, c.opset), expected, 2e-6);
    Tensor x64 = x.CastTo(DType::kFloat64);
    ExpectNear(Run1(c.op, {x64}, c.attrs, c.opset), expected.CastTo(DType::kFloat64), 2e-6);
  }
}

TEST(ElementwiseUnary, PositiveDomainOps) {
  Tensor x = RandomTensor({10}, 0.1f, 9, 3);
  Tensor log = Run1("Log", {x});
  Tensor sqrt = Run1("Sqrt", {x});
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_FLOAT_EQ(log.data<float>()[i], std::log(x.data<float>()[i]));
    EXPECT_FLOAT_EQ(sqrt.data<float>()[i], std::sqrt(x.data<float>()[i]));
  }
  // Out-of-domain inputs give NaN / -inf like numpy, not errors.
  Tensor special = Run1("Log", {Floats({2}, {-1.f, 0.f})});
  EXPECT_TRUE(std::isnan(special.data<float>()[0]));
  EXPECT_EQ(special.data<float>()[1], -INFINITY);
}

TEST(ElementwiseUnary, RoundHalfToEven) {
  Tensor x = Floats({9}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.4f, 2.6f, -2.6f, 0.f});
  EXPECT_EQ(Run1("Round", {x}, {}, 11).ToFloatVector(),
            (std::vector<float>{0, 2, 2, -0.f, -2, 2, 3, -3, 0}));
}

TEST(ElementwiseUnary, LargeInputsStayFinite) {
  Tensor x = Floats({4}, {-100.f, 100.f, -1000.f, 1000.f});
  ExpectNear(Run1("Sigmoid", {x}), Floats({4}, {0.f, 1.f, 0.f, 1.f}));
  ExpectNear(Run1("Softplus", {x}), Floats({4}, {0.f, 100.f, 0.f, 1000.f}));
}

TEST(ElementwiseUnary, IsNaNAndIsInf) {
  Tensor x = Floats({5}, {1.f, NAN, INFINITY, -INFINITY, 0.f});
  EXPECT_EQ(Values<uint8_t>(Run1("IsNaN", {x})), (std::vector<uint8_t>{0, 1, 0, 0, 0}));
  EXPECT_EQ(Values<uint8_t>(Run1("IsInf", {x})), (std::vector<uint8_t>{0, 0, 1, 1, 0}));
  ir::Attributes positive_only;
  positive_only.set("detect_negative", int64_t{0});
  EXPECT_EQ(Values<uint8_t>(Run1("IsInf", {x}, positive_only)),
            (std::vector<uint8_t>{0, 0, 1, 0, 0}));
  ir::Attributes negative_only;
  negative_only.set("detect_positive", int64_t{0});
  EXPECT_EQ(Values<uint8_t>(Run1("IsInf", {x}, negative_only)),
            (std::vector<uint8_t>{0, 0, 0, 1, 0}));
}

TEST(ElementwiseUnary, Float16AndBFloat16) {
  Tensor x = RandomTensor({2, 8}, -3, 3, 11);
  for (DType half : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(DTypeName(half));
    Tensor xh = x.CastTo(half);
    Tensor xr = xh.CastTo(DType::kFloat32);  // The values the kernel actually sees.
    Tensor sig = Run1("Sigmoid", {xh});
    ASSERT_EQ(sig.dtype(), half);
    Tensor relu = Run1("Relu", {xh});
    Tensor sum = Run1("Add", {xh, xh});
    for (int64_t i = 0; i < x.numel(); ++i) {
      float v = xr.data<float>()[i];
      EXPECT_NEAR(sig.GetAsDouble(i), 1 / (1 + std::exp(-v)), 1e-2);
      EXPECT_EQ(relu.GetAsDouble(i), std::max(v, 0.f));
      EXPECT_EQ(sum.GetAsDouble(i), 2 * v);  // Exact: doubling only changes the exponent.
    }
    Tensor less = Run1("Less", {xh, Floats({}, {0.f}).CastTo(half)});
    ASSERT_EQ(less.dtype(), DType::kBool);
    for (int64_t i = 0; i < x.numel(); ++i)
      EXPECT_EQ(less.data<uint8_t>()[i], xr.data<float>()[i] < 0 ? 1 : 0);
  }
}

TEST(ElementwiseUnary, RejectsWrongTypes) {
  EXPECT_THROW(Run1("Sigmoid", {Int32s({1}, {1})}), Error);
  EXPECT_THROW(Run1("Exp", {Bools({1}, {1})}), Error);
  ir::Attributes bad;
  bad.set("approximate", std::string("fast"));
  EXPECT_THROW(Run1("Gelu", {RandomTensor({2})}, bad, 20), Error);
}

// ---- Clip and PRelu ----

TEST(ElementwiseClip, AttributesBeforeOpset11) {
  Tensor x = Floats({5}, {-2.f, -0.5f, 0.f, 0.7f, 3.f});
  ir::Attributes attrs = FloatAttrs({{"min", -0.5f}, {"max", 0.5f}});
  EXPECT_EQ(Run1("Clip", {x}, attrs, 6).ToFloatVector(),
            (std::vector<float>{-0.5f, -0.5f, 0.f, 0.5f, 0.5f}));
  ir::Attributes only_max = FloatAttrs({{"max", 0.f}});
  EXPECT_EQ(Run1("Clip", {x}, only_max, 6).ToFloatVector(),
            (std::vector<float>{-2.f, -0.5f, 0.f, 0.f, 0.f}));
}

TEST(ElementwiseClip, InputsFromOpset11) {
  Tensor x = Floats({5}, {-2.f, -0.5f, 0.f, 0.7f, 3.f});
  EXPECT_EQ(Run1("Clip", {x, Floats({}, {-1.f}), Floats({}, {1.f})}, {}, 13).ToFloatVector(),
            (std::vector<float>{-1.f, -0.5f, 0.f, 0.7f, 1.f}));
  // Only max given (min omitted).
  EXPECT_EQ(Run1("Clip", {x, Tensor(), Floats({}, {0.5f})}, {}, 13).ToFloatVector(),
            (std::vector<float>{-2.f, -0.5f, 0.f, 0.5f, 0.5f}));
  // No bounds: identity, infinities untouched.
  Tensor inf = Floats({2}, {-INFINITY, INFINITY});
  EXPECT_EQ(Run1("Clip", {inf}, {}, 13).ToFloatVector(), inf.ToFloatVector());
  // min > max: everything becomes max.
  EXPECT_EQ(Run1("Clip", {x, Floats({}, {2.f}), Floats({}, {1.f})}, {}, 13).ToFloatVector(),
            (std::vector<float>(5, 1.f)));
  // Integer clip.
  Tensor i8 = Make<int8_t>(DType::kInt8, {4}, {-128, -5, 5, 127});
  Tensor out =
      Run1("Clip", {i8, Make<int8_t>(DType::kInt8, {}, {-6}), Make<int8_t>(DType::kInt8, {}, {6})},
           {}, 13);
  EXPECT_EQ(Values<int8_t>(out), (std::vector<int8_t>{-6, -5, 5, 6}));
  // Float16.
  Tensor h =
      Run1("Clip", {x.CastTo(DType::kFloat16), Floats({}, {0.f}).CastTo(DType::kFloat16)}, {}, 13);
  EXPECT_EQ(h.dtype(), DType::kFloat16);
  EXPECT_EQ(h.ToFloatVector(),
            (std::vector<float>{0.f, 0.f, 0.f, x.CastTo(DType::kFloat16).ToFloatVector()[3], 3.f}));
  // Bounds must be scalars of X's type.
  EXPECT_THROW(Run1("Clip", {x, Floats({2}, {0.f, 1.f})}, {}, 13), Error);
  EXPECT_THROW(Run1("Clip", {x, Int32s({}, {0})}, {}, 13), Error);
}

TEST(ElementwisePRelu, UnidirectionalBroadcast) {
  Tensor x = RandomTensor({3, 4, 5}, -2, 2, 5);
  Tensor slope = RandomTensor({5}, 0, 1, 6);
  Tensor out = Run1("PRelu", {x, slope}, {}, 16);
  ExpectNear(out, ReferenceBinary(x, slope, {3, 4, 5},
                                  [](float v, float s) { return v < 0 ? s * v : v; }));
  // Slope with more elements than X along a dim cannot broadcast to X.
  EXPECT_THROW(Run1("PRelu", {RandomTensor({3, 1}), RandomTensor({3, 4})}, {}, 16), Error);
  EXPECT_THROW(Run1("PRelu", {x, RandomTensor({4})}, {}, 16), Error);
}

TEST(ElementwisePRelu, PerChannelBeforeOpset7) {
  Tensor x = RandomTensor({2, 3, 4}, -2, 2, 8);
  Tensor slope = Floats({3}, {0.1f, 0.2f, 0.3f});
  Tensor out = Run1("PRelu", {x, slope}, {}, 6);
  ExpectNear(out, ReferenceBinary(x, Floats({3, 1}, {0.1f, 0.2f, 0.3f}), {2, 3, 4},
                                  [](float v, float s) { return v < 0 ? s * v : v; }));
}

// ---- Variadic ----

TEST(ElementwiseVariadic, SumMaxMinMeanBroadcast) {
  Tensor a = RandomTensor({2, 3}, -1, 1, 21);
  Tensor b = RandomTensor({3}, -1, 1, 22);
  Tensor c = RandomTensor({2, 1}, -1, 1, 23);
  std::vector<int64_t> dims = {2, 3};
  auto reference = [&](const std::function<float(float, float, float)>& fn) {
    Tensor out(DType::kFloat32, dims);
    for (int64_t i = 0; i < 6; ++i)
      out.data<float>()[i] = fn(a.data<float>()[SourceIndex(i, dims, a.dims())],
                                b.data<float>()[SourceIndex(i, dims, b.dims())],
                                c.data<float>()[SourceIndex(i, dims, c.dims())]);
    return out;
  };
  ExpectNear(Run1("Sum", {a, b, c}),
             reference([](float x, float y, float z) { return x + y + z; }));
  ExpectNear(Run1("Mean", {a, b, c}),
             reference([](float x, float y, float z) { return (x + y + z) / 3; }));
  ExpectNear(Run1("Max", {b, c, a}), reference([](float x, float y, float z) {
               return std::max({x, y, z});
             }));
  ExpectNear(Run1("Min", {c, a, b}), reference([](float x, float y, float z) {
               return std::min({x, y, z});
             }));
  // One input: a copy.
  ExpectNear(Run1("Max", {a}), a);
  // Integers.
  Tensor i1 = Make<uint16_t>(DType::kUInt16, {3}, {1, 60000, 7});
  Tensor i2 = Make<uint16_t>(DType::kUInt16, {3}, {9, 2, 7});
  EXPECT_EQ(Values<uint16_t>(Run1("Max", {i1, i2})), (std::vector<uint16_t>{9, 60000, 7}));
  EXPECT_EQ(Values<uint16_t>(Run1("Min", {i1, i2})), (std::vector<uint16_t>{1, 2, 7}));
  EXPECT_EQ(Values<uint16_t>(Run1("Sum", {i1, i2})), (std::vector<uint16_t>{10, 60002, 14}));
  // NaN propagates through Max/Min.
  Tensor nan = Run1("Max", {Floats({2}, {NAN, 1.f}), Floats({2}, {0.f, NAN})});
  EXPECT_TRUE(std::isnan(nan.data<float>()[0]));
  EXPECT_TRUE(std::isnan(nan.data<float>()[1]));
  EXPECT_THROW(Run1("Mean", {Int32s({1}, {1}), Int32s({1}, {2})}), Error);
}

// ---- Cast ----

TEST(ElementwiseCast, NumericConversions) {
  auto cast = [](const Tensor& x, DType to) {
    ir::Attributes attrs;
    attrs.set("to", static_cast<int64_t>(to));
    return Run1("Cast", {x}, attrs, 13);
  };
  Tensor f = Floats({6}, {-1.7f, 2.9f, 0.f, 300.f, -0.2f, 65504.f});
  EXPECT_EQ(Values<int32_t>(cast(f, DType::kInt32)),
            (std::vector<int32_t>{-1, 2, 0, 300, 0, 65504}));
  // Narrowing to int8 wraps after truncation like C on x86.
  EXPECT_EQ(Values<int8_t>(cast(f, DType::kInt8)), (std::vector<int8_t>{-1, 2, 0, 44, 0, -32}));
  EXPECT_EQ(Values<uint8_t>(cast(f, DType::kBool)), (std::vector<uint8_t>{1, 1, 0, 1, 1, 1}));
  Tensor h = cast(f, DType::kFloat16);
  EXPECT_EQ(h.dtype(), DType::kFloat16);
  EXPECT_EQ(h.data<uint16_t>()[5], 0x7bff);  // 65504 is float16's max.
  ExpectNear(cast(h, DType::kFloat32), f, 1e-3);
  Tensor bf = cast(f, DType::kBFloat16);
  EXPECT_EQ(bf.data<uint16_t>()[0], FloatToBFloat16(-1.7f));
  EXPECT_EQ(cast(bf, DType::kFloat64).dtype(), DType::kFloat64);
  // Specials.
  Tensor special = Floats({3}, {NAN, INFINITY, -INFINITY});
  EXPECT_EQ(Values<uint8_t>(cast(special, DType::kBool)), (std::vector<uint8_t>{1, 1, 1}));
  Tensor sh = cast(special, DType::kFloat16);
  EXPECT_TRUE(std::isnan(sh.GetAsDouble(0)));
  EXPECT_EQ(sh.GetAsDouble(1), INFINITY);
  EXPECT_EQ(cast(special, DType::kInt32).dims(), (std::vector<int64_t>{3}));  // No UB, no crash.
  // Integers and bools.
  Tensor big = Tensor::FromInt64s({3}, {-1, 256, std::numeric_limits<int64_t>::max()});
  EXPECT_EQ(Values<uint8_t>(cast(big, DType::kUInt8)), (std::vector<uint8_t>{255, 0, 255}));
  EXPECT_EQ(Values<uint64_t>(cast(big, DType::kUInt64)),
            (std::vector<uint64_t>{std::numeric_limits<uint64_t>::max(), 256,
                                   uint64_t{std::numeric_limits<int64_t>::max()}}));
  EXPECT_EQ(cast(big, DType::kInt64).ToInt64Vector(), big.ToInt64Vector());
  EXPECT_EQ(cast(Bools({3}, {1, 0, 1}), DType::kFloat32).ToFloatVector(),
            (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(cast(Tensor::FromInt64s({2}, {0, -3}), DType::kBool).ToInt64Vector(),
            (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(cast(Floats({2}, {1e10f, -1e10f}), DType::kInt64).ToInt64Vector(),
            (std::vector<int64_t>{10000000000LL, -10000000000LL}));
}

TEST(ElementwiseCast, StringAndUnknownTypesRejected) {
  ir::Attributes to_string;
  to_string.set("to", int64_t{8});
  EXPECT_THROW(Run1("Cast", {RandomTensor({2})}, to_string, 13), Error);
  ir::Attributes to_float8;
  to_float8.set("to", int64_t{17});
  EXPECT_THROW(Run1("Cast", {RandomTensor({2})}, to_float8, 19), Error);
}

TEST(ElementwiseCast, CastLikeTakesTheSecondInputsType) {
  Tensor x = Floats({3}, {1.5f, -2.5f, 3.f});
  Tensor out = Run1("CastLike", {x, Tensor::FromInt64s({1}, {0})}, {}, 15);
  EXPECT_EQ(out.dtype(), DType::kInt64);
  EXPECT_EQ(out.ToInt64Vector(), (std::vector<int64_t>{1, -2, 3}));
  Tensor h = Run1("CastLike", {x, Floats({1}, {0}).CastTo(DType::kFloat16)}, {}, 15);
  EXPECT_EQ(h.dtype(), DType::kFloat16);
  EXPECT_EQ(h.ToFloatVector(), x.ToFloatVector());
}

// ---- Quantization ----

TEST(ElementwiseQuantize, PerTensorRoundsHalfToEvenAndSaturates) {
  Tensor x = Floats({7}, {0.f, 2.f, 3.f, 1000.f, -254.f, 5.f, -1.f});
  Tensor scale = Floats({}, {2.f});
  Tensor zp = Make<uint8_t>(DType::kUInt8, {}, {128});
  // x/scale = 0, 1, 1.5, 500, -127, 2.5, -0.5 -> rint -> +128 -> saturate.
  Tensor q = Run1("QuantizeLinear", {x, scale, zp}, {}, 13);
  ASSERT_EQ(q.dtype(), DType::kUInt8);
  EXPECT_EQ(Values<uint8_t>(q), (std::vector<uint8_t>{128, 129, 130, 255, 1, 130, 128}));
  // Without zero point: uint8 with zero point 0.
  Tensor q0 = Run1("QuantizeLinear", {x, scale}, {}, 13);
  EXPECT_EQ(Values<uint8_t>(q0), (std::vector<uint8_t>{0, 1, 2, 255, 0, 2, 0}));
  // int8.
  Tensor qi = Run1("QuantizeLinear", {x, scale, Make<int8_t>(DType::kInt8, {}, {-1})}, {}, 13);
  EXPECT_EQ(Values<int8_t>(qi), (std::vector<int8_t>{-1, 0, 1, 127, -128, 1, -1}));
  // Dequantize back.
  Tensor d = Run1("DequantizeLinear", {q, scale, zp}, {}, 13);
  EXPECT_EQ(d.ToFloatVector(), (std::vector<float>{0, 2, 4, 254, -254, 4, 0}));
}

TEST(ElementwiseQuantize, PerAxis) {
  Tensor x = RandomTensor({2, 3, 4}, -10, 10, 31);
  Tensor scale = Floats({3}, {0.5f, 0.1f, 0.25f});
  Tensor zp = Make<int8_t>(DType::kInt8, {3}, {0, 5, -3});
  Tensor q = Run1("QuantizeLinear", {x, scale, zp}, {}, 13);
  ASSERT_EQ(q.dtype(), DType::kInt8);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t c = (i / 4) % 3;
    float expect =
        std::nearbyint(x.data<float>()[i] / scale.data<float>()[c]) + zp.data<int8_t>()[c];
    expect = std::clamp(expect, -128.f, 127.f);
    EXPECT_EQ(q.data<int8_t>()[i], static_cast<int8_t>(expect)) << i;
  }
  Tensor d = Run1("DequantizeLinear", {q, scale, zp}, {}, 13);
  for (int64_t i = 0; i < x.numel(); ++i) {
    int64_t c = (i / 4) % 3;
    EXPECT_FLOAT_EQ(d.data<float>()[i],
                    (q.data<int8_t>()[i] - zp.data<int8_t>()[c]) * scale.data<float>()[c]);
  }
  // axis=-1 with 4 scales.
  ir::Attributes last;
  last.set("axis", int64_t{-1});
  Tensor s4 = Floats({4}, {1.f, 2.f, 4.f, 8.f});
  Tensor d4 = Run1("DequantizeLinear",
                   {Make<uint8_t>(DType::kUInt8, {2, 4}, {1, 1, 1, 1, 2, 2, 2, 2}), s4}, last, 13);
  EXPECT_EQ(d4.ToFloatVector(), (std::vector<float>{1, 2, 4, 8, 2, 4, 8, 16}));
  // int32 dequantization (no zero point).
  Tensor d32 = Run1("DequantizeLinear", {Int32s({2}, {-1000, 7}), Floats({}, {0.5f})}, {}, 13);
  EXPECT_EQ(d32.ToFloatVector(), (std::vector<float>{-500.f, 3.5f}));
}

TEST(ElementwiseQuantize, Errors) {
  Tensor x = RandomTensor({2, 3, 4});
  // Per-axis scale that does not match X along the axis.
  EXPECT_THROW(Run1("QuantizeLinear", {x, Floats({4}, {1, 1, 1, 1})}, {}, 13), Error);
  // Bad axis.
  ir::Attributes bad_axis;
  bad_axis.set("axis", int64_t{3});
  EXPECT_THROW(Run1("QuantizeLinear", {x, Floats({3}, {1, 1, 1})}, bad_axis, 13), Error);
  // Blocked quantization is not implemented.
  ir::Attributes blocked;
  blocked.set("block_size", int64_t{2});
  EXPECT_THROW(Run1("QuantizeLinear", {x, Floats({}, {1})}, blocked, 21), Error);
  // Zero point and scale disagree.
  EXPECT_THROW(Run1("DequantizeLinear",
                    {Make<uint8_t>(DType::kUInt8, {2, 3}, {1, 2, 3, 4, 5, 6}),
                     Floats({3}, {1, 1, 1}), Make<uint8_t>(DType::kUInt8, {}, {0})},
                    {}, 13),
               Error);
  // Float zero point / unsupported output type.
  EXPECT_THROW(Run1("QuantizeLinear", {x, Floats({}, {1}), Floats({}, {0})}, {}, 13), Error);
  // Opset 10 has no per-axis scales.
  EXPECT_THROW(Run1("QuantizeLinear", {x, Floats({3}, {1, 1, 1})}, {}, 10), Error);
}

}  // namespace
}  // namespace kiln
