// GPU elementwise layers against the CPU reference backend (row-major and
// hand-built NHWC cases), and the FuseElementwise pass: CPU-side structure
// checks plus the fused KilnElementwise node on the GPU against the unfused
// graph on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "builder/fuse_elementwise.h"
#include "cpu/executor.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "gpu_test_util.h"
#include "ops/registry.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::ExpectGpuMatchesCpu;
using testing::GpuNodeOptions;
using testing::RandomTensor;

constexpr double kHalfRtol = 1e-2;
constexpr double kHalfAtol = 1e-3;

ir::Attributes MakeAttrs(std::vector<std::pair<std::string, ir::AttrValue>> values) {
  ir::Attributes attrs;
  for (auto& [name, value] : values) attrs.set(name, std::move(value));
  return attrs;
}

GpuNodeOptions Opset(int opset, std::vector<bool> constant_inputs = {}) {
  GpuNodeOptions options;
  options.opset = opset;
  options.constant_inputs = std::move(constant_inputs);
  return options;
}

Tensor Half(const Tensor& t) { return t.CastTo(DType::kFloat16); }
Tensor BF16(const Tensor& t) { return t.CastTo(DType::kBFloat16); }

// Integers drawn uniformly from [lo, hi] (avoiding `skip` when asked).
Tensor RandomInts(DType dtype, std::vector<int64_t> dims, int lo, int hi, uint32_t seed,
                  bool skip_zero = false) {
  Tensor f = RandomTensor(std::move(dims), static_cast<float>(lo), static_cast<float>(hi) + 1.f,
                          seed);
  for (int64_t i = 0; i < f.numel(); ++i) {
    float v = std::floor(f.data<float>()[i]);
    if (v > static_cast<float>(hi)) v = static_cast<float>(hi);
    if (skip_zero && v == 0.f) v = 1.f;
    f.data<float>()[i] = v;
  }
  return f.CastTo(dtype);
}

Tensor RandomBools(std::vector<int64_t> dims, uint32_t seed) {
  return RandomInts(DType::kBool, std::move(dims), 0, 1, seed);
}

// Runs a float op on float32, float16 and (optionally) bfloat16.
void ExpectFloatOp(const std::string& op, const std::vector<Tensor>& inputs,
                   const ir::Attributes& attrs = {}, int opset = 17, bool bf16 = false,
                   std::vector<bool> constant = {}) {
  SCOPED_TRACE(op);
  ExpectGpuMatchesCpu(op, inputs, attrs, Opset(opset, constant));
  std::vector<Tensor> half, bhalf;
  for (const Tensor& t : inputs) {
    const bool is_float = t.defined() && t.dtype() == DType::kFloat32;
    half.push_back(is_float ? Half(t) : t);
    bhalf.push_back(is_float ? BF16(t) : t);
  }
  ExpectGpuMatchesCpu(op, half, attrs, Opset(opset, constant), kHalfRtol, kHalfAtol);
  if (bf16) ExpectGpuMatchesCpu(op, bhalf, attrs, Opset(opset, constant), 2e-2, 1e-2);
}

// ---- Unary ----

TEST(GpuElementwiseTest, UnaryFloatOps) {
  KILN_REQUIRE_GPU();
  const Tensor x = RandomTensor({3, 7, 11}, -3.f, 3.f, 1);
  const Tensor positive = RandomTensor({3, 7, 11}, 0.05f, 4.f, 2);
  for (const char* op : {"Sigmoid", "Tanh", "Exp", "Floor", "Ceil", "Round", "Erf", "Sin", "Cos",
                         "Softplus", "Softsign", "Mish", "HardSwish", "Relu", "Neg", "Abs",
                         "Sign", "Reciprocal", "Elu", "Selu", "Celu", "LeakyRelu", "HardSigmoid",
                         "ThresholdedRelu", "Gelu"})
    ExpectFloatOp(op, {x}, {}, 18);
  for (const char* op : {"Log", "Sqrt"}) ExpectFloatOp(op, {positive});
  // Round's ties go to even.
  ExpectGpuMatchesCpu("Round", {Tensor::FromFloats({6}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 2.4f})},
                      {});
}

TEST(GpuElementwiseTest, UnaryFloat64) {
  KILN_REQUIRE_GPU();
  const Tensor x = RandomTensor({5, 9}, -3.f, 3.f, 3).CastTo(DType::kFloat64);
  for (const char* op : {"Sigmoid", "Tanh", "Exp", "Erf", "Relu", "Neg", "Abs", "Gelu", "Mish"})
    ExpectGpuMatchesCpu(op, {x}, {}, Opset(18));
}

TEST(GpuElementwiseTest, UnaryAttributes) {
  KILN_REQUIRE_GPU();
  const Tensor x = RandomTensor({2, 3, 5}, -3.f, 3.f, 4);
  ExpectFloatOp("LeakyRelu", {x}, MakeAttrs({{"alpha", 0.3f}}));
  ExpectFloatOp("Elu", {x}, MakeAttrs({{"alpha", 0.7f}}));
  ExpectFloatOp("Celu", {x}, MakeAttrs({{"alpha", 2.5f}}));
  ExpectFloatOp("Selu", {x}, MakeAttrs({{"alpha", 1.5f}, {"gamma", 2.f}}));
  ExpectFloatOp("HardSigmoid", {x}, MakeAttrs({{"alpha", 0.3f}, {"beta", 0.4f}}));
  ExpectFloatOp("ThresholdedRelu", {x}, MakeAttrs({{"alpha", 0.5f}}));
  ExpectFloatOp("Gelu", {x}, MakeAttrs({{"approximate", std::string("tanh")}}), 20, true);
  ExpectFloatOp("Gelu", {x}, MakeAttrs({{"approximate", std::string("none")}}), 20, true);
}

TEST(GpuElementwiseTest, OddSizes) {
  KILN_REQUIRE_GPU();
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
    SCOPED_TRACE(n);
    const Tensor x = RandomTensor({n}, -4.f, 4.f, 5);
    const Tensor y = RandomTensor({n}, -4.f, 4.f, 6);
    ExpectFloatOp("Relu", {x}, {}, 17, true);
    ExpectFloatOp("Sigmoid", {x}, {}, 17, true);
    ExpectFloatOp("Add", {x, y}, {}, 17, true);
    ExpectFloatOp("Mul", {x, y});
    ExpectGpuMatchesCpu("Add", {x.CastTo(DType::kInt64), y.CastTo(DType::kInt64)}, {});
  }
}

TEST(GpuElementwiseTest, NaNAndInfinity) {
  KILN_REQUIRE_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::FromFloats({8}, {nan, inf, -inf, 0.f, -0.f, 1.f, -2.5f, 1e30f});
  ExpectGpuMatchesCpu("IsNaN", {x}, {});
  ExpectGpuMatchesCpu("IsNaN", {Half(x)}, {});
  for (int pos : {0, 1})
    for (int neg : {0, 1})
      ExpectGpuMatchesCpu("IsInf", {x},
                          MakeAttrs({{"detect_positive", int64_t{pos}},
                                     {"detect_negative", int64_t{neg}}}));
  const Tensor y = Tensor::FromFloats({8}, {1.f, nan, 2.f, 0.f, nan, 3.f, -1.f, -1e30f});
  ExpectGpuMatchesCpu("Max", {x, y}, {});
  ExpectGpuMatchesCpu("Min", {x, y}, {});
  ExpectGpuMatchesCpu("Celu", {x}, {});
  ExpectGpuMatchesCpu("Sign", {x}, {});
}

