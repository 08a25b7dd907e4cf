// GPU layers of the tensor family against the CPU reference backend: every
// op in float32, float16 for data movement, int64 where it makes sense, odd
// shapes, negative axes and empty tensors; plus the builder's layout
// conversions (KilnToNHWC / KilnToRowMajor) and NHWC Concat, which have no
// CPU op and are checked against CPU transposes.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "cuda/buffers.h"
#include "cuda/cuda_check.h"
#include "gpu_test_util.h"
#include "ops/registry.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::ExpectGpuMatchesCpu;
using testing::GpuNodeOptions;
using testing::NchwToNhwc;
using testing::NhwcToNchw;
using testing::RandomTensor;
using testing::RunNode;
using testing::RunNodeOnGpu;

using Ints = std::vector<int64_t>;
using Floats = std::vector<float>;

ir::Attributes Attrs(std::initializer_list<std::pair<const char*, ir::AttrValue>> list) {
  ir::Attributes a;
  for (const auto& [name, value] : list) a.set(name, value);
  return a;
}

Tensor I1(Ints values) {
  const int64_t n = static_cast<int64_t>(values.size());
  return Tensor::FromInt64s({n}, values);
}
Tensor IScalar(int64_t v) { return Tensor::FromInt64s({}, {v}); }

Tensor Rand(Ints dims, uint32_t seed = 1, DType dtype = DType::kFloat32) {
  return RandomTensor(std::move(dims), -1.f, 1.f, seed).CastTo(dtype);
}

// Random integers in [lo, hi) as dtype.
Tensor RandInt(Ints dims, int64_t lo, int64_t hi, uint32_t seed = 1,
               DType dtype = DType::kInt64) {
  Tensor f = RandomTensor(std::move(dims), 0.f, 1.f, seed);
  Tensor t(DType::kInt64, f.dims());
  for (int64_t i = 0; i < f.numel(); ++i)
    t.data<int64_t>()[i] =
        std::min<int64_t>(hi - 1, lo + static_cast<int64_t>(f.data<float>()[i] *
                                                            static_cast<float>(hi - lo)));
  return t.CastTo(dtype);
}

GpuNodeOptions Opts(std::vector<bool> constants = {}, int opset = 17, int outputs = 1) {
  GpuNodeOptions o;
  o.constant_inputs = std::move(constants);
  o.opset = opset;
  o.num_outputs = outputs;
  return o;
}

void Check(const std::string& op, const std::vector<Tensor>& inputs,
           const ir::Attributes& attrs = {}, const GpuNodeOptions& options = {}) {
  const bool half = !inputs.empty() && inputs[0].defined() &&
                    (inputs[0].dtype() == DType::kFloat16 || inputs[0].dtype() == DType::kBFloat16);
  ExpectGpuMatchesCpu(op, inputs, attrs, options, half ? 1e-2 : 1e-5, half ? 1e-3 : 1e-6);
}

const std::vector<DType> kMoveTypes = {DType::kFloat32, DType::kFloat16, DType::kInt64};

Tensor OfType(const Ints& dims, DType dtype, uint32_t seed = 1) {
  if (dtype == DType::kInt64 || dtype == DType::kInt32) return RandInt(dims, -50, 50, seed, dtype);
  return Rand(dims, seed, dtype);
}

// ---- Aliases ----

TEST(GpuTensorLayers, ReshapeFamilyAreAliases) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor x = OfType({2, 3, 1, 5}, dt);
    Check("Reshape", {x, I1({6, -1})}, {}, Opts({false, true}));
    Check("Flatten", {x}, Attrs({{"axis", int64_t{-2}}}));
    Check("Squeeze", {x, I1({-2})}, {}, Opts({false, true}, 13));
    Check("Squeeze", {x}, Attrs({{"axes", Ints{2}}}), Opts({}, 11));
    Check("Unsqueeze", {x, I1({0, -1})}, {}, Opts({false, true}, 13));
    Check("Identity", {x});
  }
  const gpu::GpuOpDef* def = gpu::GpuLayerRegistry::Global().Find("Reshape");
  ASSERT_NE(def, nullptr);
}

TEST(GpuTensorLayers, DropoutAliasAndMask) {
  KILN_REQUIRE_GPU();
  Tensor x = Rand({3, 7});
  Check("Dropout", {x});
  Check("Dropout", {x}, {}, Opts({}, 17, 2));
  Tensor training(DType::kBool, {});
  training.data<uint8_t>()[0] = 0;
  Check("Dropout", {x, Tensor::Scalar(0.5f), training}, {}, Opts({false, true, true}, 17, 2));
  Check("Dropout", {Rand({5}, 2, DType::kFloat16)}, {}, Opts({}, 17, 2));
  Check("Dropout", {x}, Attrs({{"is_test", int64_t{1}}}), Opts({}, 6, 2));
}

// ---- Generators ----

TEST(GpuTensorLayers, ShapeAndSize) {
  KILN_REQUIRE_GPU();
  Tensor x = Rand({2, 3, 4, 5});
  Check("Shape", {x});
  Check("Shape", {x}, Attrs({{"start", int64_t{1}}, {"end", int64_t{-1}}}), Opts({}, 15));
  Check("Shape", {x}, Attrs({{"start", int64_t{-1}}}), Opts({}, 15));
  Check("Size", {x});
  Check("Size", {Rand({0, 3})});
  Check("Shape", {Rand({})});
}

