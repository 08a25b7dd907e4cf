// Tests for the tensor (shape and data movement) operators: CPU kernels
// against hand-computed values or straightforward reference loops, plus
// import-time inference on symbolic shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/executor.h"
#include "ops/registry.h"
#include "passes/passes.h"
#include "test_util.h"

namespace kiln {
namespace {

using ir::Dim;
using ir::Shape;
using ir::TensorType;
using testing::RunNode;

Tensor F(std::vector<int64_t> dims, std::vector<float> values) {
  return Tensor::FromFloats(std::move(dims), values);
}
Tensor I(std::vector<int64_t> dims, std::vector<int64_t> values) {
  return Tensor::FromInt64s(std::move(dims), values);
}
Tensor I1(std::vector<int64_t> values) {
  int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromInt64s({n}, values);
}
Tensor Iota(std::vector<int64_t> dims, DType dtype = DType::kFloat32) {
  Tensor t(DType::kFloat32, std::move(dims));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t.CastTo(dtype);
}

ir::Attributes Attrs(std::initializer_list<std::pair<const char*, ir::AttrValue>> list) {
  ir::Attributes a;
  for (const auto& [name, value] : list) a.set(name, value);
  return a;
}

void ExpectTensor(const Tensor& t, DType dtype, std::vector<int64_t> dims,
                  std::vector<double> values) {
  ASSERT_EQ(t.dtype(), dtype) << t.TypeString();
  ASSERT_EQ(t.dims(), dims) << t.TypeString();
  ASSERT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  for (int64_t i = 0; i < t.numel(); ++i)
    EXPECT_NEAR(t.GetAsDouble(i), values[static_cast<size_t>(i)], 1e-5) << "element " << i;
}

Tensor Run1(const std::string& op, const std::vector<Tensor>& inputs,
            const ir::Attributes& attrs = {}, int opset = 17) {
  return RunNode(op, inputs, attrs, 1, opset)[0];
}

// Runs only inference on a hand-built node with symbolic input types.
std::vector<TensorType> Infer(const std::string& op, std::vector<TensorType> types,
                              std::vector<Tensor> values, const ir::Attributes& attrs = {},
                              int opset = 17, int num_outputs = 1) {
  ir::Graph graph;
  std::vector<ir::Value*> ins;
  for (size_t i = 0; i < types.size(); ++i)
    ins.push_back(graph.AddValue("in" + std::to_string(i), types[i]));
  std::vector<ir::Value*> outs;
  for (int i = 0; i < num_outputs; ++i) outs.push_back(graph.AddValue("out" + std::to_string(i)));
  ir::Node* node = graph.AddNode(op, "n", ins, outs);
  node->attrs = attrs;
  node->opset = opset;
  std::vector<const TensorType*> type_ptrs;
  std::vector<const Tensor*> value_ptrs;
  values.resize(types.size());
  for (size_t i = 0; i < types.size(); ++i) {
    type_ptrs.push_back(&types[i]);
    value_ptrs.push_back(values[i].defined() ? &values[i] : nullptr);
  }
  return InferNode(*node, type_ptrs, value_ptrs);
}

TensorType Sym(DType dtype, Shape shape) { return TensorType{dtype, std::move(shape)}; }
Dim K(int64_t v) { return Dim::Known(v); }
Dim S(const char* s) { return Dim::Symbol(s); }

// ---- Reshape / Flatten / Squeeze / Unsqueeze ----

TEST(TensorReshape, ZeroCopiesAndMinusOneInfers) {
  Tensor x = Iota({2, 3, 4});
  std::vector<double> iota24;
  for (int i = 0; i < 24; ++i) iota24.push_back(i);
  ExpectTensor(Run1("Reshape", {x, I1({0, -1})}), DType::kFloat32, {2, 12}, iota24);
  EXPECT_EQ(Run1("Reshape", {x, I1({-1, 2, 2})}).dims(), (std::vector<int64_t>{6, 2, 2}));
  EXPECT_EQ(Run1("Reshape", {x, I1({4, 0, 2})}).dims(), (std::vector<int64_t>{4, 3, 2}));
  Tensor i64 = Iota({6}, DType::kInt64);
  ExpectTensor(Run1("Reshape", {i64, I1({3, 2})}), DType::kInt64, {3, 2}, {0, 1, 2, 3, 4, 5});
}

TEST(TensorReshape, AllowZeroMakesEmptyDims) {
  Tensor empty(DType::kFloat32, {0, 3});
  Tensor out = Run1("Reshape", {empty, I1({3, 0})}, Attrs({{"allowzero", int64_t{1}}}), 14);
  EXPECT_EQ(out.dims(), (std::vector<int64_t>{3, 0}));
  // Without allowzero, 0 copies the input dim.
  EXPECT_EQ(Run1("Reshape", {empty, I1({0, 3})}).dims(), (std::vector<int64_t>{0, 3}));
}

TEST(TensorReshape, Errors) {
  Tensor x = Iota({2, 3});
  EXPECT_THROW(Run1("Reshape", {x, I1({4, 2})}), Error);
  EXPECT_THROW(Run1("Reshape", {x, I1({-1, -1})}), Error);
  EXPECT_THROW(Run1("Reshape", {x, I1({-1, 4})}), Error);
  EXPECT_THROW(Run1("Reshape", {x, I1({-2, 3})}), Error);
  EXPECT_THROW(Run1("Reshape", {x, I1({0, 0, 0})}), Error);
}

TEST(TensorReshape, SymbolicInference) {
  TensorType x = Sym(DType::kFloat32, {S("batch"), K(3), K(4)});
  TensorType shape = Sym(DType::kInt64, {K(2)});
  auto t = Infer("Reshape", {x, shape}, {Tensor(), I1({0, -1})});
  EXPECT_EQ(*t[0].shape, (Shape{S("batch"), K(12)}));
  // -1 takes the symbol when the known factors cancel.
  t = Infer("Reshape", {x, Sym(DType::kInt64, {K(3)})}, {Tensor(), I1({-1, 2, 6})});
  EXPECT_EQ(*t[0].shape, (Shape{S("batch"), K(2), K(6)}));
  // Unknown shape value: the rank still follows from the shape input's length.
  t = Infer("Reshape", {x, Sym(DType::kInt64, {K(3)})}, {});
  ASSERT_TRUE(t[0].has_rank());
  EXPECT_EQ(t[0].rank(), 3);
  // Ambiguous: unknown.
  t = Infer("Reshape", {x, Sym(DType::kInt64, {K(2)})}, {Tensor(), I1({-1, 5})});
  EXPECT_FALSE((*t[0].shape)[0].is_known());
}

TEST(TensorFlatten, AxesAndSymbols) {
  Tensor x = Iota({2, 3, 4});
  EXPECT_EQ(Run1("Flatten", {x}).dims(), (std::vector<int64_t>{2, 12}));
  EXPECT_EQ(Run1("Flatten", {x}, Attrs({{"axis", int64_t{0}}})).dims(),
            (std::vector<int64_t>{1, 24}));
  EXPECT_EQ(Run1("Flatten", {x}, Attrs({{"axis", int64_t{3}}})).dims(),
            (std::vector<int64_t>{24, 1}));
  EXPECT_EQ(Run1("Flatten", {x}, Attrs({{"axis", int64_t{-1}}})).dims(),
            (std::vector<int64_t>{6, 4}));
  EXPECT_THROW(Run1("Flatten", {x}, Attrs({{"axis", int64_t{4}}})), Error);
  auto t = Infer("Flatten", {Sym(DType::kFloat32, {S("n"), K(3), K(4)})}, {});
  EXPECT_EQ(*t[0].shape, (Shape{S("n"), K(12)}));
}

TEST(TensorSqueeze, AttrAndInputAxes) {
  Tensor x = Iota({1, 3, 1, 2});
  EXPECT_EQ(Run1("Squeeze", {x}).dims(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Run1("Squeeze", {x, I1({-2})}, {}, 13).dims(), (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(Run1("Squeeze", {x}, Attrs({{"axes", std::vector<int64_t>{0}}}), 11).dims(),
            (std::vector<int64_t>{3, 1, 2}));
  EXPECT_THROW(Run1("Squeeze", {x, I1({1})}, {}, 13), Error);
  EXPECT_THROW(Run1("Squeeze", {x, I1({4})}, {}, 13), Error);
}

TEST(TensorUnsqueeze, AttrAndInputAxes) {
  Tensor x = Iota({3, 4}, DType::kInt64);
  Tensor out = Run1("Unsqueeze", {x, I1({0, -1})}, {}, 13);
  ExpectTensor(out.Reshaped({12}), DType::kInt64, {12}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  EXPECT_EQ(out.dims(), (std::vector<int64_t>{1, 3, 4, 1}));
  EXPECT_EQ(Run1("Unsqueeze", {x}, Attrs({{"axes", std::vector<int64_t>{2, 0}}}), 11).dims(),
            (std::vector<int64_t>{1, 3, 1, 4}));
  EXPECT_THROW(Run1("Unsqueeze", {x, I1({0, 0})}, {}, 13), Error);
  EXPECT_THROW(Run1("Unsqueeze", {x, I1({5})}, {}, 13), Error);
  auto t = Infer("Unsqueeze", {Sym(DType::kInt64, {S("b")}), Sym(DType::kInt64, {K(1)})},
                 {Tensor(), I1({0})});
  EXPECT_EQ(*t[0].shape, (Shape{K(1), S("b")}));
}

// ---- Transpose ----

TEST(TensorTranspose, MatchesReferenceLoop) {
  Tensor x = Iota({2, 3, 4}, DType::kInt64);
  Tensor out = Run1("Transpose", {x}, Attrs({{"perm", std::vector<int64_t>{1, 2, 0}}}));
  ASSERT_EQ(out.dims(), (std::vector<int64_t>{3, 4, 2}));
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 4; ++b)
      for (int c = 0; c < 2; ++c)
        EXPECT_EQ(out.data<int64_t>()[(a * 4 + b) * 2 + c], x.data<int64_t>()[(c * 3 + a) * 4 + b]);
  Tensor def = Run1("Transpose", {Iota({2, 3})});
  ExpectTensor(def, DType::kFloat32, {3, 2}, {0, 3, 1, 4, 2, 5});
}

TEST(TensorTranspose, HalfAndErrors) {
  Tensor x = Iota({2, 2}, DType::kFloat16);
  ExpectTensor(Run1("Transpose", {x}), DType::kFloat16, {2, 2}, {0, 2, 1, 3});
  EXPECT_THROW(Run1("Transpose", {x}, Attrs({{"perm", std::vector<int64_t>{0, 0}}})), Error);
  EXPECT_THROW(Run1("Transpose", {x}, Attrs({{"perm", std::vector<int64_t>{0, 1, 2}}})), Error);
  auto t = Infer("Transpose", {Sym(DType::kFloat32, {S("b"), K(3), S("s")})}, {},
                 Attrs({{"perm", std::vector<int64_t>{2, 0, 1}}}));
  EXPECT_EQ(*t[0].shape, (Shape{S("s"), S("b"), K(3)}));
}

// ---- Concat / Split ----

TEST(TensorConcat, AxesAndEmpty) {
  Tensor a = F({2, 2}, {1, 2, 3, 4}), b = F({2, 1}, {5, 6});
  ExpectTensor(Run1("Concat", {a, b}, Attrs({{"axis", int64_t{-1}}})), DType::kFloat32, {2, 3},
               {1, 2, 5, 3, 4, 6});
  ExpectTensor(Run1("Concat", {a, F({1, 2}, {7, 8}), Tensor(DType::kFloat32, {0, 2})},
                    Attrs({{"axis", int64_t{0}}})),
               DType::kFloat32, {3, 2}, {1, 2, 3, 4, 7, 8});
  EXPECT_THROW(Run1("Concat", {a, b}, Attrs({{"axis", int64_t{0}}})), Error);
  EXPECT_THROW(Run1("Concat", {a, b}, Attrs({{"axis", int64_t{2}}})), Error);
  auto t = Infer("Concat", {Sym(DType::kInt64, {K(1)}), Sym(DType::kInt64, {K(2)})}, {},
                 Attrs({{"axis", int64_t{0}}}));
  EXPECT_EQ(*t[0].shape, (Shape{K(3)}));
}

TEST(TensorSplit, AttributeInputAndNumOutputs) {
  Tensor x = Iota({2, 6});
  auto outs = RunNode(
      "Split", {x}, Attrs({{"axis", int64_t{1}}, {"split", std::vector<int64_t>{1, 2, 3}}}), 3, 11);
  ExpectTensor(outs[0], DType::kFloat32, {2, 1}, {0, 6});
  ExpectTensor(outs[1], DType::kFloat32, {2, 2}, {1, 2, 7, 8});
  ExpectTensor(outs[2], DType::kFloat32, {2, 3}, {3, 4, 5, 9, 10, 11});
  outs = RunNode("Split", {x, I1({4, 2})}, Attrs({{"axis", int64_t{-1}}}), 2, 13);
  ExpectTensor(outs[1], DType::kFloat32, {2, 2}, {4, 5, 10, 11});
  outs = RunNode("Split", {x}, {}, 2, 13);
  ExpectTensor(outs[1], DType::kFloat32, {1, 6}, {6, 7, 8, 9, 10, 11});
  outs = RunNode("Split", {Iota({5})}, Attrs({{"num_outputs", int64_t{3}}}), 3, 18);
  ExpectTensor(outs[0], DType::kFloat32, {2}, {0, 1});
  ExpectTensor(outs[2], DType::kFloat32, {1}, {4});
  EXPECT_THROW(RunNode("Split", {x, I1({4, 3})}, Attrs({{"axis", int64_t{1}}}), 2, 13), Error);
  EXPECT_THROW(RunNode("Split", {Iota({5})}, {}, 2, 13), Error);
}

// ---- Slice ----

TEST(TensorSlice, InputsWithNegativeStepsAndClamping) {
  Tensor x = Iota({3, 4});
  const int64_t kMax = std::numeric_limits<int64_t>::max();
  ExpectTensor(Run1("Slice", {x, I1({1, 0}), I1({kMax, 3})}), DType::kFloat32, {2, 3},
               {4, 5, 6, 8, 9, 10});
  // Reverse the last axis entirely, every other row.
  ExpectTensor(Run1("Slice", {x, I1({-1, 0}), I1({std::numeric_limits<int64_t>::min(), kMax}),
                              I1({-1, 0}), I1({-1, 2})}),
               DType::kFloat32, {2, 4}, {3, 2, 1, 0, 11, 10, 9, 8});
  ExpectTensor(Run1("Slice", {x, I1({10}), I1({20}), I1({1})}), DType::kFloat32, {3, 0}, {});
  ExpectTensor(Run1("Slice", {x, I1({-100}), I1({2}), I1({0})}), DType::kFloat32, {2, 4},
               {0, 1, 2, 3, 4, 5, 6, 7});
  ExpectTensor(Run1("Slice", {x, I1({3}), I1({0}), I1({1}), I1({-2})}), DType::kFloat32, {3, 2},
               {3, 1, 7, 5, 11, 9});
}

TEST(TensorSlice, Opset9AttributesAndBool) {
  Tensor x = Iota({4}, DType::kBool);
  Tensor out =
      Run1("Slice", {x},
           Attrs({{"starts", std::vector<int64_t>{0}}, {"ends", std::vector<int64_t>{2}}}), 9);
  ExpectTensor(out, DType::kBool, {2}, {0, 1});
}

TEST(TensorSlice, ErrorsAndInference) {
  Tensor x = Iota({3, 4});
  EXPECT_THROW(Run1("Slice", {x, I1({0}), I1({1}), I1({0}), I1({0})}), Error);
  EXPECT_THROW(Run1("Slice", {x, I1({0}), I1({1}), I1({2})}), Error);
  EXPECT_THROW(Run1("Slice", {x, I1({0, 0}), I1({1, 1}), I1({1, -1})}), Error);
  EXPECT_THROW(Run1("Slice", {x, I1({0, 0}), I1({1})}), Error);
  TensorType in = Sym(DType::kFloat32, {S("b"), K(10)});
  TensorType v1 = Sym(DType::kInt64, {K(1)});
  auto t = Infer("Slice", {in, v1, v1, v1}, {Tensor(), I1({2}), I1({-1}), I1({1})});
  EXPECT_EQ(*t[0].shape, (Shape{S("b"), K(7)}));
  t = Infer("Slice", {in, v1, v1, v1}, {Tensor(), Tensor(), Tensor(), I1({1})});
  EXPECT_EQ((*t[0].shape)[0], S("b"));
  EXPECT_FALSE((*t[0].shape)[1].is_known());
}

// ---- Gather family ----

TEST(TensorGather, AxesNegativeIndicesAndErrors) {
  Tensor x = Iota({3, 2}, DType::kInt64);
  ExpectTensor(Run1("Gather", {x, I1({2, -3})}), DType::kInt64, {2, 2}, {4, 5, 0, 1});
  ExpectTensor(Run1("Gather", {x, I({2, 2}, {1, 0, 0, 1})}, Attrs({{"axis", int64_t{-1}}})),
               DType::kInt64, {3, 2, 2}, {1, 0, 0, 1, 3, 2, 2, 3, 5, 4, 4, 5});
  ExpectTensor(Run1("Gather", {x, I({}, {1})}), DType::kInt64, {2}, {2, 3});
  Tensor i32(DType::kInt32, {1});
  i32.data<int32_t>()[0] = 1;
  ExpectTensor(Run1("Gather", {Iota({3}), i32}), DType::kFloat32, {1}, {1});
  EXPECT_THROW(Run1("Gather", {x, I1({3})}), Error);
  EXPECT_THROW(Run1("Gather", {x, I1({-4})}), Error);
  EXPECT_THROW(Run1("Gather", {x, I1({0})}, Attrs({{"axis", int64_t{2}}})), Error);
}

TEST(TensorGatherElements, Axis1AndNegativeIndices) {
  Tensor x = F({2, 2}, {1, 2, 3, 4});
  ExpectTensor(Run1("GatherElements", {x, I({2, 2}, {0, 0, 1, 0})}, Attrs({{"axis", int64_t{1}}})),
               DType::kFloat32, {2, 2}, {1, 1, 4, 3});
  ExpectTensor(Run1("GatherElements", {x, I({1, 2}, {-1, 0})}), DType::kFloat32, {1, 2}, {3, 2});
  EXPECT_THROW(Run1("GatherElements", {x, I({1, 2}, {2, 0})}), Error);
}

TEST(TensorGatherND, BatchDims) {
  Tensor x = Iota({2, 2, 2});
  ExpectTensor(Run1("GatherND", {x, I({2, 2}, {0, 1, 1, 0})}), DType::kFloat32, {2, 2},
               {2, 3, 4, 5});
  ExpectTensor(Run1("GatherND", {x, I({2, 1}, {1, 0})}, Attrs({{"batch_dims", int64_t{1}}})),
               DType::kFloat32, {2, 2}, {2, 3, 4, 5});
  ExpectTensor(Run1("GatherND", {x, I({1, 3}, {1, 1, -1})}), DType::kFloat32, {1}, {7});
  EXPECT_THROW(Run1("GatherND", {x, I({1, 1}, {2})}), Error);
}

TEST(TensorScatter, ElementsAndND) {
  Tensor data = F({1, 5}, {1, 2, 3, 4, 5});
  Tensor out = Run1("ScatterElements", {data, I({1, 2}, {1, -2}), F({1, 2}, {1.1f, 2.1f})},
                    Attrs({{"axis", int64_t{1}}}));
  ExpectTensor(out, DType::kFloat32, {1, 5}, {1, 1.1, 3, 2.1, 5});
  out = Run1("ScatterElements", {data, I({1, 2}, {1, 1}), F({1, 2}, {1.1f, 2.1f})},
             Attrs({{"axis", int64_t{1}}, {"reduction", std::string("add")}}), 16);
  ExpectTensor(out, DType::kFloat32, {1, 5}, {1, 5.2, 3, 4, 5});
  EXPECT_THROW(Run1("ScatterElements", {data, I({1, 1}, {5}), F({1, 1}, {0})},
                    Attrs({{"axis", int64_t{1}}})),
               Error);
  Tensor d2 = Iota({4, 2}, DType::kInt64);
  out = Run1("ScatterND", {d2, I({2, 1}, {3, 0}), I({2, 2}, {10, 11, 20, 21})});
  ExpectTensor(out, DType::kInt64, {4, 2}, {20, 21, 2, 3, 4, 5, 10, 11});
  out = Run1("ScatterND", {d2, I({2, 2}, {1, 1, 1, 1}), I({2}, {5, 7})},
             Attrs({{"reduction", std::string("mul")}}), 16);
  ExpectTensor(out, DType::kInt64, {4, 2}, {0, 1, 2, 3 * 35, 4, 5, 6, 7});
  EXPECT_THROW(Run1("ScatterND", {d2, I({1, 1}, {4}), I({1, 2}, {0, 0})}), Error);
}

// ---- Shape-valued ops ----

TEST(TensorShape, StartEndAndSize) {
  Tensor x(DType::kFloat32, {2, 3, 4});
  ExpectTensor(Run1("Shape", {x}), DType::kInt64, {3}, {2, 3, 4});
  ExpectTensor(Run1("Shape", {x}, Attrs({{"start", int64_t{-2}}}), 15), DType::kInt64, {2}, {3, 4});
  ExpectTensor(Run1("Shape", {x}, Attrs({{"start", int64_t{1}}, {"end", int64_t{-1}}}), 15),
               DType::kInt64, {1}, {3});
  ExpectTensor(Run1("Shape", {x}, Attrs({{"start", int64_t{-10}}, {"end", int64_t{10}}}), 15),
               DType::kInt64, {3}, {2, 3, 4});
  ExpectTensor(Run1("Shape", {x}, Attrs({{"start", int64_t{2}}, {"end", int64_t{1}}}), 15),
               DType::kInt64, {0}, {});
  ExpectTensor(Run1("Size", {x}), DType::kInt64, {}, {24});
}

TEST(TensorConstantOfShape, ValueAndDefault) {
  Tensor value(DType::kInt32, {1});
  value.data<int32_t>()[0] = 7;
  ExpectTensor(Run1("ConstantOfShape", {I1({2, 2})}, Attrs({{"value", value}})), DType::kInt32,
               {2, 2}, {7, 7, 7, 7});
  ExpectTensor(Run1("ConstantOfShape", {I1({3})}), DType::kFloat32, {3}, {0, 0, 0});
  ExpectTensor(Run1("ConstantOfShape", {I1({0})}), DType::kFloat32, {0}, {});
  EXPECT_THROW(Run1("ConstantOfShape", {I1({-1})}), Error);
}

TEST(TensorIdentity, IdentityDropoutConstant) {
  Tensor x = Iota({2, 2}, DType::kUInt8);
  ExpectTensor(Run1("Identity", {x}), DType::kUInt8, {2, 2}, {0, 1, 2, 3});
  auto outs = RunNode("Dropout", {Iota({3})}, {}, 2, 13);
  ExpectTensor(outs[0], DType::kFloat32, {3}, {0, 1, 2});
  ExpectTensor(outs[1], DType::kBool, {3}, {1, 1, 1});
  outs = RunNode("Dropout", {Iota({2}, DType::kFloat16)}, {}, 2, 7);
  ExpectTensor(outs[1], DType::kFloat16, {2}, {1, 1});
  Tensor training(DType::kBool, {});
  training.data<uint8_t>()[0] = 1;
  EXPECT_THROW(RunNode("Dropout", {Iota({3}), F({}, {0.5f}), training}, {}, 1, 13), Error);
  ExpectTensor(Run1("Constant", {}, Attrs({{"value_ints", std::vector<int64_t>{4, 5}}})),
               DType::kInt64, {2}, {4, 5});
  ExpectTensor(Run1("Constant", {}, Attrs({{"value", F({2}, {1.5f, 2.5f})}})), DType::kFloat32, {2},
               {1.5, 2.5});
}

// ---- Expand / Tile / Range ----

TEST(TensorExpand, BidirectionalBroadcast) {
  Tensor x = F({3, 1}, {1, 2, 3});
  ExpectTensor(Run1("Expand", {x, I1({2, 1, 2})}), DType::kFloat32, {2, 3, 2},
               {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3});
  ExpectTensor(Run1("Expand", {x, I1({1})}), DType::kFloat32, {3, 1}, {1, 2, 3});
  EXPECT_THROW(Run1("Expand", {x, I1({2, 2})}), Error);
}

TEST(TensorTile, Repeats) {
  Tensor x = Iota({2, 2}, DType::kInt64);
  ExpectTensor(Run1("Tile", {x, I1({1, 2})}), DType::kInt64, {2, 4}, {0, 1, 0, 1, 2, 3, 2, 3});
  ExpectTensor(Run1("Tile", {x, I1({2, 1})}), DType::kInt64, {4, 2}, {0, 1, 2, 3, 0, 1, 2, 3});
  EXPECT_EQ(Run1("Tile", {x, I1({0, 3})}).dims(), (std::vector<int64_t>{0, 6}));
  EXPECT_THROW(Run1("Tile", {x, I1({2})}), Error);
}

TEST(TensorRange, IntAndFloat) {
  ExpectTensor(Run1("Range", {I({}, {10}), I({}, {4}), I({}, {-3})}), DType::kInt64, {2}, {10, 7});
  ExpectTensor(Run1("Range", {F({}, {1}), F({}, {5}), F({}, {2})}), DType::kFloat32, {2}, {1, 3});
  ExpectTensor(Run1("Range", {F({}, {0}), F({}, {1}), F({}, {0.3f})}), DType::kFloat32, {4},
               {0, 0.3, 0.6, 0.9});
  ExpectTensor(Run1("Range", {I({}, {5}), I({}, {1}), I({}, {2})}), DType::kInt64, {0}, {});
  EXPECT_THROW(Run1("Range", {I({}, {0}), I({}, {4}), I({}, {0})}), Error);
}

// ---- Pad ----

// Independent reference: numpy.pad semantics along one axis of length n.
int64_t RefPadIndex(int64_t x, int64_t n, const std::string& mode) {
  if (x >= 0 && x < n) return x;
  if (mode == "constant") return -1;
  if (mode == "edge") return x < 0 ? 0 : n - 1;
  if (mode == "wrap") return ((x % n) + n) % n;
  while (x < 0 || x >= n) x = x < 0 ? -x : 2 * (n - 1) - x;  // reflect
  return x;
}

TEST(TensorPad, AllModesMatchReference) {
  Tensor x = Iota({3, 4});
  std::vector<int64_t> pads = {2, -1, 1, 3};  // begin rows, begin cols, end rows, end cols
  for (std::string mode : {"constant", "reflect", "edge", "wrap"}) {
    Tensor out = Run1("Pad", {x, I1(pads), F({}, {-5})}, Attrs({{"mode", mode}}), 13);
    ASSERT_EQ(out.dims(), (std::vector<int64_t>{6, 6})) << mode;
    for (int64_t r = 0; r < 6; ++r) {
      for (int64_t c = 0; c < 6; ++c) {
        int64_t sr = RefPadIndex(r - 2, 3, mode), sc = RefPadIndex(c + 1, 4, mode);
        float expected = (sr < 0 || sc < 0) ? -5.f : x.data<float>()[sr * 4 + sc];
        EXPECT_EQ(out.data<float>()[r * 6 + c], expected) << mode << " at " << r << "," << c;
      }
    }
  }
}

TEST(TensorPad, OldOpsetAxesAndErrors) {
  Tensor x = Iota({2}, DType::kInt32);
  ExpectTensor(Run1("Pad", {x}, Attrs({{"pads", std::vector<int64_t>{1, 2}}, {"value", 9.f}}), 7),
               DType::kInt32, {5}, {9, 0, 1, 9, 9});
  ExpectTensor(Run1("Pad", {Iota({2, 2}), I1({1, 1}), Tensor(), I1({-1})}, {}, 18), DType::kFloat32,
               {2, 4}, {0, 0, 1, 0, 0, 2, 3, 0});
  EXPECT_THROW(Run1("Pad", {x, I1({1})}, {}, 13), Error);
  EXPECT_THROW(Run1("Pad", {x, I1({-2, -1})}, {}, 13), Error);
  EXPECT_THROW(Run1("Pad", {x, I1({1, 1})}, Attrs({{"mode", std::string("mirror")}}), 13), Error);
}

// ---- Resize / Upsample ----

TEST(TensorResize, LinearHalfPixelMatchesOnnxExample) {
  // test_resize_upsample_scales_linear from the ONNX backend suite.
  Tensor x = F({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor out = Run1("Resize", {x, Tensor(), F({4}, {1, 1, 2, 2})},
                    Attrs({{"mode", std::string("linear")}}), 13);
  ExpectTensor(out, DType::kFloat32, {1, 1, 4, 4},
               {1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4});
}

TEST(TensorResize, NearestModesAndSizes) {
  Tensor x = F({1, 1, 1, 4}, {1, 2, 3, 4});
  // asymmetric x/0.6: 0, 1.67, 3.33 -> floor 0,1,3 ; ceil 0,2,4->3
  auto run = [&](const char* nearest, const char* coord) {
    return Run1("Resize", {x, Tensor(), Tensor(), I1({1, 1, 1, 7})},
                Attrs({{"nearest_mode", std::string(nearest)},
                       {"coordinate_transformation_mode", std::string(coord)}}),
                13);
  };
  // half_pixel, scale 7/4: src = (x+0.5)*4/7-0.5 = -0.214,0.357,0.929,1.5,2.07,2.64,3.21
  ExpectTensor(run("round_prefer_floor", "half_pixel"), DType::kFloat32, {1, 1, 1, 7},
               {1, 1, 2, 2, 3, 4, 4});
  ExpectTensor(run("round_prefer_ceil", "half_pixel"), DType::kFloat32, {1, 1, 1, 7},
               {1, 1, 2, 3, 3, 4, 4});
  ExpectTensor(run("floor", "half_pixel"), DType::kFloat32, {1, 1, 1, 7}, {1, 1, 1, 2, 3, 3, 4});
  ExpectTensor(run("ceil", "half_pixel"), DType::kFloat32, {1, 1, 1, 7}, {1, 2, 2, 3, 4, 4, 4});
  // align_corners: src = x*3/6 = 0,0.5,1,1.5,2,2.5,3
  ExpectTensor(run("round_prefer_floor", "align_corners"), DType::kFloat32, {1, 1, 1, 7},
               {1, 1, 2, 2, 3, 3, 4});
  // int64 data moves as bytes.
  Tensor xi = Iota({1, 2}, DType::kInt64);
  ExpectTensor(Run1("Resize", {xi, Tensor(), F({2}, {2, 2})},
                    Attrs({{"coordinate_transformation_mode", std::string("asymmetric")}}), 13),
               DType::kInt64, {2, 4}, {0, 0, 1, 1, 0, 0, 1, 1});
}

TEST(TensorResize, CubicAlignCornersIsInterpolating) {
  // Align-corners with 2x-1 outputs samples whole and half-way points; by the
  // kernel's symmetry both reproduce a ramp exactly away from the edges.
  Tensor x = Iota({1, 8});
  Tensor out = Run1("Resize", {x, Tensor(), Tensor(), I1({1, 15})},
                    Attrs({{"mode", std::string("cubic")},
                           {"coordinate_transformation_mode", std::string("align_corners")}}),
                    13);
  ASSERT_EQ(out.dims(), (std::vector<int64_t>{1, 15}));
  for (int i = 2; i < 13; ++i) EXPECT_NEAR(out.data<float>()[i], i * 0.5, 1e-5) << i;
  EXPECT_NEAR(out.data<float>()[0], 0, 1e-6);
  EXPECT_NEAR(out.data<float>()[14], 7, 1e-6);
}

TEST(TensorResize, TfCropAndResizeExtrapolates) {
  Tensor x = Iota({1, 4});
  // roi on the last axis [0.5, 1.5]: coords 1.5, 3, 4.5 -> last is outside.
  Tensor out = Run1("Resize", {x, F({4}, {0, 0.5f, 1, 1.5f}), Tensor(), I1({1, 3})},
                    Attrs({{"mode", std::string("linear")},
                           {"coordinate_transformation_mode", std::string("tf_crop_and_resize")},
                           {"extrapolation_value", 10.f}}),
                    13);
  ExpectTensor(out, DType::kFloat32, {1, 3}, {1.5, 3, 10});
}

TEST(TensorResize, UpsampleAndErrors) {
  Tensor x = F({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor out = Run1("Upsample", {x, F({4}, {1, 1, 2, 3})}, {}, 9);
  ExpectTensor(out, DType::kFloat32, {1, 1, 4, 6},
               {1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4});
  out = Run1("Upsample", {x}, Attrs({{"scales", std::vector<float>{1, 1, 2, 1}}}), 7);
  ExpectTensor(out, DType::kFloat32, {1, 1, 4, 2}, {1, 2, 1, 2, 3, 4, 3, 4});
  EXPECT_THROW(Run1("Resize", {x, Tensor(), F({3}, {1, 1, 2})}, {}, 13), Error);
  EXPECT_THROW(Run1("Resize", {x, Tensor(), F({4}, {1, 1, 2, 2}), I1({1, 1, 4, 4})}, {}, 13),
               Error);
  EXPECT_THROW(Run1("Resize", {x, Tensor(), F({4}, {1, 1, 2, 2})},
                    Attrs({{"mode", std::string("area")}}), 13),
               Error);
  // Opset 18 axes + keep_aspect_ratio_policy.
  out = Run1("Resize", {Iota({2, 4}), Tensor(), Tensor(), I1({4, 4})},
             Attrs({{"axes", std::vector<int64_t>{0, 1}},
                    {"keep_aspect_ratio_policy", std::string("not_larger")}}),
             18);
  EXPECT_EQ(out.dims(), (std::vector<int64_t>{2, 4}));
}

// ---- TopK ----

TEST(TensorTopK, LargestSmallestAndTies) {
  Tensor x = F({2, 4}, {1, 3, 3, 2, 4, 4, 0, 4});
  auto outs = RunNode("TopK", {x, I1({2})}, {}, 2, 11);
  ExpectTensor(outs[0], DType::kFloat32, {2, 2}, {3, 3, 4, 4});
  ExpectTensor(outs[1], DType::kInt64, {2, 2}, {1, 2, 0, 1});
  outs =
      RunNode("TopK", {x, I1({3})}, Attrs({{"largest", int64_t{0}}, {"axis", int64_t{-1}}}), 2, 11);
  ExpectTensor(outs[0], DType::kFloat32, {2, 3}, {1, 2, 3, 0, 4, 4});
  ExpectTensor(outs[1], DType::kInt64, {2, 3}, {0, 3, 1, 2, 0, 1});
  outs = RunNode("TopK", {x}, Attrs({{"k", int64_t{1}}, {"axis", int64_t{0}}}), 2, 9);
  ExpectTensor(outs[0], DType::kFloat32, {1, 4}, {4, 4, 3, 4});
  ExpectTensor(outs[1], DType::kInt64, {1, 4}, {1, 1, 0, 1});
  EXPECT_THROW(RunNode("TopK", {x, I1({5})}, {}, 2, 11), Error);
}

// ---- NonZero / OneHot ----

TEST(TensorNonZero, Coordinates) {
  Tensor x = F({2, 2}, {1, 0, 1, 1});
  ExpectTensor(Run1("NonZero", {x}), DType::kInt64, {2, 3}, {0, 1, 1, 0, 0, 1});
  ExpectTensor(Run1("NonZero", {Tensor(DType::kFloat32, {0})}), DType::kInt64, {1, 0}, {});
}

TEST(TensorOneHot, AxesAndNegativeIndices) {
  Tensor values = F({2}, {0, 5});
  ExpectTensor(Run1("OneHot", {I1({1, -1, 7}), F({}, {3}), values}), DType::kFloat32, {3, 3},
               {0, 5, 0, 0, 0, 5, 0, 0, 0});
  ExpectTensor(Run1("OneHot", {I1({0, 2}), I({}, {3}), values}, Attrs({{"axis", int64_t{0}}})),
               DType::kFloat32, {3, 2}, {5, 0, 0, 0, 0, 5});
}

// ---- DepthToSpace / SpaceToDepth ----

TEST(TensorDepthToSpace, ModesMatchReferenceLoops) {
  const int64_t n = 1, c = 8, h = 2, w = 3, b = 2, oc = 2;
  Tensor x = Iota({n, c, h, w});
  for (std::string mode : {"DCR", "CRD"}) {
    Tensor out = Run1("DepthToSpace", {x}, Attrs({{"blocksize", b}, {"mode", mode}}), 13);
    ASSERT_EQ(out.dims(), (std::vector<int64_t>{n, oc, h * b, w * b}));
    for (int64_t ch = 0; ch < oc; ++ch)
      for (int64_t y = 0; y < h * b; ++y)
        for (int64_t xx = 0; xx < w * b; ++xx) {
          int64_t by = y % b, bx = xx % b;
          int64_t in_c = mode == "DCR" ? (by * b + bx) * oc + ch : ch * b * b + by * b + bx;
          float expected = x.data<float>()[(in_c * h + y / b) * w + xx / b];
          EXPECT_EQ(out.data<float>()[(ch * h * b + y) * w * b + xx], expected) << mode;
        }
  }
  // SpaceToDepth inverts DCR DepthToSpace.
  Tensor space = Run1("DepthToSpace", {x}, Attrs({{"blocksize", b}}), 13);
  Tensor back = Run1("SpaceToDepth", {space}, Attrs({{"blocksize", b}}), 13);
  EXPECT_EQ(testing::MaxAbsoluteError(back, x), 0);
  EXPECT_THROW(Run1("DepthToSpace", {Iota({1, 3, 2, 2})}, Attrs({{"blocksize", b}})), Error);
  EXPECT_THROW(Run1("SpaceToDepth", {Iota({1, 1, 3, 2})}, Attrs({{"blocksize", b}})), Error);
}

// ---- CumSum / Trilu / EyeLike ----

TEST(TensorCumSum, ExclusiveReverse) {
  Tensor x = F({5}, {1, 2, 3, 4, 5});
  ExpectTensor(Run1("CumSum", {x, I({}, {0})}), DType::kFloat32, {5}, {1, 3, 6, 10, 15});
  ExpectTensor(
      Run1("CumSum", {x, I({}, {0})}, Attrs({{"exclusive", int64_t{1}}, {"reverse", int64_t{1}}})),
      DType::kFloat32, {5}, {14, 12, 9, 5, 0});
  Tensor m = Iota({2, 3}, DType::kInt64);
  ExpectTensor(Run1("CumSum", {m, I({}, {-1})}), DType::kInt64, {2, 3}, {0, 1, 3, 3, 7, 12});
  EXPECT_THROW(Run1("CumSum", {m, I({}, {2})}), Error);
}

TEST(TensorTrilu, UpperLowerWithK) {
  Tensor x = Iota({3, 3}, DType::kInt64);
  ExpectTensor(Run1("Trilu", {x}), DType::kInt64, {3, 3}, {0, 1, 2, 0, 4, 5, 0, 0, 8});
  ExpectTensor(Run1("Trilu", {x, I({}, {-1})}, Attrs({{"upper", int64_t{0}}})), DType::kInt64,
               {3, 3}, {0, 0, 0, 3, 0, 0, 6, 7, 0});
  ExpectTensor(Run1("Trilu", {x, I({}, {1})}), DType::kInt64, {3, 3}, {0, 1, 2, 0, 0, 5, 0, 0, 0});
  EXPECT_THROW(Run1("Trilu", {Iota({3})}), Error);
}

TEST(TensorEyeLike, DtypeAndOffset) {
  Tensor x(DType::kInt32, {2, 3});
  ExpectTensor(Run1("EyeLike", {x}, Attrs({{"k", int64_t{1}}})), DType::kInt32, {2, 3},
               {0, 1, 0, 0, 0, 1});
  ExpectTensor(Run1("EyeLike", {x}, Attrs({{"dtype", int64_t{1}}})), DType::kFloat32, {2, 3},
               {1, 0, 0, 0, 1, 0});
}

// ---- Empty tensors and other dtypes ----

TEST(TensorEmpty, LayoutOpsOnEmptyTensors) {
  Tensor empty(DType::kFloat32, {0, 3});
  EXPECT_EQ(Run1("Transpose", {empty}).dims(), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(Run1("Gather", {Iota({3, 2}), Tensor(DType::kInt64, {0})}).dims(),
            (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(Run1("Slice", {empty, I1({1}), I1({2}), I1({1})}).dims(), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(Run1("Expand", {empty, I1({2, 1, 1})}).dims(), (std::vector<int64_t>{2, 0, 3}));
  EXPECT_EQ(Run1("Pad", {empty, I1({1, 0, 0, 0})}, {}, 13).dims(), (std::vector<int64_t>{1, 3}));
  EXPECT_THROW(Run1("Pad", {empty, I1({1, 0, 0, 0})}, Attrs({{"mode", std::string("edge")}}), 13),
               Error);
  EXPECT_EQ(Run1("Tile", {empty, I1({2, 2})}).dims(), (std::vector<int64_t>{0, 6}));
}

TEST(TensorEmpty, HalfAndBoolMoveAsBytes) {
  Tensor h = Iota({2, 3}, DType::kBFloat16);
  ExpectTensor(Run1("Slice", {h, I1({-1}), I1({0}), I1({1}), I1({-1})}), DType::kBFloat16, {2, 2},
               {2, 1, 5, 4});
  Tensor b = Iota({3}, DType::kBool);  // [0, 1, 1]
  ExpectTensor(Run1("Pad", {b, I1({1, 1})}, Attrs({{"mode", std::string("edge")}}), 13),
               DType::kBool, {5}, {0, 0, 1, 1, 1});
  ExpectTensor(Run1("Concat", {b, b}, Attrs({{"axis", int64_t{0}}})), DType::kBool, {6},
               {0, 1, 1, 0, 1, 1});
  Tensor f16 = Iota({4}, DType::kFloat16);
  auto outs = RunNode("TopK", {f16, I1({2})}, {}, 2, 11);
  ExpectTensor(outs[0], DType::kFloat16, {2}, {3, 2});
  ExpectTensor(outs[1], DType::kInt64, {2}, {3, 2});
}

// ---- Shape-computing chains, as exporters emit them ----

TEST(TensorShapeChain, SymbolicBatchReshapeInfersRankAndRuns) {
  // y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])): x[batch,3,4] -> [batch,12].
  ir::Graph graph;
  graph.opset_version = 13;
  ir::Value* x = graph.AddValue("x", Sym(DType::kFloat32, {S("batch"), K(3), K(4)}));
  x->is_graph_input = true;
  graph.inputs().push_back(x);
  auto node = [&](const char* op, std::vector<ir::Value*> ins, const char* out) {
    ir::Value* v = graph.AddValue(out);
    ir::Node* n = graph.AddNode(op, out, std::move(ins), {v});
    n->opset = 13;
    return std::make_pair(n, v);
  };
  auto [shape_node, shape] = node("Shape", {x}, "shape");
  auto [gather_node, batch] =
      node("Gather", {shape, graph.AddConstant("zero", I({}, {0}))}, "batch");
  auto [unsq_node, batch1] =
      node("Unsqueeze", {batch, graph.AddConstant("axes", I1({0}))}, "batch1");
  auto [concat_node, target] =
      node("Concat", {batch1, graph.AddConstant("rest", I1({-1}))}, "target");
  concat_node->attrs.set("axis", int64_t{0});
  auto [reshape_node, y] = node("Reshape", {x, target}, "y");
  graph.outputs().push_back(y);
  passes::InferShapes(graph);
  EXPECT_EQ(*shape->type.shape, (Shape{K(3)}));
  EXPECT_EQ(*batch->type.shape, Shape{});
  EXPECT_EQ(*target->type.shape, (Shape{K(2)}));
  ASSERT_TRUE(y->type.has_rank());
  EXPECT_EQ(y->type.rank(), 2);
  cpu::Executor executor(graph);
  std::vector<Tensor> out = executor.Run({{"x", Iota({5, 3, 4})}});
  EXPECT_EQ(out[0].dims(), (std::vector<int64_t>{5, 12}));
  EXPECT_EQ(out[0].data<float>()[59], 59.f);
}

TEST(TensorShapeChain, ConstantInputsGiveExactShapes) {
  auto t = Infer("ConstantOfShape", {Sym(DType::kInt64, {K(2)})}, {I1({2, 5})});
  EXPECT_EQ(*t[0].shape, (Shape{K(2), K(5)}));
  t = Infer("ConstantOfShape", {Sym(DType::kInt64, {K(3)})}, {});
  EXPECT_EQ(t[0].rank(), 3);
  t = Infer("Range", {Sym(DType::kInt64, {}), Sym(DType::kInt64, {}), Sym(DType::kInt64, {})},
            {I({}, {0}), I({}, {10}), I({}, {3})});
  EXPECT_EQ(*t[0].shape, (Shape{K(4)}));
  t = Infer("Expand", {Sym(DType::kFloat32, {S("b"), K(1)}), Sym(DType::kInt64, {K(2)})},
            {Tensor(), I1({1, 4})});
  EXPECT_EQ(*t[0].shape, (Shape{S("b"), K(4)}));
  t = Infer("Resize",
            {Sym(DType::kFloat32, {S("n"), K(3), K(8), K(8)}), Sym(DType::kFloat32, {K(0)}),
             Sym(DType::kFloat32, {K(4)})},
            {Tensor(), Tensor(), F({4}, {1, 1, 2, 0.5f})}, {}, 13);
  EXPECT_EQ(*t[0].shape, (Shape{S("n"), K(3), K(16), K(4)}));
  t = Infer("Split", {Sym(DType::kFloat32, {S("n"), K(6)})}, {}, Attrs({{"axis", int64_t{1}}}), 13,
            3);
  EXPECT_EQ(*t[2].shape, (Shape{S("n"), K(2)}));
}

// ---- Opsets before 7 ----

TEST(TensorOldOpset, ReshapeShapeAttribute) {
  // Reshape-1 takes the target shape as an attribute (with 0 and -1).
  Tensor x = Iota({2, 3, 2});
  ExpectTensor(Run1("Reshape", {x}, Attrs({{"shape", std::vector<int64_t>{0, -1}}}), 1),
               DType::kFloat32, {2, 6}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  // Opset 5 on uses the input, as before.
  ExpectTensor(Run1("Reshape", {x, I1({3, 4})}, {}, 5), DType::kFloat32, {3, 4},
               {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  EXPECT_THROW(Run1("Reshape", {x}, {}, 1), Error);
  EXPECT_THROW(Run1("Reshape", {x}, Attrs({{"shape", std::vector<int64_t>{5, -1}}}), 1), Error);
  // Symbolic inference from the attribute.
  std::vector<TensorType> t =
      Infer("Reshape",
            {TensorType{DType::kFloat32, ir::Shape{Dim::Symbol("N"), Dim::Known(3), Dim::Known(2)}}},
            {}, Attrs({{"shape", std::vector<int64_t>{0, 6}}}), 4);
  EXPECT_EQ(ir::ShapeToString(*t[0].shape), "[N,6]");
}

TEST(TensorOldOpset, ConcatDefaultAxis) {
  // Concat-1 defaults axis to 1; from opset 4 axis is required.
  Tensor a = Iota({1, 2});
  Tensor b = Iota({1, 1});
  ExpectTensor(Run1("Concat", {a, b}, {}, 1), DType::kFloat32, {1, 3}, {0, 1, 0});
  ExpectTensor(Run1("Concat", {a, b}, Attrs({{"axis", int64_t{1}}}), 4), DType::kFloat32,
               {1, 3}, {0, 1, 0});
  EXPECT_THROW(Run1("Concat", {a, b}, {}, 4), Error);
  EXPECT_THROW(Run1("Concat", {a, b}, Attrs({{"axis", int64_t{0}}}), 1), Error);
}

TEST(TensorOldOpset, SplitAttributeAndOpset1Input) {
  Tensor x = Iota({3, 2});
  // Split-2 `split` attribute.
  std::vector<Tensor> parts =
      RunNode("Split", {x}, Attrs({{"axis", int64_t{0}}, {"split", std::vector<int64_t>{2, 1}}}),
              2, 6);
  ExpectTensor(parts[0], DType::kFloat32, {2, 2}, {0, 1, 2, 3});
  ExpectTensor(parts[1], DType::kFloat32, {1, 2}, {4, 5});
  // Split-1 also took the sizes as a second input.
  parts = RunNode("Split", {x, I1({1, 2})}, Attrs({{"axis", int64_t{0}}}), 2, 1, {false, true});
  ExpectTensor(parts[0], DType::kFloat32, {1, 2}, {0, 1});
  ExpectTensor(parts[1], DType::kFloat32, {2, 2}, {2, 3, 4, 5});
  // Equal halves along the last axis.
  parts = RunNode("Split", {x}, Attrs({{"axis", int64_t{-1}}}), 2, 6);
  ExpectTensor(parts[0], DType::kFloat32, {3, 1}, {0, 2, 4});
  ExpectTensor(parts[1], DType::kFloat32, {3, 1}, {1, 3, 5});
  EXPECT_THROW(RunNode("Split", {x}, Attrs({{"split", std::vector<int64_t>{2, 2}}}), 2, 6),
               Error);
}

TEST(TensorOldOpset, PadAttributes) {
  Tensor x = Iota({1, 3});
  // Pad-2: pads/mode/value attributes.
  ExpectTensor(Run1("Pad", {x},
                    Attrs({{"pads", std::vector<int64_t>{0, 1, 0, 2}}, {"value", 7.f}}), 2),
               DType::kFloat32, {1, 6}, {7, 0, 1, 2, 7, 7});
  ExpectTensor(Run1("Pad", {x},
                    Attrs({{"pads", std::vector<int64_t>{0, 2, 0, 1}},
                           {"mode", std::string("reflect")}}),
                    6),
               DType::kFloat32, {1, 6}, {2, 1, 0, 1, 2, 1});
  // Pad-1 called it `paddings`.
  ExpectTensor(Run1("Pad", {x},
                    Attrs({{"paddings", std::vector<int64_t>{0, 1, 0, 1}},
                           {"mode", std::string("edge")}}),
                    1),
               DType::kFloat32, {1, 5}, {0, 0, 1, 2, 2});
  EXPECT_THROW(Run1("Pad", {x}, {}, 2), Error);
  EXPECT_THROW(Run1("Pad", {x}, Attrs({{"pads", std::vector<int64_t>{1, 1}}}), 2), Error);
}

TEST(TensorOldOpset, DropoutIsTest) {
  Tensor x = Iota({2, 2});
  // Dropout-6 with is_test=1 is an identity; the mask has the input's type.
  std::vector<Tensor> out =
      RunNode("Dropout", {x}, Attrs({{"is_test", int64_t{1}}, {"ratio", 0.3f}}), 2, 6);
  ExpectTensor(out[0], DType::kFloat32, {2, 2}, {0, 1, 2, 3});
  ExpectTensor(out[1], DType::kFloat32, {2, 2}, {1, 1, 1, 1});
  // Training mode (the default is_test=0) would drop at random.
  EXPECT_THROW(Run1("Dropout", {x}, {}, 6), Error);
  ExpectTensor(Run1("Dropout", {x}, Attrs({{"ratio", 0.f}}), 1), DType::kFloat32, {2, 2},
               {0, 1, 2, 3});
  // Opset 7 has no is_test: inference is an identity.
  ExpectTensor(Run1("Dropout", {x}, {}, 7), DType::kFloat32, {2, 2}, {0, 1, 2, 3});
}

TEST(TensorOldOpset, AttributeFormsAtOpset1) {
  Tensor x = Iota({1, 2, 3});
  ExpectTensor(Run1("Slice", {x},
                    Attrs({{"starts", std::vector<int64_t>{1}}, {"ends", std::vector<int64_t>{3}},
                           {"axes", std::vector<int64_t>{2}}}),
                    1),
               DType::kFloat32, {1, 2, 2}, {1, 2, 4, 5});
  ExpectTensor(Run1("Squeeze", {x}, Attrs({{"axes", std::vector<int64_t>{0}}}), 1),
               DType::kFloat32, {2, 3}, {0, 1, 2, 3, 4, 5});
  ExpectTensor(Run1("Unsqueeze", {x}, Attrs({{"axes", std::vector<int64_t>{3}}}), 1),
               DType::kFloat32, {1, 2, 3, 1}, {0, 1, 2, 3, 4, 5});
  ExpectTensor(Run1("Transpose", {x}, Attrs({{"perm", std::vector<int64_t>{0, 2, 1}}}), 1),
               DType::kFloat32, {1, 3, 2}, {0, 3, 1, 4, 2, 5});
  ExpectTensor(Run1("Flatten", {x}, Attrs({{"axis", int64_t{2}}}), 1), DType::kFloat32, {2, 3},
               {0, 1, 2, 3, 4, 5});
  ExpectTensor(Run1("Gather", {x, I1({2, 0})}, Attrs({{"axis", int64_t{2}}}), 1),
               DType::kFloat32, {1, 2, 2}, {2, 0, 5, 3});
  ExpectTensor(Run1("Tile", {Iota({2}), I1({2})}, {}, 6), DType::kFloat32, {4}, {0, 1, 0, 1});
  // Tile-1 had a different signature (tiles, axis): not implemented.
  EXPECT_THROW(Run1("Tile", {Iota({2}), I1({2})}, {}, 1), Error);
}

}  // namespace
}  // namespace kiln