TEST(GpuElementwiseTest, IntegerUnary) {
  KILN_REQUIRE_GPU();
  for (DType d : {DType::kInt8, DType::kInt32, DType::kInt64}) {
    SCOPED_TRACE(DTypeName(d));
    const Tensor x = RandomInts(d, {4, 9}, -100, 100, 7);
    for (const char* op : {"Relu", "Neg", "Abs", "Sign", "BitwiseNot"})
      ExpectGpuMatchesCpu(op, {x}, {}, Opset(18));
  }
  // Wrapping: -(-128) is -128 in int8.
  ExpectGpuMatchesCpu("Neg", {Tensor::FromFloats({3}, {-128.f, 127.f, 0.f}).CastTo(DType::kInt8)},
                      {});
  ExpectGpuMatchesCpu("Abs", {Tensor::FromFloats({3}, {-128.f, 127.f, -5.f}).CastTo(DType::kInt8)},
                      {});
  const Tensor u = RandomInts(DType::kUInt8, {17}, 0, 255, 8);
  ExpectGpuMatchesCpu("Abs", {u}, {});
  ExpectGpuMatchesCpu("Sign", {u}, {});
  ExpectGpuMatchesCpu("BitwiseNot", {u}, {}, Opset(18));
  ExpectGpuMatchesCpu("Not", {RandomBools({33}, 9)}, {});
}

TEST(GpuElementwiseTest, Clip) {
  KILN_REQUIRE_GPU();
  const Tensor x = RandomTensor({4, 5, 6}, -3.f, 3.f, 10);
  // Clip-6: attributes.
  ExpectFloatOp("Clip", {x}, MakeAttrs({{"min", -1.f}, {"max", 0.5f}}), 6);
  ExpectFloatOp("Clip", {x}, MakeAttrs({{"max", 0.5f}}), 6);
  // Clip-13: optional scalar inputs, constant or not; min > max gives max.
  const Tensor lo = Tensor::Scalar(-1.f), hi = Tensor::Scalar(0.75f);
  ExpectFloatOp("Clip", {x, lo, hi}, {}, 13, true, {false, true, true});
  ExpectFloatOp("Clip", {x, lo, hi}, {}, 13, false, {false, false, false});
  ExpectFloatOp("Clip", {x, lo, Tensor()}, {}, 13);
  ExpectFloatOp("Clip", {x, Tensor(), hi}, {}, 13);
  ExpectFloatOp("Clip", {x}, {}, 13);
  ExpectFloatOp("Clip", {x, Tensor::Scalar(1.f), Tensor::Scalar(-1.f)}, {}, 13);
  ExpectFloatOp("Clip", {x, Tensor::FromFloats({1}, {0.f}), Tensor()}, {}, 13);
  const Tensor xi = RandomInts(DType::kInt32, {50}, -20, 20, 11);
  ExpectGpuMatchesCpu("Clip",
                      {xi, Tensor::Scalar(-5.f).CastTo(DType::kInt32),
                       Tensor::Scalar(7.f).CastTo(DType::kInt32)},
                      {}, Opset(13, {false, true, true}));
}

// ---- Binary and variadic ----

TEST(GpuElementwiseTest, BinaryBroadcasting) {
  KILN_REQUIRE_GPU();
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> shapes = {
      {{2, 3, 4, 5}, {2, 3, 4, 5}}, {{2, 3, 4, 5}, {3, 1, 5}}, {{2, 3, 4, 5}, {}},
      {{}, {2, 3, 4, 5}},           {{7, 1}, {1, 5}},          {{2, 1, 4, 1}, {3, 1, 6}},
      {{1, 3, 1, 1}, {2, 3, 4, 5}}, {{1}, {1}},                {{6, 1, 1, 1, 1, 1, 1, 2}, {3, 1, 1, 1, 1, 1, 1}},
      {{0, 3}, {1, 3}}};
  uint32_t seed = 20;
  for (const auto& [a_dims, b_dims] : shapes) {
    SCOPED_TRACE(DimsToString(a_dims) + " op " + DimsToString(b_dims));
    const Tensor a = RandomTensor(a_dims, -3.f, 3.f, ++seed);
    const Tensor b = RandomTensor(b_dims, 0.5f, 3.f, ++seed);
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"})
      ExpectFloatOp(op, {op == std::string("Pow") ? RandomTensor(a_dims, 0.1f, 3.f, seed) : a, b});
    for (const char* op : {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"})
      ExpectGpuMatchesCpu(op, {a, b}, {});
    ExpectGpuMatchesCpu("Mod", {a, b}, MakeAttrs({{"fmod", int64_t{1}}}));
  }
}

TEST(GpuElementwiseTest, IntegerBinary) {
  KILN_REQUIRE_GPU();
  for (DType d : {DType::kInt8, DType::kUInt8, DType::kInt16, DType::kInt32, DType::kUInt32,
                  DType::kInt64, DType::kUInt64}) {
    SCOPED_TRACE(DTypeName(d));
    const bool is_signed = d == DType::kInt8 || d == DType::kInt16 || d == DType::kInt32 ||
                           d == DType::kInt64;
    const int lo = is_signed ? -100 : 0;
    const Tensor a = RandomInts(d, {3, 4, 5}, lo, 100, 30);
    const Tensor b = RandomInts(d, {4, 1}, lo, 100, 31, /*skip_zero=*/true);
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less", "Greater",
                           "BitwiseAnd", "BitwiseOr", "BitwiseXor"})
      ExpectGpuMatchesCpu(op, {a, b}, {}, Opset(18));
    ExpectGpuMatchesCpu("Mod", {a, b}, MakeAttrs({{"fmod", int64_t{0}}}));
    ExpectGpuMatchesCpu("Mod", {a, b}, MakeAttrs({{"fmod", int64_t{1}}}));
    const Tensor e = RandomInts(d, {4, 1}, 0, 5, 32);
    ExpectGpuMatchesCpu("Pow", {a, e}, {});
  }
  // Overflowing division and negative exponents.
  const Tensor a8 = Tensor::FromFloats({4}, {-128.f, 7.f, -7.f, 100.f}).CastTo(DType::kInt8);
  const Tensor b8 = Tensor::FromFloats({4}, {-1.f, -2.f, 2.f, 3.f}).CastTo(DType::kInt8);
  ExpectGpuMatchesCpu("Div", {a8, b8}, {});
  ExpectGpuMatchesCpu("Mod", {a8, b8}, {});
  const Tensor base = Tensor::FromFloats({5}, {1.f, -1.f, -1.f, 2.f, 3.f}).CastTo(DType::kInt32);
  const Tensor exp = Tensor::FromFloats({5}, {-3.f, -3.f, -2.f, -1.f, 21.f}).CastTo(DType::kInt32);
  ExpectGpuMatchesCpu("Pow", {base, exp}, {});
}