TEST(GpuTensorLayers, ConstantOfShapeEyeLikeRange) {
  KILN_REQUIRE_GPU();
  Check("ConstantOfShape", {I1({2, 3})}, {}, Opts({true}));
  Check("ConstantOfShape", {I1({7, 1, 3})}, Attrs({{"value", Tensor::FromFloats({1}, {2.5f})}}),
        Opts({true}));
  Check("ConstantOfShape", {I1({1000003})}, Attrs({{"value", Tensor::FromInt64s({1}, {-7})}}),
        Opts({true}));
  Check("ConstantOfShape", {I1({0, 4})}, Attrs({{"value", Tensor::FromInt64s({1}, {3})}}),
        Opts({true}));
  for (int64_t k : {0, 1, -2, 5}) {
    Check("EyeLike", {Rand({4, 6})}, Attrs({{"k", k}}));
    Check("EyeLike", {Rand({5, 3})}, Attrs({{"k", k}, {"dtype", int64_t{7}}}));
  }
  Check("Range", {Tensor::Scalar(1.f), Tensor::Scalar(10.f), Tensor::Scalar(0.3f)}, {},
        Opts({true, true, true}));
  Check("Range", {Tensor::Scalar(-2.f), Tensor::Scalar(-100.f), Tensor::Scalar(-1.7f)}, {},
        Opts({false, true, false}));
  Check("Range", {IScalar(10), IScalar(-3), IScalar(-3)}, {}, Opts({true, true, true}));
  Check("Range", {IScalar(0), IScalar(1000003), IScalar(1)}, {}, Opts({false, true, false}));
  Check("Range", {IScalar(5), IScalar(5), IScalar(1)}, {}, Opts({true, true, true}));
}

// ---- Layout ----

TEST(GpuTensorLayers, Transpose) {
  KILN_REQUIRE_GPU();
  struct Case {
    Ints dims;
    Ints perm;
  };
  const std::vector<Case> cases = {
      {{2, 3, 4, 5}, {0, 2, 3, 1}},      // NCHW -> NHWC
      {{2, 5, 7, 3}, {0, 3, 1, 2}},      // NHWC -> NCHW (3 channels: small-cols path)
      {{2, 3, 40, 50}, {0, 2, 3, 1}},    // 3 channels: small-rows path
      {{3, 67, 45}, {0, 2, 1}},          // tiled batched
      {{1000, 33}, {1, 0}},              // tiled 2-D
      {{2, 3, 4, 5}, {}},                // reversed
      {{2, 1, 3, 1, 5}, {4, 1, 0, 3, 2}},
      {{2, 3, 2, 3, 2, 3}, {5, 3, 1, 0, 2, 4}},
      {{7}, {0}},
      {{0, 3, 4}, {2, 0, 1}},
      {{5, 0}, {1, 0}},
  };
  for (DType dt : kMoveTypes) {
    for (const Case& c : cases) {
      SCOPED_TRACE(StrCat(DTypeName(dt), " ", DimsToString(c.dims), " perm ", DimsToString(c.perm)));
      ir::Attributes attrs;
      if (!c.perm.empty()) attrs.set("perm", c.perm);
      Check("Transpose", {OfType(c.dims, dt)}, attrs);
    }
  }
  Check("Transpose", {RandInt({4, 33, 65}, 0, 255, 3, DType::kUInt8)}, Attrs({{"perm", Ints{0, 2, 1}}}));
  Check("Transpose", {Rand({2, 64, 9, 11}, 4, DType::kBFloat16)}, Attrs({{"perm", Ints{0, 2, 3, 1}}}));
}

TEST(GpuTensorLayers, Slice) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor x = OfType({5, 7, 9}, dt);
    Check("Slice", {x, I1({1, 0}), I1({4, 100}), I1({0, 2}), I1({1, 2})}, {},
          Opts({false, true, true, true, true}));
    Check("Slice", {x, I1({-1, 6}), I1({-100, -8}), I1({-3, -1}), I1({-2, -3})}, {},
          Opts({false, true, true, true, true}));
    Check("Slice", {x, I1({2}), I1({2}), I1({1})}, {}, Opts({false, true, true, true}));  // empty
    Check("Slice", {x, I1({0, 1}), I1({3, 5})}, {}, Opts({false, true, true}));
    Check("Slice", {x}, Attrs({{"starts", Ints{1}}, {"ends", Ints{-1}}, {"axes", Ints{-1}}}),
          Opts({}, 9));
  }
  Tensor big = Rand({1000003});
  Check("Slice", {big, I1({1000002}), I1({-1000004}), I1({0}), I1({-3})}, {},
        Opts({false, true, true, true, true}));
}

TEST(GpuTensorLayers, ExpandAndTile) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Check("Expand", {OfType({3, 1}, dt), I1({2, 3, 4})}, {}, Opts({false, true}));
    Check("Expand", {OfType({1, 5, 1, 3}, dt), I1({4, 1, 7, 1})}, {}, Opts({false, true}));
    Check("Expand", {OfType({}, dt), I1({7, 3})}, {}, Opts({false, true}));
    Check("Expand", {OfType({2, 1}, dt), I1({0, 2, 6})}, {}, Opts({false, true}));
    Check("Tile", {OfType({2, 3}, dt), I1({2, 3})}, {}, Opts({false, true}));
    Check("Tile", {OfType({3, 1, 4}, dt), I1({1, 5, 2})}, {}, Opts({false, true}));
    Check("Tile", {OfType({3, 4}, dt), I1({0, 2})}, {}, Opts({false, true}));
  }
}