TEST(GpuElementwiseTest, PowMixedTypes) {
  KILN_REQUIRE_GPU();
  const Tensor x = RandomTensor({3, 8}, 0.2f, 3.f, 40);
  ExpectFloatOp("Pow", {x, RandomInts(DType::kInt64, {8}, -3, 3, 41)}, {}, 15);
  ExpectFloatOp("Pow", {x, Tensor::Scalar(2.f)}, {}, 15);
  ExpectFloatOp("Pow", {x, Tensor::Scalar(0.5f).CastTo(DType::kFloat64)}, {}, 15);
  const Tensor xi = RandomInts(DType::kInt32, {3, 8}, -6, 6, 42);
  ExpectGpuMatchesCpu("Pow", {xi, RandomTensor({8}, 0.f, 3.f, 43)}, {}, Opset(15));
  ExpectGpuMatchesCpu("Pow", {xi, RandomInts(DType::kInt64, {8}, 0, 6, 44)}, {}, Opset(15));
}

TEST(GpuElementwiseTest, BoolLogic) {
  KILN_REQUIRE_GPU();
  const Tensor a = RandomBools({3, 1, 5}, 50), b = RandomBools({4, 1}, 51);
  for (const char* op : {"And", "Or", "Xor", "Equal"}) ExpectGpuMatchesCpu(op, {a, b}, {});
}

TEST(GpuElementwiseTest, LegacyBroadcastAndPRelu) {
  KILN_REQUIRE_GPU();
  const Tensor a = RandomTensor({2, 3, 4, 5}, -2.f, 2.f, 60);
  const Tensor b = RandomTensor({3, 4}, 0.5f, 2.f, 61);
  ExpectFloatOp("Add", {a, b}, MakeAttrs({{"broadcast", int64_t{1}}, {"axis", int64_t{1}}}), 6);
  ExpectFloatOp("Div", {a, RandomTensor({5}, 0.5f, 2.f, 62)},
                MakeAttrs({{"broadcast", int64_t{1}}}), 6);
  ExpectFloatOp("PRelu", {a, RandomTensor({3}, 0.f, 1.f, 63)}, {}, 6);
  ExpectFloatOp("PRelu", {a, RandomTensor({3, 1, 1}, 0.f, 1.f, 64)}, {}, 16);
  ExpectFloatOp("PRelu", {a, RandomTensor({5}, 0.f, 1.f, 65)}, {}, 16);
  ExpectFloatOp("PRelu", {a, Tensor::Scalar(0.25f)}, {}, 16);
  ExpectGpuMatchesCpu("PRelu", {RandomInts(DType::kInt32, {6, 3}, -9, 9, 66),
                                RandomInts(DType::kInt32, {3}, -3, 3, 67)},
                      {}, Opset(16));
}

TEST(GpuElementwiseTest, Variadic) {
  KILN_REQUIRE_GPU();
  for (int n : {1, 2, 3, 8, 10, 17}) {
    SCOPED_TRACE(n);
    std::vector<Tensor> xs;
    for (int i = 0; i < n; ++i) {
      std::vector<int64_t> dims = (i % 3 == 0) ? std::vector<int64_t>{2, 3, 5}
                                  : (i % 3 == 1) ? std::vector<int64_t>{3, 1}
                                                 : std::vector<int64_t>{5};
      xs.push_back(RandomTensor(dims, -2.f, 2.f, static_cast<uint32_t>(70 + i)));
    }
    for (const char* op : {"Sum", "Max", "Min", "Mean"}) ExpectFloatOp(op, xs);
    std::vector<Tensor> ints;
    for (const Tensor& t : xs) ints.push_back(t.CastTo(DType::kInt32));
    for (const char* op : {"Sum", "Max", "Min"}) ExpectGpuMatchesCpu(op, ints, {});
  }
}

TEST(GpuElementwiseTest, Where) {
  KILN_REQUIRE_GPU();
  const Tensor c = RandomBools({2, 1, 5}, 80);
  const Tensor x = RandomTensor({3, 5}, -2.f, 2.f, 81);
  const Tensor y = RandomTensor({2, 3, 1}, -2.f, 2.f, 82);
  ExpectFloatOp("Where", {c, x, y}, {}, 17, true);
  for (DType d : {DType::kInt64, DType::kInt8, DType::kBool, DType::kUInt64, DType::kFloat64})
    ExpectGpuMatchesCpu("Where", {c, x.CastTo(d), y.CastTo(d)}, {});
}

TEST(GpuElementwiseTest, Cast) {
  KILN_REQUIRE_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor special = Tensor::FromFloats(
      {14}, {nan, inf, -inf, 1e20f, -1e20f, 3.7f, -3.7f, 300.f, -300.f, 0.5f, 70000.f, -0.f, 1.f,
             4294967296.f});
  const Tensor random = RandomTensor({5, 7}, -200.f, 200.f, 90);
  const DType all[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64,
                       DType::kInt8,    DType::kUInt8,   DType::kInt16,    DType::kUInt16,
                       DType::kInt32,   DType::kUInt32,  DType::kInt64,    DType::kUInt64,
                       DType::kBool};
  for (DType from : all) {
    for (DType to : all) {
      SCOPED_TRACE(StrCat(DTypeName(from), " -> ", DTypeName(to)));
      const ir::Attributes attrs = MakeAttrs({{"to", static_cast<int64_t>(to)}});
      const bool half_out = to == DType::kFloat16 || to == DType::kBFloat16;
      const double rtol = half_out ? 1e-2 : 1e-6, atol = half_out ? 1e-3 : 0;
      ExpectGpuMatchesCpu("Cast", {random.CastTo(from)}, attrs, Opset(19), rtol, atol);
      if (IsFloatingPoint(from) && from != DType::kFloat16 && from != DType::kBFloat16)
        ExpectGpuMatchesCpu("Cast", {special.CastTo(from)}, attrs, Opset(19), rtol, atol);
    }
  }
  ExpectGpuMatchesCpu("CastLike", {random, RandomInts(DType::kInt16, {1}, 0, 1, 91)}, {},
                      Opset(19));
}

TEST(GpuElementwiseTest, QuantizeDequantize) {
  KILN_REQUIRE_GPU();
  const Tensor x = RandomTensor({2, 3, 4, 5}, -30.f, 30.f, 100);
  // Per tensor, with and without zero point; saturation.
  const Tensor scale = Tensor::Scalar(0.1f);
  ExpectGpuMatchesCpu("QuantizeLinear", {x, scale, Tensor::Scalar(3.f).CastTo(DType::kUInt8)}, {},
                      Opset(19, {false, true, true}));
  ExpectGpuMatchesCpu("QuantizeLinear", {x, scale, Tensor::Scalar(-3.f).CastTo(DType::kInt8)}, {},
                      Opset(19, {false, true, true}));
  ExpectGpuMatchesCpu("QuantizeLinear", {x, scale}, {}, Opset(19, {false, true}));
  ExpectGpuMatchesCpu("QuantizeLinear", {Half(x), Half(scale)}, {}, Opset(19, {false, true}));
  // Per axis.
  const Tensor axis_scale = RandomTensor({3}, 0.05f, 0.5f, 101);
  const Tensor axis_zp = RandomInts(DType::kInt8, {3}, -10, 10, 102);
  ExpectGpuMatchesCpu("QuantizeLinear", {x, axis_scale, axis_zp}, {},
                      Opset(19, {false, true, true}));
  const Tensor scale4 = RandomTensor({4}, 0.05f, 0.5f, 103);
  ExpectGpuMatchesCpu("QuantizeLinear",
                      {x, scale4, RandomInts(DType::kUInt16, {4}, 0, 1000, 104)},
                      MakeAttrs({{"axis", int64_t{-2}}}), Opset(19, {false, true, true}));
  // Dequantize.
  for (DType q : {DType::kInt8, DType::kUInt8, DType::kInt32}) {
    SCOPED_TRACE(DTypeName(q));
    const Tensor xq = RandomInts(q, {2, 3, 4, 5}, 0, 120, 105);
    ExpectGpuMatchesCpu("DequantizeLinear", {xq, scale, RandomInts(q, {}, 0, 20, 106)}, {},
                        Opset(19, {false, true, true}));
    ExpectGpuMatchesCpu("DequantizeLinear", {xq, axis_scale, RandomInts(q, {3}, 0, 20, 107)}, {},
                        Opset(19, {false, true, true}));
    ExpectGpuMatchesCpu("DequantizeLinear", {xq, scale}, {}, Opset(19, {false, true}));
  }
}

TEST(GpuElementwiseTest, BatchNormalization) {
  KILN_REQUIRE_GPU();
  const Tensor x = RandomTensor({2, 6, 5, 7}, -3.f, 3.f, 110);
  const Tensor scale = RandomTensor({6}, 0.5f, 2.f, 111);
  const Tensor bias = RandomTensor({6}, -1.f, 1.f, 112);
  const Tensor mean = RandomTensor({6}, -1.f, 1.f, 113);
  const Tensor var = RandomTensor({6}, 0.1f, 2.f, 114);
  const ir::Attributes attrs = MakeAttrs({{"epsilon", 1e-3f}});
  const std::vector<bool> constant = {false, true, true, true, true};
  ExpectGpuMatchesCpu("BatchNormalization", {x, scale, bias, mean, var}, attrs,
                      Opset(15, constant));
  ExpectGpuMatchesCpu("BatchNormalization",
                      {Half(x), Half(scale), Half(bias), Half(mean), Half(var)}, attrs,
                      Opset(15, constant), kHalfRtol, kHalfAtol);
  // Rank 2 and rank 3.
  ExpectGpuMatchesCpu("BatchNormalization",
                      {RandomTensor({5, 6}, -3.f, 3.f, 115), scale, bias, mean, var}, attrs,
                      Opset(15, constant));
  ExpectGpuMatchesCpu("BatchNormalization",
                      {RandomTensor({3, 6, 9}, -3.f, 3.f, 116), scale, bias, mean, var}, {},
                      Opset(15, constant));
  ExpectGpuMatchesCpu("BatchNormalization",
                      {x.CastTo(DType::kFloat64), scale.CastTo(DType::kFloat64),
                       bias.CastTo(DType::kFloat64), mean.CastTo(DType::kFloat64),
                       var.CastTo(DType::kFloat64)},
                      attrs, Opset(15, constant));
}

// ---- Hand-built layouts ----

// Logical NCHW host tensor <-> NHWC memory order (dims stay logical).
Tensor NchwToNhwcMemory(const Tensor& t) {
  const auto& d = t.dims();
  Tensor out(t.dtype(), d);
  const size_t es = DTypeSize(t.dtype());
  const int64_t n = d[0], c = d[1], h = d[2], w = d[3];
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ic = 0; ic < c; ++ic)
      for (int64_t ih = 0; ih < h; ++ih)
        for (int64_t iw = 0; iw < w; ++iw)
          std::memcpy(static_cast<char*>(out.raw_data()) + (((in * h + ih) * w + iw) * c + ic) * es,
                      static_cast<const char*>(t.raw_data()) + (((in * c + ic) * h + ih) * w + iw) * es,
                      es);
  return out;
}

Tensor NhwcMemoryToNchw(const Tensor& t) {
  const auto& d = t.dims();
  Tensor out(t.dtype(), d);
  const size_t es = DTypeSize(t.dtype());
  const int64_t n = d[0], c = d[1], h = d[2], w = d[3];
  for (int64_t in = 0; in < n; ++in)
    for (int64_t ic = 0; ic < c; ++ic)
      for (int64_t ih = 0; ih < h; ++ih)
        for (int64_t iw = 0; iw < w; ++iw)
          std::memcpy(static_cast<char*>(out.raw_data()) + (((in * c + ic) * h + ih) * w + iw) * es,
                      static_cast<const char*>(t.raw_data()) + (((in * h + ih) * w + iw) * c + ic) * es,
                      es);
  return out;
}

struct DeviceMemory {
  void* ptr = nullptr;
  explicit DeviceMemory(size_t bytes) {
    if (bytes) KILN_CUDA_CHECK(cudaMalloc(&ptr, bytes));
  }
  ~DeviceMemory() {
    if (ptr) cudaFree(ptr);
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
};

// Creates the node's layer with the given layouts (inputs are logical
// row-major host tensors, converted to NHWC memory where asked), runs it once
// and returns the output as a logical row-major tensor.
Tensor RunLayer(const ir::Node& node, const std::vector<Tensor>& inputs,
                const std::vector<gpu::Layout>& layouts, const std::vector<bool>& constant,
                const ir::TensorType& out_type, gpu::Layout out_layout) {
  const gpu::GpuOpDef* def = gpu::GpuLayerRegistry::Global().Find(node.op_type);
  KILN_CHECK(def, "no GPU layer for ", node.op_type);
  std::vector<Tensor> stored(inputs.size());
  gpu::LayerInit init{node, {}, {}, {}, {}, {}};
  for (size_t i = 0; i < inputs.size(); ++i) {
    gpu::TensorDesc d;
    const gpu::Layout layout = i < layouts.size() ? layouts[i] : gpu::Layout::kRowMajor;
    if (inputs[i].defined()) {
      d.dtype = inputs[i].dtype();
      d.dims = inputs[i].dims();
      d.layout = layout;
      stored[i] = layout == gpu::Layout::kNHWC ? NchwToNhwcMemory(inputs[i]) : inputs[i];
    }
    init.inputs.push_back(d);
    const bool is_const = i < constant.size() && constant[i] && inputs[i].defined();
    init.constants.push_back(is_const ? &stored[i] : nullptr);
  }
  gpu::TensorDesc out_desc;
  out_desc.dtype = out_type.dtype;
  out_desc.dims = ir::KnownDims(*out_type.shape);
  out_desc.layout = out_layout;
  init.outputs.push_back(out_desc);
  std::unique_ptr<gpu::Layer> layer = def->create(init);

  std::vector<std::unique_ptr<DeviceMemory>> buffers;
  gpu::LaunchArgs args;
  for (size_t i = 0; i < stored.size(); ++i) {
    if (!stored[i].defined() || !layer->ReadsInputOnDevice(static_cast<int>(i))) {
      args.inputs.push_back(nullptr);
      continue;
    }
    buffers.push_back(std::make_unique<DeviceMemory>(stored[i].nbytes()));
    KILN_CUDA_CHECK(cudaMemcpy(buffers.back()->ptr, stored[i].raw_data(), stored[i].nbytes(),
                               cudaMemcpyHostToDevice));
    args.inputs.push_back(buffers.back()->ptr);
  }
  DeviceMemory out(out_desc.nbytes());
  if (out_desc.nbytes()) KILN_CUDA_CHECK(cudaMemset(out.ptr, 0xFF, out_desc.nbytes()));
  args.outputs.push_back(out.ptr);
  DeviceMemory workspace(layer->WorkspaceBytes());
  args.workspace = workspace.ptr;
  layer->Enqueue(args);
  KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  KILN_CUDA_CHECK(cudaGetLastError());
  Tensor result(out_desc.dtype, out_desc.dims);
  if (result.nbytes())
    KILN_CUDA_CHECK(cudaMemcpy(result.raw_data(), out.ptr, result.nbytes(), cudaMemcpyDeviceToHost));
  return out_layout == gpu::Layout::kNHWC ? NhwcMemoryToNchw(result) : result;
}

void ExpectClose(const Tensor& got, const Tensor& want, double rtol, double atol) {
  ASSERT_EQ(got.dims(), want.dims());
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double a = got.GetAsDouble(i), b = want.GetAsDouble(i);
    if (std::isnan(b)) {
      ASSERT_TRUE(std::isnan(a)) << "element " << i;
      continue;
    }
    ASSERT_LE(std::fabs(a - b), atol + rtol * std::fabs(b))
        << "element " << i << ": gpu " << a << " cpu " << b;
  }
}