TEST(GpuTensorLayers, DepthToSpaceAndSpaceToDepth) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor x = OfType({2, 12, 3, 5}, dt);
    Check("DepthToSpace", {x}, Attrs({{"blocksize", int64_t{2}}}));
    Check("DepthToSpace", {x}, Attrs({{"blocksize", int64_t{2}}, {"mode", std::string("CRD")}}),
          Opts({}, 13));
    Check("SpaceToDepth", {OfType({2, 3, 6, 9}, dt)}, Attrs({{"blocksize", int64_t{3}}}));
  }
}

TEST(GpuTensorLayers, Concat) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Check("Concat", {OfType({2, 3, 4}, dt, 1), OfType({2, 5, 4}, dt, 2), OfType({2, 1, 4}, dt, 3)},
          Attrs({{"axis", int64_t{1}}}));
    Check("Concat", {OfType({2, 3, 3}, dt, 1), OfType({2, 3, 1}, dt, 2)},
          Attrs({{"axis", int64_t{-1}}}));
    Check("Concat", {OfType({4, 8}, dt, 1), OfType({4, 8}, dt, 2)}, Attrs({{"axis", int64_t{1}}}));
    Check("Concat", {OfType({2, 0, 4}, dt, 1), OfType({2, 3, 4}, dt, 2)},
          Attrs({{"axis", int64_t{1}}}));
    Check("Concat", {OfType({0, 3}, dt, 1), OfType({0, 3}, dt, 2)}, Attrs({{"axis", int64_t{0}}}));
    Check("Concat", {OfType({7}, dt, 1)}, Attrs({{"axis", int64_t{0}}}));
  }
  // More inputs than one launch takes, odd sizes.
  std::vector<Tensor> many;
  for (int i = 0; i < 70; ++i) many.push_back(Rand({3, 1 + i % 4, 5}, static_cast<uint32_t>(i)));
  Check("Concat", many, Attrs({{"axis", int64_t{1}}}));
  Check("Concat", {Rand({1000003}, 1), Rand({5}, 2)}, Attrs({{"axis", int64_t{0}}}));
}

TEST(GpuTensorLayers, Split) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor x = OfType({4, 6, 5}, dt);
    Check("Split", {x}, Attrs({{"axis", int64_t{1}}}), Opts({}, 17, 3));
    Check("Split", {x, I1({1, 0, 5})}, Attrs({{"axis", int64_t{-2}}}), Opts({false, true}, 13, 3));
    Check("Split", {x}, Attrs({{"axis", int64_t{2}}, {"split", Ints{2, 3}}}), Opts({}, 11, 2));
    Check("Split", {OfType({7, 3}, dt)}, Attrs({{"num_outputs", int64_t{3}}}), Opts({}, 18, 3));
    Check("Split", {x}, {}, Opts({}, 17, 1));
  }
}

// ---- Indexing ----

TEST(GpuTensorLayers, Gather) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor data = OfType({5, 4, 3}, dt);
    Tensor idx = Tensor::FromInt64s({2, 3}, {0, -1, 4, 2, -5, 1});
    for (int64_t axis : {0, 1, 2, -1}) {
      SCOPED_TRACE(axis);
      Tensor ai = Tensor::FromInt64s({2, 2}, {0, -1, 2, 1});
      Check("Gather", {data, ai}, Attrs({{"axis", axis}}), Opts({false, true}));
      Check("Gather", {data, ai}, Attrs({{"axis", axis}}), Opts({false, false}));
      Check("Gather", {data, ai.CastTo(DType::kInt32)}, Attrs({{"axis", axis}}));
    }
    Check("Gather", {data, idx}, Attrs({{"axis", int64_t{0}}}));
    Check("Gather", {data, IScalar(-2)}, Attrs({{"axis", int64_t{1}}}));
    Check("Gather", {data, Tensor(DType::kInt64, {0})}, Attrs({{"axis", int64_t{1}}}));
  }
  // Embedding lookups (vectorized rows).
  Check("Gather", {Rand({1000, 64}), RandInt({3, 17}, -1000, 1000)}, {});
  Check("Gather", {Rand({1000, 63}, 2, DType::kFloat16), RandInt({31}, 0, 1000)}, {});
  // Constant out-of-range indices fail at creation.
  EXPECT_THROW(RunNodeOnGpu("Gather", {Rand({3, 2}), I1({3})}, {}, Opts({false, true})), Error);
}

TEST(GpuTensorLayers, GatherElementsAndND) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor data = OfType({4, 5, 3}, dt);
    Check("GatherElements", {data, RandInt({4, 2, 3}, -5, 5, 7)}, Attrs({{"axis", int64_t{1}}}));
    Check("GatherElements", {data, RandInt({6, 5, 2}, -4, 4, 8)}, Attrs({{"axis", int64_t{0}}}));
    Check("GatherElements", {data, RandInt({2, 3, 7}, -3, 3, 9).CastTo(DType::kInt32)},
          Attrs({{"axis", int64_t{-1}}}));
    Check("GatherND", {data, Tensor::FromInt64s({3, 2}, {0, 1, -1, 4, 2, -5})});
    Check("GatherND", {data, Tensor::FromInt64s({2, 1, 3}, {0, 1, 2, 3, -1, 0})});
    Check("GatherND", {data, Tensor::FromInt64s({4, 1}, {0, 2, 4, -1})},
          Attrs({{"batch_dims", int64_t{1}}}));
    Check("GatherND", {data, Tensor::FromInt64s({4, 2, 2}, {0, 1, 2, 2, 1, 0, 4, 1, 3, 2, 0, 0, 1, 1, 2, 0})},
          Attrs({{"batch_dims", int64_t{1}}}));
  }
}

TEST(GpuTensorLayers, ScatterND) {
  KILN_REQUIRE_GPU();
  Tensor data = Rand({4, 5, 3}, 1);
  Tensor idx = Tensor::FromInt64s({3, 2}, {0, 1, -1, 4, 2, 0});
  Tensor upd = Rand({3, 3}, 2);
  Check("ScatterND", {data, idx, upd}, {}, Opts({}, 13));
  Check("ScatterND", {data, idx, upd}, {}, Opts({false, true, false}, 13));
  Check("ScatterND", {data.CastTo(DType::kFloat16), idx, upd.CastTo(DType::kFloat16)}, {},
        Opts({}, 13));
  Check("ScatterND", {data.CastTo(DType::kInt64), idx, upd.CastTo(DType::kInt64)});
  // Duplicates accumulate with reductions.
  Tensor dup = Tensor::FromInt64s({4, 1}, {1, 3, 1, -3});
  Tensor upd2 = Rand({4, 5, 3}, 3);
  for (const char* r : {"add", "mul"})
    Check("ScatterND", {data, dup, upd2}, Attrs({{"reduction", std::string(r)}}), Opts({}, 16));
  for (const char* r : {"add", "mul", "max", "min"}) {
    SCOPED_TRACE(r);
    Check("ScatterND", {data, dup, upd2}, Attrs({{"reduction", std::string(r)}}), Opts({}, 18));
    Check("ScatterND",
          {RandInt({4, 5, 3}, -9, 9, 4), dup, RandInt({4, 5, 3}, -9, 9, 5)},
          Attrs({{"reduction", std::string(r)}}), Opts({}, 18));
  }
  Check("ScatterND", {data.CastTo(DType::kFloat16), dup, upd2.CastTo(DType::kFloat16)},
        Attrs({{"reduction", std::string("add")}}), Opts({}, 18));
  Check("ScatterND", {RandInt({6}, 0, 9, 4, DType::kUInt8), Tensor::FromInt64s({3, 1}, {1, 1, 5}),
                      RandInt({3}, 0, 9, 5, DType::kUInt8)},
        Attrs({{"reduction", std::string("add")}}), Opts({}, 18));
  Check("ScatterND", {data, Tensor(DType::kInt64, {0, 2}), Tensor(DType::kFloat32, {0, 3})}, {},
        Opts({}, 13));
}

TEST(GpuTensorLayers, ScatterElements) {
  KILN_REQUIRE_GPU();
  Tensor data = Rand({4, 5}, 1);
  Tensor idx = Tensor::FromInt64s({2, 3}, {0, -1, 3, 2, 1, 0});
  Tensor upd = Rand({2, 3}, 2);
  for (int64_t axis : {0, 1, -1}) {
    SCOPED_TRACE(axis);
    Check("ScatterElements", {data, idx, upd}, Attrs({{"axis", axis}}), Opts({}, 13));
    Check("ScatterElements", {data.CastTo(DType::kInt64), idx, upd.CastTo(DType::kInt64)},
          Attrs({{"axis", axis}}), Opts({false, true, false}, 13));
    Check("ScatterElements", {data.CastTo(DType::kFloat16), idx.CastTo(DType::kInt32),
                              upd.CastTo(DType::kFloat16)},
          Attrs({{"axis", axis}}), Opts({}, 13));
    for (const char* r : {"add", "mul", "max", "min"}) {
      SCOPED_TRACE(r);
      Tensor dup = Tensor::FromInt64s({3, 3}, {0, 1, 1, 0, 1, 1, 2, 2, 1});
      Check("ScatterElements", {data, dup, Rand({3, 3}, 3)},
            Attrs({{"axis", axis}, {"reduction", std::string(r)}}), Opts({}, 18));
    }
  }
  Check("Scatter", {data, idx, upd}, Attrs({{"axis", int64_t{1}}}), Opts({}, 10));
}

// ---- Pad / Resize ----

TEST(GpuTensorLayers, Pad) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    SCOPED_TRACE(DTypeName(dt));
    Tensor x = OfType({2, 3, 4, 5}, dt);
    Tensor pads = I1({0, 1, 2, 3, 1, 0, 3, 2});
    for (const char* mode : {"constant", "reflect", "edge", "wrap"}) {
      SCOPED_TRACE(mode);
      Check("Pad", {x, pads}, Attrs({{"mode", std::string(mode)}}), Opts({false, true}, 19));
      Check("Pad", {x, I1({0, 0, -1, 1, 0, 0, 2, -2})}, Attrs({{"mode", std::string(mode)}}),
            Opts({false, true}, 19));
    }
    Tensor value = OfType({}, dt, 9);
    Check("Pad", {x, pads, value}, {}, Opts({false, true, true}));
    Check("Pad", {x, pads, value}, {}, Opts({false, true, false}));
    Check("Pad", {x, I1({1, 2, 2, 1}), value, I1({-1, 1})}, {}, Opts({false, true, true, true}, 18));
    Check("Pad", {OfType({0, 3}, dt), I1({1, 0, 1, 1})}, {}, Opts({false, true}));
  }
  Check("Pad", {Rand({3, 4})}, Attrs({{"pads", Ints{1, 2, 0, 1}}, {"value", 1.5f}}), Opts({}, 2));
  Check("Pad", {Rand({3, 4})},
        Attrs({{"pads", Ints{3, 3, 3, 3}}, {"mode", std::string("reflect")}}), Opts({}, 2));
}