// Runs op with the given layouts on the GPU and compares with the CPU
// reference of the same logical tensors.
void ExpectLayoutsMatchCpu(const std::string& op, const std::vector<Tensor>& inputs,
                           const std::vector<gpu::Layout>& layouts, gpu::Layout out_layout,
                           const ir::Attributes& attrs = {}, std::vector<bool> constant = {},
                           int opset = 17, double rtol = 1e-5, double atol = 1e-6) {
  SCOPED_TRACE(op);
  ir::Graph graph;
  graph.opset_version = opset;
  std::vector<ir::Value*> ins;
  std::vector<ir::TensorType> types(inputs.size());
  std::vector<const ir::TensorType*> type_ptrs;
  std::vector<const Tensor*> values;
  for (size_t i = 0; i < inputs.size(); ++i) {
    types[i] = ir::TensorType::Of(inputs[i]);
    ins.push_back(graph.AddValue("in" + std::to_string(i), types[i]));
    type_ptrs.push_back(&types[i]);
    values.push_back(&inputs[i]);
  }
  ir::Node* node = graph.AddNode(op, "layout_" + op, ins, {graph.AddValue("out")});
  node->attrs = attrs;
  node->opset = opset;
  const ir::TensorType out_type = InferNode(*node, type_ptrs, values)[0];
  const Tensor got = RunLayer(*node, inputs, layouts, constant, out_type, out_layout);
  std::vector<Tensor> cpu_inputs;
  for (const Tensor& t : inputs)
    cpu_inputs.push_back(t.dtype() == DType::kFloat16 ? t.CastTo(DType::kFloat32) : t);
  const Tensor want = testing::RunNode(op, cpu_inputs, attrs, 1, opset, constant)[0];
  ExpectClose(got, want, rtol, atol);
}

TEST(GpuElementwiseTest, NhwcOperands) {
  KILN_REQUIRE_GPU();
  using gpu::Layout;
  const Layout R = Layout::kRowMajor, N = Layout::kNHWC;
  const Tensor x = RandomTensor({2, 3, 4, 5}, -2.f, 2.f, 120);
  const Tensor y = RandomTensor({2, 3, 4, 5}, -2.f, 2.f, 121);
  const Tensor c3 = RandomTensor({3, 1, 1}, 0.5f, 2.f, 122);
  const Tensor c4 = RandomTensor({1, 3, 1, 1}, 0.5f, 2.f, 123);
  const Tensor w = RandomTensor({5}, 0.5f, 2.f, 124);
  const Tensor hw = RandomTensor({4, 5}, 0.5f, 2.f, 125);
  for (const char* op : {"Add", "Mul", "Sub", "Div"}) {
    ExpectLayoutsMatchCpu(op, {x, c3}, {N, R}, N, {}, {false, true});
    ExpectLayoutsMatchCpu(op, {c3, x}, {R, N}, N, {}, {true, false});
    ExpectLayoutsMatchCpu(op, {x, c4}, {N, N}, N, {}, {false, true});  // [1,C,1,1] stored NHWC.
    ExpectLayoutsMatchCpu(op, {x, c4}, {N, R}, N, {}, {false, true});
    ExpectLayoutsMatchCpu(op, {x, w}, {N, R}, N);
    ExpectLayoutsMatchCpu(op, {x, hw}, {N, R}, N);
    ExpectLayoutsMatchCpu(op, {x, Tensor::Scalar(1.5f)}, {N, R}, N, {}, {false, true});
    ExpectLayoutsMatchCpu(op, {x, y}, {N, N}, N);
    ExpectLayoutsMatchCpu(op, {x, y}, {N, R}, N);  // A real transposition.
    ExpectLayoutsMatchCpu(op, {x, y}, {N, N}, R);
  }
  ExpectLayoutsMatchCpu("Add", {Half(x), Half(c3)}, {N, R}, N, {}, {false, true}, 17, kHalfRtol,
                        kHalfAtol);
  ExpectLayoutsMatchCpu("Relu", {x}, {N}, N);
  ExpectLayoutsMatchCpu("Sigmoid", {Half(x)}, {N}, N, {}, {}, 17, kHalfRtol, kHalfAtol);
  ExpectLayoutsMatchCpu("PRelu", {x, c3}, {N, R}, N, {}, {false, true});
  ExpectLayoutsMatchCpu("Where", {RandomBools({1, 3, 1, 5}, 126), x, c3}, {R, N, R}, N);
  ExpectLayoutsMatchCpu("Cast", {x}, {N}, N, MakeAttrs({{"to", int64_t{10}}}), {}, 17, kHalfRtol,
                        kHalfAtol);
  ExpectLayoutsMatchCpu("Sum", {x, c3, y, w}, {N, R, N, R}, N);
  ExpectLayoutsMatchCpu("BatchNormalization",
                        {x, RandomTensor({3}, 0.5f, 2.f, 127), RandomTensor({3}, -1.f, 1.f, 128),
                         RandomTensor({3}, -1.f, 1.f, 129), RandomTensor({3}, 0.1f, 2.f, 130)},
                        {N, R, R, R, R}, N, {}, {false, true, true, true, true}, 15);
  ExpectLayoutsMatchCpu("QuantizeLinear",
                        {x, RandomTensor({3}, 0.01f, 0.1f, 131),
                         RandomInts(DType::kUInt8, {3}, 0, 20, 132)},
                        {N, R, R}, N, {}, {false, true, true}, 19);
}

// ---- FuseElementwise ----

ir::Value* AddInput(ir::Graph& g, const std::string& name, DType dtype, std::vector<int64_t> dims) {
  ir::Value* v = g.AddValue(name, {dtype, ir::ShapeFromDims(dims)});
  v->is_graph_input = true;
  g.inputs().push_back(v);
  return v;
}