TEST(GpuTensorLayers, ResizeNearest) {
  KILN_REQUIRE_GPU();
  const std::vector<std::string> coords = {"half_pixel", "half_pixel_symmetric",
                                           "pytorch_half_pixel", "align_corners", "asymmetric",
                                           "tf_half_pixel_for_nn"};
  const std::vector<std::string> nearests = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                             "ceil"};
  Tensor x = Rand({1, 2, 5, 7});
  const Tensor none;
  for (const std::string& cm : coords) {
    for (const std::string& nm : nearests) {
      SCOPED_TRACE(cm + " " + nm);
      ir::Attributes attrs = Attrs({{"mode", std::string("nearest")},
                                    {"coordinate_transformation_mode", cm},
                                    {"nearest_mode", nm}});
      Check("Resize", {x, none, Tensor::FromFloats({4}, {1, 1, 2.f, 1.5f})}, attrs,
            Opts({false, false, true}, 19));
      Check("Resize", {x, none, Tensor::FromFloats({4}, {1, 1, 0.6f, 0.45f})}, attrs,
            Opts({false, false, true}, 19));
      Check("Resize", {x, none, none, I1({2, 3, 8, 3})}, attrs,
            Opts({false, false, false, true}, 19));
    }
  }
  // Any dtype moves.
  Check("Resize", {RandInt({1, 1, 4, 6}, -9, 9), none, Tensor::FromFloats({4}, {1, 1, 3, 2})},
        Attrs({{"mode", std::string("nearest")}}), Opts({false, false, true}, 13));
  Check("Resize", {Rand({1, 3, 4, 6}, 1, DType::kFloat16), none, Tensor::FromFloats({4}, {1, 1, 2, 2})},
        Attrs({{"mode", std::string("nearest")}}), Opts({false, false, true}, 13));
  // Legacy forms.
  Check("Upsample", {x}, Attrs({{"mode", std::string("nearest")}, {"scales", Floats{1, 1, 2, 3}}}),
        Opts({}, 7));
  Check("Upsample", {x, Tensor::FromFloats({4}, {1, 1, 2, 3})},
        Attrs({{"mode", std::string("nearest")}}), Opts({false, true}, 9));
  Check("Resize", {x, Tensor::FromFloats({4}, {1, 1, 0.5f, 0.5f})},
        Attrs({{"mode", std::string("nearest")}}), Opts({false, true}, 10));
  // tf_crop_and_resize with an extrapolation value.
  Check("Resize",
        {x, Tensor::FromFloats({8}, {0, 0, -0.2f, 0.1f, 1, 1, 1.3f, 0.8f}), none, I1({1, 2, 7, 6})},
        Attrs({{"mode", std::string("nearest")},
               {"coordinate_transformation_mode", std::string("tf_crop_and_resize")},
               {"extrapolation_value", 5.f}}),
        Opts({false, true, false, true}, 13));
}

TEST(GpuTensorLayers, ResizeLinearAndCubic) {
  KILN_REQUIRE_GPU();
  const std::vector<std::string> coords = {"half_pixel", "half_pixel_symmetric",
                                           "pytorch_half_pixel", "align_corners", "asymmetric"};
  Tensor x = Rand({2, 3, 6, 5});
  const Tensor none;
  for (const char* mode : {"linear", "cubic"}) {
    for (const std::string& cm : coords) {
      SCOPED_TRACE(std::string(mode) + " " + cm);
      ir::Attributes attrs =
          Attrs({{"mode", std::string(mode)}, {"coordinate_transformation_mode", cm}});
      Check("Resize", {x, none, Tensor::FromFloats({4}, {1, 1, 2.f, 1.7f})}, attrs,
            Opts({false, false, true}, 19));
      Check("Resize", {x, none, none, I1({2, 3, 4, 9})}, attrs,
            Opts({false, false, false, true}, 19));
      Check("Resize", {x.CastTo(DType::kFloat16), none, none, I1({2, 3, 11, 3})}, attrs,
            Opts({false, false, false, true}, 19));
    }
  }
  Check("Resize", {x, none, Tensor::FromFloats({4}, {1, 1, 1.5f, 2.5f})},
        Attrs({{"mode", std::string("cubic")}, {"exclude_outside", int64_t{1}},
               {"cubic_coeff_a", -0.5f}}),
        Opts({false, false, true}, 19));
  Check("Resize", {x, none, Tensor::FromFloats({4}, {1, 1, 2, 2})},
        Attrs({{"mode", std::string("linear")}, {"antialias", int64_t{1}}}),
        Opts({false, false, true}, 18));
  Check("Resize", {x, none, Tensor::FromFloats({2}, {2, 0.5f})},
        Attrs({{"mode", std::string("linear")}, {"axes", Ints{-1, 2}}}),
        Opts({false, false, true}, 18));
  Check("Resize",
        {x, Tensor::FromFloats({8}, {0, 0, 0.1f, -0.2f, 1, 1, 0.7f, 1.2f}), none, I1({2, 3, 5, 7})},
        Attrs({{"mode", std::string("linear")},
               {"coordinate_transformation_mode", std::string("tf_crop_and_resize")},
               {"extrapolation_value", -3.f}}),
        Opts({false, true, false, true}, 13));
  Check("Upsample", {x, Tensor::FromFloats({4}, {1, 1, 2, 2})},
        Attrs({{"mode", std::string("bilinear")}}), Opts({false, true}, 9));
  Check("Resize", {Rand({2, 3, 6, 5, 4}), none, Tensor::FromFloats({5}, {1, 2, 1.5f, 0.5f, 2})},
        Attrs({{"mode", std::string("linear")}}), Opts({false, false, true}, 19));
}

// ---- TopK / CumSum / Trilu / OneHot ----

TEST(GpuTensorLayers, TopK) {
  KILN_REQUIRE_GPU();
  struct Case {
    Ints dims;
    int64_t axis;
    int64_t k;
  };
  const std::vector<Case> cases = {{{3, 10}, -1, 3},   {{4, 7, 5}, 1, 7},   {{2, 1000}, 1, 200},
                                   {{3, 5000}, -1, 5}, {{5000, 2}, 0, 17},  {{6, 1}, 1, 1},
                                   {{2, 3}, 1, 0},     {{0, 4}, 1, 2}};
  for (const Case& c : cases) {
    for (int64_t largest : {1, 0}) {
      SCOPED_TRACE(StrCat(DimsToString(c.dims), " axis ", c.axis, " k ", c.k, " largest ", largest));
      ir::Attributes attrs = Attrs({{"axis", c.axis}, {"largest", largest}});
      Check("TopK", {Rand(c.dims, 3), I1({c.k})}, attrs, Opts({false, true}, 11, 2));
      // Many ties: order must keep lower indices first.
      Check("TopK", {RandInt(c.dims, -3, 3, 4), I1({c.k})}, attrs, Opts({false, true}, 11, 2));
      Check("TopK", {Rand(c.dims, 5, DType::kFloat16), I1({c.k})}, attrs,
            Opts({false, true}, 11, 2));
    }
  }
  Tensor nan = Tensor::FromFloats({1, 6}, {1.f, std::nanf(""), -2.f, 3.f, std::nanf(""), 3.f});
  Check("TopK", {nan, I1({4})}, {}, Opts({false, true}, 11, 2));
  Check("TopK", {Rand({4, 9})}, Attrs({{"k", int64_t{2}}}), Opts({}, 1, 2));
}

TEST(GpuTensorLayers, CumSum) {
  KILN_REQUIRE_GPU();
  for (int64_t exclusive : {0, 1}) {
    for (int64_t reverse : {0, 1}) {
      SCOPED_TRACE(StrCat("exclusive ", exclusive, " reverse ", reverse));
      ir::Attributes attrs = Attrs({{"exclusive", exclusive}, {"reverse", reverse}});
      for (int64_t axis : {0, 1, -1}) {
        Check("CumSum", {Rand({4, 5, 6}), IScalar(axis)}, attrs, Opts({false, true}));
        Check("CumSum", {RandInt({4, 5, 6}, -100, 100), I1({axis})}, attrs, Opts({false, true}));
        Check("CumSum", {RandInt({4, 5, 6}, -100, 100, 2, DType::kInt32), IScalar(axis)}, attrs,
              Opts({false, true}));
      }
      // Long rows take the block-scan path, which sums in another order:
      // integer-valued floats keep every partial sum exact.
      Check("CumSum", {RandInt({3, 5000}, -100, 100, 6, DType::kFloat32), IScalar(1)}, attrs,
            Opts({false, true}));
      Check("CumSum", {RandInt({3, 5000}, -100, 100), IScalar(-1)}, attrs, Opts({false, true}));
      Check("CumSum", {Rand({2, 37}, 7, DType::kFloat16), IScalar(1)}, attrs, Opts({false, true}));
    }
  }
  Check("CumSum", {Rand({0, 5}), IScalar(1)}, {}, Opts({false, true}));
}

TEST(GpuTensorLayers, Trilu) {
  KILN_REQUIRE_GPU();
  for (DType dt : kMoveTypes) {
    for (int64_t upper : {1, 0}) {
      for (int64_t k : {0, 2, -1, -9, 9}) {
        SCOPED_TRACE(StrCat(DTypeName(dt), " upper ", upper, " k ", k));
        Tensor x = OfType({2, 3, 4, 6}, dt);
        Check("Trilu", {x, IScalar(k)}, Attrs({{"upper", upper}}), Opts({false, true}));
        Check("Trilu", {x, IScalar(k)}, Attrs({{"upper", upper}}), Opts({false, false}));
      }
      Check("Trilu", {OfType({5, 3}, dt)}, Attrs({{"upper", upper}}));
    }
  }
}