ir::Value* Op(ir::Graph& g, const std::string& op, std::vector<ir::Value*> inputs,
              const std::string& out, ir::Attributes attrs = {}) {
  ir::Value* v = g.AddValue(out);
  ir::Node* node = g.AddNode(op, out + "_node", std::move(inputs), {v});
  node->attrs = std::move(attrs);
  return v;
}

ir::Value* Const(ir::Graph& g, const std::string& name, Tensor t) {
  return g.AddConstant(g.UniqueName(name), std::move(t));
}

int CountOps(const ir::Graph& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.nodes()) n += node->op_type == op;
  return n;
}

using GraphBuilder = std::function<void(ir::Graph&, DType)>;

std::unique_ptr<ir::Graph> Build(const GraphBuilder& build, DType dtype) {
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = 17;
  build(*g, dtype);
  passes::InferShapes(*g);
  return g;
}

// x: [2,3,4,5] -> GELU (Div, Erf, Add, Mul, Mul).
void BuildGelu(ir::Graph& g, DType d) {
  ir::Value* x = AddInput(g, "x", d, {2, 3, 4, 5});
  ir::Value* t = Op(g, "Div", {x, Const(g, "sqrt2", Tensor::Scalar(1.4142135f).CastTo(d))}, "t");
  t = Op(g, "Erf", {t}, "erf");
  t = Op(g, "Add", {t, Const(g, "one", Tensor::Scalar(1.f).CastTo(d))}, "plus1");
  t = Op(g, "Mul", {x, t}, "xmul");
  t = Op(g, "Mul", {t, Const(g, "half", Tensor::Scalar(0.5f).CastTo(d))}, "y");
  g.outputs().push_back(t);
}

// Eight inputs and several live temporaries: exercises the widest kernel
// instantiation (8 inputs, 8-16 registers).
void BuildEightInputs(ir::Graph& g, DType d) {
  std::vector<ir::Value*> x;
  for (int i = 0; i < 8; ++i) x.push_back(AddInput(g, "x" + std::to_string(i), d, {3, 5, 7, 11}));
  ir::Value* a = Op(g, "Relu", {Op(g, "Add", {x[0], x[1]}, "a0")}, "a");
  ir::Value* b = Op(g, "Tanh", {Op(g, "Sub", {x[2], x[3]}, "b0")}, "b");
  ir::Value* c = Op(g, "Sigmoid", {Op(g, "Mul", {x[4], x[5]}, "c0")}, "c");
  ir::Value* one = Const(g, "one", Tensor::Scalar(1.f).CastTo(d));
  ir::Value* e = Op(g, "Div", {x[6], Op(g, "Add", {Op(g, "Abs", {x[7]}, "e0"), one}, "e1")}, "e");
  ir::Value* ab = Op(g, "Mul", {a, b}, "ab");
  ir::Value* abc = Op(g, "Add", {ab, c}, "abc");
  g.outputs().push_back(Op(g, "Sub", {abc, Op(g, "Mul", {e, a}, "ea")}, "y"));
}

// Per-channel bias Add -> Relu.
void BuildBiasRelu(ir::Graph& g, DType d) {
  ir::Value* x = AddInput(g, "x", d, {2, 3, 4, 5});
  ir::Value* b = Const(g, "bias", RandomTensor({3, 1, 1}, -1.f, 1.f, 140).CastTo(d));
  g.outputs().push_back(Op(g, "Relu", {Op(g, "Add", {x, b}, "biased")}, "y"));
}

// x * sigmoid(x) (SiLU) and a residual Add + Add.
void BuildSiluResidual(ir::Graph& g, DType d) {
  ir::Value* x = AddInput(g, "x", d, {3, 7, 11});
  ir::Value* r = AddInput(g, "r", d, {3, 7, 11});
  ir::Value* s = Op(g, "Mul", {x, Op(g, "Sigmoid", {x}, "sig")}, "silu");
  ir::Value* a = Op(g, "Add", {s, r}, "res");
  g.outputs().push_back(Op(g, "Add", {a, AddInput(g, "row", d, {11})}, "y"));
}

// HardSwish written out: x * clip(x + 3, 0, 6) / 6, plus a HardSwish op and Mean.
void BuildHardSwishChain(ir::Graph& g, DType d) {
  ir::Value* x = AddInput(g, "x", d, {4, 1000});
  ir::Value* t = Op(g, "Add", {x, Const(g, "three", Tensor::Scalar(3.f).CastTo(d))}, "x3");
  t = Op(g, "Clip", {t, Const(g, "zero", Tensor::Scalar(0.f).CastTo(d)),
                     Const(g, "six", Tensor::Scalar(6.f).CastTo(d))}, "clipped");
  t = Op(g, "Mul", {x, t}, "xc");
  t = Op(g, "Div", {t, Const(g, "six_d", Tensor::Scalar(6.f).CastTo(d))}, "hs");
  ir::Value* h = Op(g, "HardSwish", {x}, "hs_op");
  ir::Value* m = Op(g, "Mean", {t, h, x}, "mean");
  m = Op(g, "LeakyRelu", {m}, "lrelu", MakeAttrs({{"alpha", 0.2f}}));
  m = Op(g, "Pow", {m, Const(g, "two", Tensor::Scalar(2.f).CastTo(d))}, "sq");
  g.outputs().push_back(Op(g, "Tanh", {Op(g, "Max", {m, x}, "mx")}, "y"));
}

// BatchNormalization (float32) -> Relu -> Clip-6 style attributes.
void BuildBatchNormRelu(ir::Graph& g, DType d) {
  ir::Value* x = AddInput(g, "x", d, {2, 4, 3, 3});
  ir::Value* bn = Op(g, "BatchNormalization",
                     {x, Const(g, "s", RandomTensor({4}, 0.5f, 2.f, 141)),
                      Const(g, "b", RandomTensor({4}, -1.f, 1.f, 142)),
                      Const(g, "m", RandomTensor({4}, -1.f, 1.f, 143)),
                      Const(g, "v", RandomTensor({4}, 0.1f, 2.f, 144))},
                     "bn", MakeAttrs({{"epsilon", 1e-3f}}));
  ir::Value* r = Op(g, "Relu", {bn}, "relu");
  g.outputs().push_back(Op(g, "Sqrt", {Op(g, "Add", {r, Const(g, "eps", Tensor::Scalar(0.1f))}, "pos")}, "y"));
}

TEST(FuseElementwiseTest, FusesWholeChains) {
  struct Case {
    const char* name;
    GraphBuilder build;
    int removed;
  };
  const std::vector<Case> cases = {{"gelu", BuildGelu, 4},
                                   {"bias_relu", BuildBiasRelu, 1},
                                   {"silu_residual", BuildSiluResidual, 3},
                                   {"hardswish", BuildHardSwishChain, 9},
                                   {"batchnorm", BuildBatchNormRelu, 3}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    for (DType d : {DType::kFloat32, DType::kFloat16}) {
      if (std::string(c.name) == "batchnorm" && d != DType::kFloat32) continue;
      std::unique_ptr<ir::Graph> g = Build(c.build, d);
      EXPECT_EQ(builder::FuseElementwise(*g), c.removed);
      ASSERT_EQ(g->nodes().size(), 1u);
      EXPECT_EQ(g->nodes()[0]->op_type, "KilnElementwise");
      EXPECT_EQ(g->nodes()[0]->outputs[0], g->outputs()[0]);
      EXPECT_NO_THROW(g->Validate());
      // Fusing again changes nothing.
      EXPECT_EQ(builder::FuseElementwise(*g), 0);
    }
  }
}