TEST(GpuTensorLayers, OneHot) {
  KILN_REQUIRE_GPU();
  Tensor indices = Tensor::FromInt64s({2, 3}, {0, 4, -1, 7, -5, 2});
  for (int64_t axis : {-1, 0, 1}) {
    SCOPED_TRACE(axis);
    Check("OneHot", {indices, IScalar(5), Tensor::FromFloats({2}, {-1.f, 3.f})},
          Attrs({{"axis", axis}}), Opts({false, true, false}, 11));
    Check("OneHot", {indices.CastTo(DType::kInt32), IScalar(5), Tensor::FromInt64s({2}, {0, 1})},
          Attrs({{"axis", axis}}), Opts({false, true, true}, 11));
    Check("OneHot", {indices.CastTo(DType::kFloat32), Tensor::Scalar(6.f), Tensor::FromFloats({2}, {0.f, 1.f})},
          Attrs({{"axis", axis}}), Opts({false, true, false}, 11));
  }
}

TEST(GpuTensorLayers, NonZeroIsRejected) {
  KILN_REQUIRE_GPU();
  try {
    RunNodeOnGpu("NonZero", {Rand({3, 4})}, {});
    FAIL() << "NonZero should not build";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data-dependent output shape"), std::string::npos)
        << e.what();
  }
}

// ---- Layout conversions and NHWC Concat (no CPU op: compare with CPU transposes) ----

using cuda::DeviceBuffer;

// Runs a layer on hand-made descriptors; `inputs` hold the bytes in each
// descriptor's memory order. Returns outputs in their memory order.
std::vector<Tensor> RunLayer(const std::string& op, const std::vector<gpu::TensorDesc>& in_descs,
                             const std::vector<Tensor>& inputs,
                             const std::vector<gpu::TensorDesc>& out_descs,
                             const ir::Attributes& attrs = {}, int opset = 17) {
  ir::Graph graph;
  graph.opset_version = opset;
  std::vector<ir::Value*> ins, outs;
  for (size_t i = 0; i < in_descs.size(); ++i)
    ins.push_back(graph.AddValue("in" + std::to_string(i),
                                 ir::TensorType{in_descs[i].dtype, ir::ShapeFromDims(in_descs[i].dims)}));
  for (size_t i = 0; i < out_descs.size(); ++i)
    outs.push_back(graph.AddValue("out" + std::to_string(i),
                                  ir::TensorType{out_descs[i].dtype, ir::ShapeFromDims(out_descs[i].dims)}));
  ir::Node* node = graph.AddNode(op, "test_" + op, ins, outs);
  node->attrs = attrs;
  node->opset = opset;
  gpu::LayerInit init{*node, in_descs, out_descs,
                      std::vector<const Tensor*>(in_descs.size(), nullptr), {}, {}};
  const gpu::GpuOpDef* def = gpu::GpuLayerRegistry::Global().Find(op);
  KILN_CHECK(def, "no GPU layer for ", op);
  std::unique_ptr<gpu::Layer> layer = def->create(init);
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  gpu::LaunchArgs args;
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(inputs[i].nbytes(), in_descs[i].nbytes());
    buffers.push_back(std::make_unique<DeviceBuffer>(inputs[i].nbytes()));
    if (inputs[i].nbytes())
      KILN_CUDA_CHECK(cudaMemcpy(buffers.back()->ptr, inputs[i].raw_data(), inputs[i].nbytes(),
                                 cudaMemcpyHostToDevice));
    args.inputs.push_back(buffers.back()->ptr);
  }
  for (const gpu::TensorDesc& d : out_descs) {
    buffers.push_back(std::make_unique<DeviceBuffer>(d.nbytes()));
    if (d.nbytes()) KILN_CUDA_CHECK(cudaMemset(buffers.back()->ptr, 0xFF, d.nbytes()));
    args.outputs.push_back(buffers.back()->ptr);
  }
  for (size_t o = 0; o < out_descs.size(); ++o)  // Zero-copy views read their input.
    if (const int alias = layer->AliasOf(static_cast<int>(o)); alias >= 0)
      args.outputs[o] = const_cast<void*>(args.inputs[static_cast<size_t>(alias)]);
  layer->Enqueue(args);
  KILN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
  KILN_CUDA_CHECK(cudaGetLastError());
  std::vector<Tensor> results;
  for (size_t o = 0; o < out_descs.size(); ++o) {
    Tensor t(out_descs[o].dtype, out_descs[o].PhysicalDims());
    if (t.nbytes())
      KILN_CUDA_CHECK(
          cudaMemcpy(t.raw_data(), args.outputs[o], t.nbytes(), cudaMemcpyDeviceToHost));
    results.push_back(t);
  }
  return results;
}

gpu::TensorDesc Desc(DType dtype, Ints dims, gpu::Layout layout = gpu::Layout::kRowMajor) {
  gpu::TensorDesc d;
  d.dtype = dtype;
  d.dims = std::move(dims);
  d.layout = layout;
  return d;
}

void ExpectClose(const Tensor& got, const Tensor& want, double tol) {
  ASSERT_EQ(got.dims(), want.dims());
  ASSERT_EQ(got.dtype(), want.dtype());
  Tensor g = got.CastTo(DType::kFloat64), w = want.CastTo(DType::kFloat64);
  for (int64_t i = 0; i < w.numel(); ++i)
    ASSERT_LE(std::fabs(g.data<double>()[i] - w.data<double>()[i]),
              tol * (1 + std::fabs(w.data<double>()[i])))
        << "element " << i;
}

TEST(GpuTensorLayers, LayoutConversions) {
  KILN_REQUIRE_GPU();
  const std::vector<Ints> shapes = {{2, 3, 5, 7}, {1, 64, 9, 11}, {3, 1, 4, 4}, {2, 5, 1, 1},
                                    {8, 3, 224, 224}, {0, 3, 2, 2}};
  const std::vector<std::pair<DType, DType>> casts = {
      {DType::kFloat32, DType::kFloat32}, {DType::kFloat32, DType::kFloat16},
      {DType::kFloat32, DType::kBFloat16}, {DType::kFloat16, DType::kFloat16},
      {DType::kFloat16, DType::kFloat32},  {DType::kBFloat16, DType::kFloat32},
      {DType::kInt64, DType::kInt64}};
  for (const Ints& dims : shapes) {
    for (const auto& [from, to] : casts) {
      SCOPED_TRACE(StrCat(DimsToString(dims), " ", DTypeName(from), " -> ", DTypeName(to)));
      Tensor x = OfType(dims, from, 11);
      const double tol = (from == DType::kFloat32 && to != DType::kFloat32) ? 1e-2 : 0.0;
      // NCHW -> NHWC (with cast).
      Tensor nhwc = RunLayer("KilnToNHWC", {Desc(from, dims)}, {x},
                             {Desc(to, dims, gpu::Layout::kNHWC)})[0];
      ExpectClose(nhwc, NchwToNhwc(x).CastTo(to), tol);
      // NHWC -> NCHW (with cast).
      Tensor x_nhwc = NchwToNhwc(x);
      Tensor back = RunLayer("KilnToRowMajor", {Desc(from, dims, gpu::Layout::kNHWC)}, {x_nhwc},
                             {Desc(to, dims)})[0];
      ExpectClose(back, x.CastTo(to), tol);
    }
  }
  // A conversion that keeps the layout only casts.
  Tensor x = Rand({2, 3, 4, 5});
  Tensor same = RunLayer("KilnToRowMajor", {Desc(DType::kFloat32, {2, 3, 4, 5})}, {x},
                         {Desc(DType::kFloat16, {2, 3, 4, 5})})[0];
  ExpectClose(same, x.CastTo(DType::kFloat16), 1e-2);
  EXPECT_TRUE(gpu::GpuLayerRegistry::Global().Find("KilnToRowMajor")->accepts_nhwc);
  // One pixel per image (a global pool's output), same dtype: a view, no kernel.
  for (const auto& [dims, view] : {std::pair<Ints, bool>{{2, 5, 1, 1}, true},
                                   std::pair<Ints, bool>{{2, 5, 3, 3}, false}}) {
    ir::Graph graph;
    ir::Value* in = graph.AddValue("in", {DType::kFloat16, ir::ShapeFromDims(dims)});
    ir::Value* out = graph.AddValue("out", {DType::kFloat16, ir::ShapeFromDims(dims)});
    ir::Node* node = graph.AddNode("KilnToRowMajor", "layout", {in}, {out});
    gpu::LayerInit init{*node, {Desc(DType::kFloat16, dims, gpu::Layout::kNHWC)},
                        {Desc(DType::kFloat16, dims)}, {nullptr}, {}, {}};
    auto layer = gpu::GpuLayerRegistry::Global().Find("KilnToRowMajor")->create(init);
    EXPECT_EQ(layer->AliasOf(0), view ? 0 : -1) << DimsToString(dims);
    EXPECT_EQ(layer->KernelLaunches(), view ? 0 : 1) << DimsToString(dims);
  }
}

TEST(GpuTensorLayers, ConcatNhwc) {
  KILN_REQUIRE_GPU();
  const gpu::Layout nhwc = gpu::Layout::kNHWC, rm = gpu::Layout::kRowMajor;
  for (DType dt : {DType::kFloat32, DType::kFloat16}) {
    for (int64_t axis : {1, -3, 0, 2, 3}) {
      SCOPED_TRACE(StrCat(DTypeName(dt), " axis ", axis));
      Ints da = {2, 3, 5, 7}, db = {2, 3, 5, 7};
      const size_t ax = static_cast<size_t>(axis < 0 ? axis + 4 : axis);
      da[ax] = 4;
      db[ax] = 2;
      Tensor a = OfType(da, dt, 1), b = OfType(db, dt, 2);
      Tensor want = RunNode("Concat", {a, b}, Attrs({{"axis", axis}}))[0];
      Ints dout = want.dims();
      // All NHWC: the fast path on physical rows.
      Tensor got = RunLayer("Concat", {Desc(dt, da, nhwc), Desc(dt, db, nhwc)},
                            {NchwToNhwc(a), NchwToNhwc(b)}, {Desc(dt, dout, nhwc)},
                            Attrs({{"axis", axis}}))[0];
      ExpectClose(got, NchwToNhwc(want), 0.0);
      // Mixed layouts: strided copies.
      got = RunLayer("Concat", {Desc(dt, da, rm), Desc(dt, db, nhwc)}, {a, NchwToNhwc(b)},
                     {Desc(dt, dout, nhwc)}, Attrs({{"axis", axis}}))[0];
      ExpectClose(got, NchwToNhwc(want), 0.0);
      got = RunLayer("Concat", {Desc(dt, da, nhwc), Desc(dt, db, rm)}, {NchwToNhwc(a), b},
                     {Desc(dt, dout, rm)}, Attrs({{"axis", axis}}))[0];
      ExpectClose(got, want, 0.0);
    }
  }
}

}  // namespace
}  // namespace kiln