TEST(FuseElementwiseTest, RespectsGroupBoundaries) {
  // An intermediate with a consumer outside the group, or that is a graph
  // output, stays materialized; integer ops and bool outputs do not fuse.
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = 17;
  ir::Value* x = AddInput(*g, "x", DType::kFloat32, {8, 16});
  ir::Value* a = Op(*g, "Relu", {x}, "a");
  ir::Value* b = Op(*g, "Exp", {a}, "b");
  ir::Value* c = Op(*g, "Neg", {b}, "c");           // b and c fuse...
  ir::Value* cmp = Op(*g, "Less", {a, c}, "cmp");  // ...a is used by Less (not fusible).
  ir::Value* i = Op(*g, "Cast", {c}, "i", MakeAttrs({{"to", int64_t{7}}}));
  ir::Value* j = Op(*g, "Add", {i, i}, "j");       // int64: not fusible.
  ir::Value* o = Op(*g, "Sigmoid", {c}, "o");      // c is also a graph output below.
  ir::Value* p = Op(*g, "Tanh", {o}, "p");
  g->outputs() = {cmp, j, c, p};
  passes::InferShapes(*g);
  EXPECT_EQ(builder::FuseElementwise(*g), 2);  // {b, c} and {o, p}.
  EXPECT_EQ(CountOps(*g, "KilnElementwise"), 2);
  EXPECT_EQ(CountOps(*g, "Relu"), 1);
  EXPECT_EQ(CountOps(*g, "Less"), 1);
  EXPECT_EQ(CountOps(*g, "Add"), 1);
  EXPECT_NO_THROW(g->Validate());
  // A value used twice inside one group fuses (DAG, not only chains).
  auto h = std::make_unique<ir::Graph>();
  h->opset_version = 17;
  ir::Value* y = AddInput(*h, "y", DType::kFloat32, {5});
  ir::Value* s = Op(*h, "Sigmoid", {y}, "s");
  ir::Value* t = Op(*h, "Mul", {s, s}, "t");
  h->outputs() = {Op(*h, "Add", {t, s}, "u")};
  passes::InferShapes(*h);
  EXPECT_EQ(builder::FuseElementwise(*h), 2);
  EXPECT_EQ(h->nodes().size(), 1u);
}

TEST(FuseElementwiseTest, RespectsInputLimit) {
  // Sum of 12 distinct inputs followed by Relu: at most 8 inputs per group.
  auto g = std::make_unique<ir::Graph>();
  g->opset_version = 17;
  std::vector<ir::Value*> xs;
  for (int i = 0; i < 12; ++i) xs.push_back(AddInput(*g, "x" + std::to_string(i), DType::kFloat32, {4}));
  ir::Value* acc = xs[0];
  for (int i = 1; i < 12; ++i) acc = Op(*g, "Add", {acc, xs[static_cast<size_t>(i)]}, "s" + std::to_string(i));
  g->outputs() = {Op(*g, "Relu", {acc}, "y")};
  passes::InferShapes(*g);
  const int removed = builder::FuseElementwise(*g);
  EXPECT_GT(removed, 0);
  for (const auto& n : g->nodes())
    if (n->op_type == "KilnElementwise") EXPECT_LE(n->inputs.size(), 8u);
  EXPECT_NO_THROW(g->Validate());
}

// Runs the fused graph's KilnElementwise node on the GPU and compares with
// the unfused graph on the CPU.
void ExpectFusedMatchesCpu(const GraphBuilder& build, DType dtype, double rtol, double atol,
                           bool nhwc = false) {
  std::unique_ptr<ir::Graph> reference = Build(build, dtype);
  std::unique_ptr<ir::Graph> fused = Build(build, dtype);
  ASSERT_GT(builder::FuseElementwise(*fused), 0);
  ASSERT_EQ(fused->nodes().size(), 1u);
  std::map<std::string, Tensor> feeds;
  uint32_t seed = 150;
  for (const ir::Value* in : reference->inputs()) {
    Tensor t = RandomTensor(ir::KnownDims(*in->type.shape), -3.f, 3.f, ++seed);
    feeds[in->name] = t.CastTo(dtype);
  }
  const Tensor want = cpu::Executor(*reference).Run(feeds)[0];
  const ir::Node& node = *fused->nodes()[0];
  std::vector<Tensor> inputs;
  std::vector<bool> constant;
  std::vector<gpu::Layout> layouts;
  for (const ir::Value* v : node.inputs) {
    inputs.push_back(v->is_constant() ? v->constant : feeds.at(v->name));
    constant.push_back(v->is_constant());
    layouts.push_back(nhwc && v->type.rank() == 4 ? gpu::Layout::kNHWC : gpu::Layout::kRowMajor);
  }
  const gpu::Layout out_layout =
      nhwc && node.outputs[0]->type.rank() == 4 ? gpu::Layout::kNHWC : gpu::Layout::kRowMajor;
  const Tensor got = RunLayer(node, inputs, layouts, constant, node.outputs[0]->type, out_layout);
  ExpectClose(got.CastTo(DType::kFloat32), want.CastTo(DType::kFloat32), rtol, atol);
}

TEST(GpuFuseElementwiseTest, FusedMatchesUnfused) {
  KILN_REQUIRE_GPU();
  for (const GraphBuilder& build :
       {GraphBuilder(BuildGelu), GraphBuilder(BuildBiasRelu), GraphBuilder(BuildSiluResidual),
        GraphBuilder(BuildHardSwishChain), GraphBuilder(BuildEightInputs)}) {
    ExpectFusedMatchesCpu(build, DType::kFloat32, 1e-5, 1e-6);
    ExpectFusedMatchesCpu(build, DType::kFloat16, kHalfRtol, 1e-2);
    ExpectFusedMatchesCpu(build, DType::kBFloat16, 3e-2, 3e-2);
  }
  ExpectFusedMatchesCpu(BuildBatchNormRelu, DType::kFloat32, 1e-5, 1e-6);
  // NHWC operands: [C,1,1] bias stays row-major, x and the output are NHWC.
  ExpectFusedMatchesCpu(BuildBiasRelu, DType::kFloat32, 1e-5, 1e-6, /*nhwc=*/true);
  ExpectFusedMatchesCpu(BuildGelu, DType::kFloat16, kHalfRtol, 1e-2, /*nhwc=*/true);
  ExpectFusedMatchesCpu(BuildBatchNormRelu, DType::kFloat32, 1e-5, 1e-6, /*nhwc=*/true);
}

TEST(GpuFuseElementwiseTest, HandWrittenProgram) {
  KILN_REQUIRE_GPU();
  // y = relu(x * sigmoid(x) + b) * 0.5 over x [143, 7], b [7].
  using gpu::ew::Op;
  ir::Graph g;
  ir::Value* x = g.AddValue("x", {DType::kFloat32, ir::ShapeFromDims({143, 7})});
  ir::Value* b = g.AddValue("b", {DType::kFloat32, ir::ShapeFromDims({7})});
  ir::Node* node = g.AddNode("KilnElementwise", "hand", {x, b}, {g.AddValue("y")});
  node->attrs.set("program", std::vector<int64_t>{
                                 static_cast<int64_t>(Op::kSigmoid), 2, 0, 0, 0,  // r2 = sig(x)
                                 static_cast<int64_t>(Op::kMul), 2, 0, 2, 0,      // r2 = x*r2
                                 static_cast<int64_t>(Op::kAdd), 0, 2, 1, 0,      // r0 = r2+b
                                 static_cast<int64_t>(Op::kRelu), 1, 0, 0, 0,     // r1 = relu
                                 static_cast<int64_t>(Op::kMul), 3, 1, -1, 0});   // r3 = r1*imm0
  node->attrs.set("immediates", std::vector<float>{0.5f});
  node->attrs.set("output", int64_t{3});
  const Tensor xv = RandomTensor({143, 7}, -3.f, 3.f, 160);
  const Tensor bv = RandomTensor({7}, -1.f, 1.f, 161);
  const Tensor got = RunLayer(*node, {xv, bv}, {}, {false, false},
                              {DType::kFloat32, ir::ShapeFromDims({143, 7})},
                              gpu::Layout::kRowMajor);
  Tensor want(DType::kFloat32, {143, 7});
  for (int64_t i = 0; i < 143 * 7; ++i) {
    const float v = xv.data<float>()[i];
    const float s = v >= 0 ? 1.f / (1.f + std::exp(-v)) : std::exp(v) / (1.f + std::exp(v));
    const float r = std::max(0.f, v * s + bv.data<float>()[i % 7]);
    want.data<float>()[i] = r * 0.5f;
  }
  ExpectClose(got, want, 1e-5, 1e-6);
  // Invalid programs are rejected at creation.
  node->attrs.set("output", int64_t{5});
  EXPECT_THROW(RunLayer(*node, {xv, bv}, {}, {false, false},
                        {DType::kFloat32, ir::ShapeFromDims({143, 7})}, gpu::Layout::kRowMajor),
               Error);
}

// Bandwidth of the main paths (not a correctness test; run with
// --gtest_also_run_disabled_tests --gtest_filter='*Bandwidth*').
double BenchLayer(const ir::Node& node, const std::vector<gpu::TensorDesc>& inputs,
                  const gpu::TensorDesc& output) {
  gpu::LayerInit init{node, inputs, {output}, std::vector<const Tensor*>(inputs.size(), nullptr),
                      {}, {}};
  std::unique_ptr<gpu::Layer> layer = gpu::GpuLayerRegistry::Global().Find(node.op_type)->create(init);
  std::vector<std::unique_ptr<DeviceMemory>> buffers;
  gpu::LaunchArgs args;
  size_t bytes = output.nbytes();
  for (const gpu::TensorDesc& d : inputs) {
    buffers.push_back(std::make_unique<DeviceMemory>(d.nbytes()));
    KILN_CUDA_CHECK(cudaMemset(buffers.back()->ptr, 0, d.nbytes()));
    args.inputs.push_back(buffers.back()->ptr);
    bytes += d.nbytes();
  }
  DeviceMemory out(output.nbytes());
  DeviceMemory workspace(layer->WorkspaceBytes());
  args.outputs.push_back(out.ptr);
  args.workspace = workspace.ptr;
  const double seconds = testing::TimeEnqueueMs(*layer, args) / 1e3;
  return static_cast<double>(bytes) / seconds / 1e9;
}

gpu::TensorDesc Desc(DType dtype, std::vector<int64_t> dims, gpu::Layout layout = gpu::Layout::kRowMajor) {
  gpu::TensorDesc d;
  d.dtype = dtype;
  d.dims = std::move(dims);
  d.layout = layout;
  return d;
}

TEST(GpuElementwiseTest, DISABLED_Bandwidth) {
  KILN_REQUIRE_GPU();
  using gpu::Layout;
  const DType h = DType::kFloat16, f = DType::kFloat32;
  const std::vector<int64_t> big = {64, 256, 56, 56};
  ir::Graph g;
  ir::Value* a = g.AddValue("a");
  ir::Value* b = g.AddValue("b");
  ir::Value* y = g.AddValue("y");
  ir::Node* add = g.AddNode("Add", "add", {a, b}, {y});
  ir::Value* y2 = g.AddValue("y2");
  ir::Node* relu = g.AddNode("Relu", "relu", {a}, {y2});
  auto report = [](const char* what, double gbs) {
    std::printf("%-48s %8.1f GB/s\n", what, gbs);
  };
  report("Add f16 same shape", BenchLayer(*add, {Desc(h, big), Desc(h, big)}, Desc(h, big)));
  report("Add f32 same shape", BenchLayer(*add, {Desc(f, big), Desc(f, big)}, Desc(f, big)));
  report("Add f16 + scalar", BenchLayer(*add, {Desc(h, big), Desc(h, {})}, Desc(h, big)));
  report("Add f16 NCHW + [C,1,1]",
         BenchLayer(*add, {Desc(h, big), Desc(h, {256, 1, 1})}, Desc(h, big)));
  report("Add f16 NHWC + [C,1,1]",
         BenchLayer(*add, {Desc(h, big, Layout::kNHWC), Desc(h, {256, 1, 1})},
                    Desc(h, big, Layout::kNHWC)));
  report("Add f16 [N,1,H,W] + [N,C,H,W]",
         BenchLayer(*add, {Desc(h, {64, 1, 56, 56}), Desc(h, big)}, Desc(h, big)));
  report("Relu f16", BenchLayer(*relu, {Desc(h, big)}, Desc(h, big)));
  report("Relu f32", BenchLayer(*relu, {Desc(f, big)}, Desc(f, big)));
  report("Relu f16 odd size (misaligned tail)",
         BenchLayer(*relu, {Desc(h, {12845057})}, Desc(h, {12845057})));
  // The fused GELU program (5 instructions) and bias+ReLU.
  for (DType d : {h, f}) {
    std::unique_ptr<ir::Graph> gelu = Build(BuildGelu, d);
    builder::FuseElementwise(*gelu);
    report(d == h ? "KilnElementwise GELU f16" : "KilnElementwise GELU f32",
           BenchLayer(*gelu->nodes()[0], {Desc(d, big)}, Desc(d, big)));
  }
  std::unique_ptr<ir::Graph> bias_relu = Build(BuildBiasRelu, h);
  builder::FuseElementwise(*bias_relu);
  report("KilnElementwise bias+ReLU f16 NHWC",
         BenchLayer(*bias_relu->nodes()[0], {Desc(h, big, Layout::kNHWC), Desc(h, {256, 1, 1})},
                    Desc(h, big, Layout::kNHWC)));
}

TEST(GpuElementwiseTest, UnsupportedInputsThrow) {
  KILN_REQUIRE_GPU();
  EXPECT_THROW(testing::RunNodeOnGpu("Mod", {RandomTensor({3}), RandomTensor({3})}, {}), Error);
  EXPECT_THROW(testing::RunNodeOnGpu(
                   "Gelu", {RandomTensor({3})}, MakeAttrs({{"approximate", std::string("x")}})),
               Error);
}

}  // namespace
}  // namespace kiln
