// Tests of the neural-network operators against naive reference loops
// written here, hand-computed values and the ONNX spec's examples.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kiln/error.h"
#include "ops/registry.h"
#include "test_util.h"

namespace kiln {
namespace {

using testing::MaxAbsoluteError;
using testing::RandomTensor;
using testing::RunNode;

Tensor Run1(const std::string& op, const std::vector<Tensor>& inputs, const ir::Attributes& attrs,
            int opset = 17) {
  return RunNode(op, inputs, attrs, 1, opset).at(0);
}

Tensor Iota(std::vector<int64_t> dims, float start = 0.f) {
  Tensor t(DType::kFloat32, std::move(dims));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + static_cast<float>(i);
  return t;
}

Tensor Filled(std::vector<int64_t> dims, float value) {
  Tensor t(DType::kFloat32, std::move(dims));
  std::fill(t.data<float>(), t.data<float>() + t.numel(), value);
  return t;
}

void ExpectValues(const Tensor& t, const std::vector<int64_t>& dims, const std::vector<float>& v,
                  float tolerance = 1e-5f) {
  ASSERT_EQ(t.dims(), dims);
  std::vector<float> actual = t.ToFloatVector();
  ASSERT_EQ(actual.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(actual[i], v[i], tolerance) << "element " << i;
}

// ---- Naive references (up to 3 spatial dims, padded to 3-D) ----

struct Spatial3 {
  int64_t d = 1, h = 1, w = 1;
};
Spatial3 To3(const std::vector<int64_t>& v, int64_t fill) {
  Spatial3 s{fill, fill, fill};
  const size_t r = v.size();
  if (r >= 1) s.w = v[r - 1];
  if (r >= 2) s.h = v[r - 2];
  if (r >= 3) s.d = v[r - 3];
  return s;
}

struct ConvParams {
  int64_t group = 1;
  std::vector<int64_t> strides, dilations, pads;  // Empty: defaults.
};

// Direct convolution: y[n, m, o] = b[m] + sum_{c, k} x[n, g*Cg + c, o*s - p + k*d] * w[m, c, k].
Tensor NaiveConv(const Tensor& x, const Tensor& w, const Tensor* b, const ConvParams& p) {
  const int r = x.rank() - 2;
  std::vector<int64_t> ones(r, 1), zeros(r, 0);
  std::vector<int64_t> xs(x.dims().begin() + 2, x.dims().end()), ks(w.dims().begin() + 2, w.dims().end());
  std::vector<int64_t> pads = p.pads.empty() ? std::vector<int64_t>(2 * r, 0) : p.pads;
  Spatial3 in = To3(xs, 1), k = To3(ks, 1);
  Spatial3 s = To3(p.strides.empty() ? ones : p.strides, 1);
  Spatial3 dl = To3(p.dilations.empty() ? ones : p.dilations, 1);
  Spatial3 pb = To3(std::vector<int64_t>(pads.begin(), pads.begin() + r), 0);
  Spatial3 pe = To3(std::vector<int64_t>(pads.begin() + r, pads.end()), 0);
  auto out_size = [](int64_t i, int64_t kk, int64_t ss, int64_t dd, int64_t b0, int64_t e0) {
    return (i + b0 + e0 - dd * (kk - 1) - 1) / ss + 1;
  };
  Spatial3 o{out_size(in.d, k.d, s.d, dl.d, pb.d, pe.d), out_size(in.h, k.h, s.h, dl.h, pb.h, pe.h),
             out_size(in.w, k.w, s.w, dl.w, pb.w, pe.w)};
  const int64_t n_batch = x.dim(0), channels = x.dim(1), m_out = w.dim(0);
  const int64_t cg = channels / p.group, mg = m_out / p.group;
  std::vector<int64_t> out_dims = {n_batch, m_out};
  std::vector<int64_t> o3 = {o.d, o.h, o.w};
  for (int i = 3 - r; i < 3; ++i) out_dims.push_back(o3[i]);
  Tensor y(DType::kFloat32, out_dims);
  const float* xd = x.data<float>();
  const float* wd = w.data<float>();
  float* yd = y.data<float>();
  for (int64_t n = 0; n < n_batch; ++n)
    for (int64_t m = 0; m < m_out; ++m)
      for (int64_t od = 0; od < o.d; ++od)
        for (int64_t oh = 0; oh < o.h; ++oh)
          for (int64_t ow = 0; ow < o.w; ++ow) {
            double acc = b ? b->data<float>()[m] : 0.0;
            const int64_t g = m / mg;
            for (int64_t c = 0; c < cg; ++c)
              for (int64_t kd = 0; kd < k.d; ++kd)
                for (int64_t kh = 0; kh < k.h; ++kh)
                  for (int64_t kw = 0; kw < k.w; ++kw) {
                    int64_t id = od * s.d - pb.d + kd * dl.d, ih = oh * s.h - pb.h + kh * dl.h,
                            iw = ow * s.w - pb.w + kw * dl.w;
                    if (id < 0 || id >= in.d || ih < 0 || ih >= in.h || iw < 0 || iw >= in.w) continue;
                    acc += static_cast<double>(
                               xd[(((n * channels + g * cg + c) * in.d + id) * in.h + ih) * in.w + iw]) *
                           wd[(((m * cg + c) * k.d + kd) * k.h + kh) * k.w + kw];
                  }
            yd[(((n * m_out + m) * o.d + od) * o.h + oh) * o.w + ow] = static_cast<float>(acc);
          }
  return y;
}

ir::Attributes ConvAttrs(const ConvParams& p) {
  ir::Attributes a;
  if (p.group != 1) a.set("group", p.group);
  if (!p.strides.empty()) a.set("strides", p.strides);
  if (!p.dilations.empty()) a.set("dilations", p.dilations);
  if (!p.pads.empty()) a.set("pads", p.pads);
  return a;
}

// Direct transposed convolution: scatter x[n, c, i] * w[c, m, k] to the full
// index i*s + k*d, then output o reads full index o + pad_begin.
Tensor NaiveConvTranspose(const Tensor& x, const Tensor& w, const Tensor* b, int64_t group,
                          const std::vector<int64_t>& strides, const std::vector<int64_t>& dilations,
                          const std::vector<int64_t>& pad_begin, const std::vector<int64_t>& out_spatial) {
  const int r = x.rank() - 2;
  std::vector<int64_t> xs(x.dims().begin() + 2, x.dims().end()), ks(w.dims().begin() + 2, w.dims().end());
  Spatial3 in = To3(xs, 1), k = To3(ks, 1), s = To3(strides, 1), dl = To3(dilations, 1),
           pb = To3(pad_begin, 0), o = To3(out_spatial, 1);
  (void)r;
  const int64_t n_batch = x.dim(0), channels = x.dim(1), mg = w.dim(1), m_out = mg * group;
  const int64_t cg = channels / group;
  std::vector<int64_t> out_dims = {n_batch, m_out};
  out_dims.insert(out_dims.end(), out_spatial.begin(), out_spatial.end());
  Tensor y = Filled(out_dims, 0.f);
  float* yd = y.data<float>();
  for (int64_t n = 0; n < n_batch; ++n)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t m = 0; m < mg; ++m)
        for (int64_t id = 0; id < in.d; ++id)
          for (int64_t ih = 0; ih < in.h; ++ih)
            for (int64_t iw = 0; iw < in.w; ++iw)
              for (int64_t kd = 0; kd < k.d; ++kd)
                for (int64_t kh = 0; kh < k.h; ++kh)
                  for (int64_t kw = 0; kw < k.w; ++kw) {
                    int64_t od = id * s.d + kd * dl.d - pb.d, oh = ih * s.h + kh * dl.h - pb.h,
                            ow = iw * s.w + kw * dl.w - pb.w;
                    if (od < 0 || od >= o.d || oh < 0 || oh >= o.h || ow < 0 || ow >= o.w) continue;
                    const int64_t g = c / cg, mo = g * mg + m;
                    yd[(((n * m_out + mo) * o.d + od) * o.h + oh) * o.w + ow] +=
                        x.data<float>()[(((n * channels + c) * in.d + id) * in.h + ih) * in.w + iw] *
                        w.data<float>()[(((c * mg + m) * k.d + kd) * k.h + kh) * k.w + kw];
                  }
  if (b)
    for (int64_t i = 0; i < y.numel(); ++i)
      yd[i] += b->data<float>()[(i / (o.d * o.h * o.w)) % m_out];
  return y;
}

// ---- Conv ----

TEST(NnConv, SpecExampleWithAndWithoutPadding) {
  Tensor x = Iota({1, 1, 5, 5});
  Tensor w = Filled({1, 1, 3, 3}, 1.f);
  ir::Attributes padded;
  padded.set("kernel_shape", std::vector<int64_t>{3, 3});
  padded.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  ExpectValues(Run1("Conv", {x, w}, padded), {1, 1, 5, 5},
               {12, 21, 27, 33, 24, 33, 54, 63, 72, 51, 63, 99, 108, 117, 81,
                93, 144, 153, 162, 111, 72, 111, 117, 123, 84});
  ExpectValues(Run1("Conv", {x, w}, {}), {1, 1, 3, 3}, {54, 63, 72, 99, 108, 117, 144, 153, 162});
  // Strides 2 with asymmetric padding (spec example).
  ir::Attributes asym;
  asym.set("strides", std::vector<int64_t>{2, 2});
  asym.set("pads", std::vector<int64_t>{1, 0, 1, 0});
  ExpectValues(Run1("Conv", {Iota({1, 1, 7, 5}), w}, asym), {1, 1, 4, 2},
               {21, 33, 99, 117, 189, 207, 171, 183});
}

struct ConvCase {
  std::string name;
  std::vector<int64_t> x_dims, w_dims;
  ConvParams params;
  bool bias;
};

TEST(NnConv, MatchesNaiveConvolution) {
  const std::vector<ConvCase> cases = {
      {"2d_basic", {2, 3, 9, 8}, {4, 3, 3, 3}, {}, true},
      {"2d_strided_padded", {1, 3, 10, 9}, {5, 3, 3, 2}, {1, {2, 3}, {}, {1, 0, 2, 1}}, true},
      {"2d_dilated", {1, 2, 11, 12}, {3, 2, 3, 3}, {1, {1, 2}, {2, 3}, {2, 2, 1, 1}}, false},
      {"2d_groups", {2, 6, 7, 7}, {9, 2, 3, 3}, {3, {1, 1}, {}, {1, 1, 1, 1}}, true},
      {"2d_depthwise", {2, 4, 9, 9}, {4, 1, 3, 3}, {4, {2, 2}, {}, {1, 1, 1, 1}}, true},
      {"2d_depthwise_multiplier", {1, 3, 8, 7}, {6, 1, 3, 3}, {3, {1, 2}, {2, 1}, {0, 1, 2, 1}}, true},
      {"2d_pointwise", {2, 8, 5, 6}, {4, 8, 1, 1}, {}, true},
      {"2d_pointwise_strided", {1, 8, 6, 6}, {4, 8, 1, 1}, {1, {2, 2}, {}, {}}, false},
      {"1d", {2, 3, 17}, {4, 3, 5}, {1, {2}, {2}, {3, 1}}, true},
      {"1d_groups", {1, 4, 10}, {6, 2, 3}, {2, {1}, {}, {1, 1}}, true},
      {"3d", {1, 2, 5, 6, 7}, {3, 2, 3, 2, 3}, {1, {1, 2, 1}, {1, 1, 2}, {1, 0, 1, 0, 1, 1}}, true},
      {"3d_groups", {1, 4, 4, 5, 5}, {4, 2, 2, 3, 3}, {2, {2, 1, 2}, {}, {}}, false},
  };
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor x = RandomTensor(c.x_dims, -1, 1, 3);
    Tensor w = RandomTensor(c.w_dims, -1, 1, 4);
    Tensor b = RandomTensor({c.w_dims[0]}, -1, 1, 5);
    std::vector<Tensor> inputs = {x, w};
    if (c.bias) inputs.push_back(b);
    Tensor y = Run1("Conv", inputs, ConvAttrs(c.params));
    Tensor expected = NaiveConv(x, w, c.bias ? &b : nullptr, c.params);
    EXPECT_EQ(y.dims(), expected.dims());
    EXPECT_LT(MaxAbsoluteError(y, expected), 1e-4);
  }
}

TEST(NnConv, AutoPadSameAndValid) {
  Tensor x = RandomTensor({1, 2, 7, 8}, -1, 1, 7);
  Tensor w = RandomTensor({3, 2, 3, 4}, -1, 1, 8);
  // SAME with stride 2: out = ceil(in/2) = [4, 4]; total pad H = 3*2+3-7 = 2 -> 1/1,
  // W = 3*2+4-8 = 2 -> 1/1. With stride 1: out = in, total H = 2 -> 1/1, W = 3.
  struct Case {
    std::string auto_pad;
    std::vector<int64_t> strides, pads;
  };
  for (const Case& c : std::vector<Case>{{"SAME_UPPER", {2, 2}, {1, 1, 1, 1}},
                                          {"SAME_UPPER", {1, 1}, {1, 1, 1, 2}},
                                          {"SAME_LOWER", {1, 1}, {1, 2, 1, 1}},
                                          {"VALID", {2, 3}, {0, 0, 0, 0}}}) {
    SCOPED_TRACE(c.auto_pad);
    ir::Attributes a;
    a.set("auto_pad", c.auto_pad);
    a.set("strides", c.strides);
    Tensor y = Run1("Conv", {x, w}, a);
    ConvParams p{1, c.strides, {}, c.pads};
    Tensor expected = NaiveConv(x, w, nullptr, p);
    EXPECT_EQ(y.dims(), expected.dims());
    EXPECT_LT(MaxAbsoluteError(y, expected), 1e-4);
  }
}

TEST(NnConv, Float16RunsThroughFloat32) {
  Tensor x = RandomTensor({1, 2, 5, 5}, -1, 1, 9);
  Tensor w = RandomTensor({2, 2, 3, 3}, -1, 1, 10);
  Tensor y = Run1("Conv", {x.CastTo(DType::kFloat16), w.CastTo(DType::kFloat16)}, {});
  EXPECT_EQ(y.dtype(), DType::kFloat16);
  Tensor expected = NaiveConv(x.CastTo(DType::kFloat16).CastTo(DType::kFloat32),
                              w.CastTo(DType::kFloat16).CastTo(DType::kFloat32), nullptr, {});
  EXPECT_LT(MaxAbsoluteError(y, expected), 1e-2);
}

TEST(NnConv, RejectsBadShapes) {
  Tensor x = RandomTensor({1, 4, 5, 5});
  // Channel mismatch: weight expects 3 input channels.
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({2, 3, 3, 3})}, {}), Error);
  // Output channels not divisible by group.
  ir::Attributes g2;
  g2.set("group", int64_t{2});
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({3, 2, 3, 3})}, g2), Error);
  // Input channels do not match group * weight channels.
  ir::Attributes g3;
  g3.set("group", int64_t{3});
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({3, 2, 3, 3})}, g3), Error);
  // Rank mismatch, too-large kernel, wrong-size bias, wrong-length attributes.
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({2, 4, 3})}, {}), Error);
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({2, 4, 7, 7})}, {}), Error);
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({2, 4, 3, 3}), RandomTensor({3})}, {}), Error);
  ir::Attributes bad_strides;
  bad_strides.set("strides", std::vector<int64_t>{1, 1, 1});
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({2, 4, 3, 3})}, bad_strides), Error);
  ir::Attributes zero_stride;
  zero_stride.set("strides", std::vector<int64_t>{0, 1});
  EXPECT_THROW(Run1("Conv", {x, RandomTensor({2, 4, 3, 3})}, zero_stride), Error);
  EXPECT_THROW(Run1("Conv", {RandomTensor({4, 5}), RandomTensor({2, 4})}, {}), Error);
}

TEST(NnConv, SymbolicBatchInferenceAndFlops) {
  ir::Graph graph;
  graph.opset_version = 17;
  ir::Value* x = graph.AddValue(
      "x", {DType::kFloat32, ir::Shape{ir::Dim::Symbol("batch"), ir::Dim::Known(3),
                                       ir::Dim::Known(224), ir::Dim::Unknown()}});
  ir::Value* w = graph.AddConstant("w", RandomTensor({64, 3, 7, 7}));
  ir::Value* y = graph.AddValue("y");
  ir::Node* node = graph.AddNode("Conv", "conv", {x, w}, {y});
  node->opset = 17;
  node->attrs.set("strides", std::vector<int64_t>{2, 2});
  node->attrs.set("pads", std::vector<int64_t>{3, 3, 3, 3});
  std::vector<ir::TensorType> out =
      InferNode(*node, {&x->type, &w->type}, {nullptr, &w->constant});
  ASSERT_TRUE(out[0].has_rank());
  EXPECT_EQ(ir::ShapeToString(*out[0].shape), "[batch,64,112,?]");

  const OpDef* def = OpRegistry::Global().Find("Conv");
  ASSERT_TRUE(def && def->flops);
  ir::TensorType xt = ir::TensorType::Of(RandomTensor({1, 3, 224, 224}));
  ir::TensorType wt = ir::TensorType::Of(RandomTensor({64, 3, 7, 7}));
  ir::TensorType yt = {DType::kFloat32, ir::ShapeFromDims({1, 64, 112, 112})};
  EXPECT_DOUBLE_EQ(def->flops(*node, {xt, wt}, {yt}), 2.0 * 64 * 112 * 112 * 3 * 7 * 7);
}

// ---- ConvTranspose ----

TEST(NnConvTranspose, SpecExample) {
  Tensor x = Iota({1, 1, 3, 3});
  Tensor w = Filled({1, 2, 3, 3}, 1.f);
  const std::vector<float> plane = {0,  1,  3,  3,  2,  3,  8,  15, 12, 7,  9, 21, 36,
                                    27, 15, 9,  20, 33, 24, 13, 6,  13, 21, 15, 8};
  std::vector<float> expected = plane;
  expected.insert(expected.end(), plane.begin(), plane.end());
  ExpectValues(Run1("ConvTranspose", {x, w}, {}), {1, 2, 5, 5}, expected);
}

TEST(NnConvTranspose, MatchesNaive) {
  struct Case {
    std::string name;
    std::vector<int64_t> x_dims, w_dims;
    int64_t group;
    std::vector<int64_t> strides, dilations, pads, output_padding;
  };
  const std::vector<Case> cases = {
      {"2d_stride", {2, 3, 4, 5}, {3, 2, 3, 3}, 1, {2, 3}, {1, 1}, {0, 0, 0, 0}, {0, 0}},
      {"2d_pads_output_padding", {1, 2, 4, 4}, {2, 3, 3, 3}, 1, {3, 2}, {1, 1}, {1, 2, 1, 0}, {1, 1}},
      {"2d_dilation", {1, 1, 3, 3}, {1, 2, 2, 2}, 1, {1, 1}, {2, 2}, {0, 0, 0, 0}, {0, 0}},
      {"2d_groups", {1, 4, 3, 4}, {4, 3, 3, 2}, 2, {2, 2}, {1, 1}, {1, 0, 0, 1}, {1, 0}},
      {"1d", {2, 2, 6}, {2, 3, 4}, 1, {2}, {2}, {1, 2}, {1}},
      {"3d", {1, 2, 3, 3, 4}, {2, 2, 2, 3, 3}, 1, {2, 1, 2}, {1, 2, 1}, {0, 1, 1, 1, 0, 0},
       {1, 0, 1}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor x = RandomTensor(c.x_dims, -1, 1, 11);
    Tensor w = RandomTensor(c.w_dims, -1, 1, 12);
    Tensor b = RandomTensor({c.w_dims[1] * c.group}, -1, 1, 13);
    ir::Attributes a;
    a.set("group", c.group);
    a.set("strides", c.strides);
    a.set("dilations", c.dilations);
    a.set("pads", c.pads);
    a.set("output_padding", c.output_padding);
    Tensor y = Run1("ConvTranspose", {x, w, b}, a);
    const size_t r = c.strides.size();
    std::vector<int64_t> out, pad_begin(c.pads.begin(), c.pads.begin() + r);
    for (size_t i = 0; i < r; ++i)
      out.push_back(c.strides[i] * (c.x_dims[2 + i] - 1) + c.output_padding[i] +
                    c.dilations[i] * (c.w_dims[2 + i] - 1) + 1 - c.pads[i] - c.pads[r + i]);
    Tensor expected = NaiveConvTranspose(x, w, &b, c.group, c.strides, c.dilations, pad_begin, out);
    EXPECT_EQ(y.dims(), expected.dims());
    EXPECT_LT(MaxAbsoluteError(y, expected), 1e-4);
  }
}

TEST(NnConvTranspose, OutputShapeAndAutoPad) {
  Tensor x = RandomTensor({1, 1, 3, 3}, -1, 1, 14);
  Tensor w = RandomTensor({1, 2, 3, 3}, -1, 1, 15);
  // output_shape [10, 8] with strides [3, 2]: full sizes are 9 and 7, so the
  // output extends one past the full result at the end (filled with zeros).
  ir::Attributes a;
  a.set("strides", std::vector<int64_t>{3, 2});
  a.set("output_shape", std::vector<int64_t>{10, 8});
  Tensor y = Run1("ConvTranspose", {x, w}, a);
  Tensor expected = NaiveConvTranspose(x, w, nullptr, 1, {3, 2}, {1, 1}, {0, 0}, {10, 8});
  EXPECT_LT(MaxAbsoluteError(y, expected), 1e-5);
  // SAME_UPPER, stride 2: out = 6, full 7, crop 1 at the end.
  ir::Attributes same;
  same.set("strides", std::vector<int64_t>{2, 2});
  same.set("auto_pad", std::string("SAME_UPPER"));
  expected = NaiveConvTranspose(x, w, nullptr, 1, {2, 2}, {1, 1}, {0, 0}, {6, 6});
  EXPECT_LT(MaxAbsoluteError(Run1("ConvTranspose", {x, w}, same), expected), 1e-5);
  same.set("auto_pad", std::string("SAME_LOWER"));
  expected = NaiveConvTranspose(x, w, nullptr, 1, {2, 2}, {1, 1}, {1, 1}, {6, 6});
  EXPECT_LT(MaxAbsoluteError(Run1("ConvTranspose", {x, w}, same), expected), 1e-5);
}

TEST(NnConvTranspose, RejectsBadShapes) {
  Tensor x = RandomTensor({1, 4, 3, 3});
  EXPECT_THROW(Run1("ConvTranspose", {x, RandomTensor({3, 2, 3, 3})}, {}), Error);
  ir::Attributes g3;
  g3.set("group", int64_t{3});
  EXPECT_THROW(Run1("ConvTranspose", {x, RandomTensor({4, 2, 3, 3})}, g3), Error);
  ir::Attributes big_pads;
  big_pads.set("pads", std::vector<int64_t>{5, 5, 5, 5});
  EXPECT_THROW(Run1("ConvTranspose", {x, RandomTensor({4, 2, 3, 3})}, big_pads), Error);
}

// ---- Pooling ----

ir::Attributes PoolAttrs(std::vector<int64_t> kernel, std::vector<int64_t> strides = {},
                         std::vector<int64_t> pads = {}) {
  ir::Attributes a;
  a.set("kernel_shape", std::move(kernel));
  if (!strides.empty()) a.set("strides", std::move(strides));
  if (!pads.empty()) a.set("pads", std::move(pads));
  return a;
}

TEST(NnPool, CeilModeSpecExamples) {
  Tensor x = Iota({1, 1, 4, 4}, 1.f);
  ir::Attributes a = PoolAttrs({3, 3}, {2, 2});
  a.set("ceil_mode", int64_t{1});
  ExpectValues(Run1("MaxPool", {x}, a), {1, 1, 2, 2}, {11, 12, 15, 16});
  ExpectValues(Run1("AveragePool", {x}, a), {1, 1, 2, 2}, {6, 7.5, 12, 13.5});
  a.set("ceil_mode", int64_t{0});
  ExpectValues(Run1("MaxPool", {x}, a), {1, 1, 1, 1}, {11});
}

TEST(NnPool, AveragePoolPadsAndCountIncludePad) {
  Tensor x = Iota({1, 1, 3, 3}, 1.f);
  ir::Attributes a = PoolAttrs({2, 2}, {1, 1}, {1, 1, 1, 1});
  // Corner window holds only x[0,0] = 1: 1/1 excluding pads, 1/4 including them.
  Tensor excl = Run1("AveragePool", {x}, a);
  ASSERT_EQ(excl.dims(), (std::vector<int64_t>{1, 1, 4, 4}));
  EXPECT_FLOAT_EQ(excl.data<float>()[0], 1.f);
  EXPECT_FLOAT_EQ(excl.data<float>()[1], 1.5f);  // (1 + 2) / 2
  EXPECT_FLOAT_EQ(excl.data<float>()[5], 3.f);   // (1 + 2 + 4 + 5) / 4
  a.set("count_include_pad", int64_t{1});
  Tensor incl = Run1("AveragePool", {x}, a);
  EXPECT_FLOAT_EQ(incl.data<float>()[0], 0.25f);
  EXPECT_FLOAT_EQ(incl.data<float>()[1], 0.75f);
  EXPECT_FLOAT_EQ(incl.data<float>()[5], 3.f);
  EXPECT_FLOAT_EQ(incl.data<float>()[15], 9.f / 4);
}

// Naive 2-D pooling reference for random comparisons.
Tensor NaivePool2D(const Tensor& x, bool is_max, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                   int64_t dh, int64_t dw, int64_t pt, int64_t pl, int64_t oh_n, int64_t ow_n,
                   bool include_pad, int64_t pb, int64_t pr) {
  const int64_t planes = x.dim(0) * x.dim(1), h = x.dim(2), w = x.dim(3);
  Tensor y(DType::kFloat32, {x.dim(0), x.dim(1), oh_n, ow_n});
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < oh_n; ++oh)
      for (int64_t ow = 0; ow < ow_n; ++ow) {
        float best = -std::numeric_limits<float>::infinity();
        double sum = 0;
        int64_t count = 0, padded = 0;
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j) {
            int64_t ih = oh * sh - pt + i * dh, iw = ow * sw - pl + j * dw;
            if (ih >= -pt && ih < h + pb && iw >= -pl && iw < w + pr) ++padded;
            if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
            float v = x.data<float>()[(p * h + ih) * w + iw];
            best = std::max(best, v);
            sum += v;
            ++count;
          }
        y.data<float>()[(p * oh_n + oh) * ow_n + ow] =
            is_max ? best : static_cast<float>(sum / static_cast<double>(include_pad ? padded : count));
      }
  return y;
}

TEST(NnPool, MatchesNaiveWithStridesPadsDilations) {
  Tensor x = RandomTensor({2, 3, 9, 10}, -1, 1, 21);
  ir::Attributes a = PoolAttrs({3, 2}, {2, 3}, {1, 0, 2, 1});
  a.set("dilations", std::vector<int64_t>{2, 1});
  // H: (9 + 3 - 5) / 2 + 1 = 4; W: (10 + 1 - 2) / 3 + 1 = 4.
  EXPECT_LT(MaxAbsoluteError(Run1("MaxPool", {x}, a),
                             NaivePool2D(x, true, 3, 2, 2, 3, 2, 1, 1, 0, 4, 4, false, 2, 1)),
            1e-6);
  EXPECT_LT(MaxAbsoluteError(Run1("AveragePool", {x}, a, 19),
                             NaivePool2D(x, false, 3, 2, 2, 3, 2, 1, 1, 0, 4, 4, false, 2, 1)),
            1e-6);
  a.set("count_include_pad", int64_t{1});
  EXPECT_LT(MaxAbsoluteError(Run1("AveragePool", {x}, a, 19),
                             NaivePool2D(x, false, 3, 2, 2, 3, 2, 1, 1, 0, 4, 4, true, 2, 1)),
            1e-6);
  // SAME_UPPER: out = ceil(9/2), ceil(10/2) = 5, 5; pads H total 2*4+3-9 = 2 -> 1/1,
  // W total 4*2+3-10 = 1 -> 0/1.
  ir::Attributes same = PoolAttrs({3, 3}, {2, 2});
  same.set("auto_pad", std::string("SAME_UPPER"));
  EXPECT_LT(MaxAbsoluteError(Run1("AveragePool", {x}, same),
                             NaivePool2D(x, false, 3, 3, 2, 2, 1, 1, 1, 0, 5, 5, false, 1, 1)),
            1e-6);
  same.set("auto_pad", std::string("SAME_LOWER"));
  EXPECT_LT(MaxAbsoluteError(Run1("MaxPool", {x}, same),
                             NaivePool2D(x, true, 3, 3, 2, 2, 1, 1, 1, 1, 5, 5, false, 1, 0)),
            1e-6);
}

TEST(NnPool, MaxPoolIndicesBothStorageOrders) {
  Tensor x = Iota({1, 1, 5, 5}, 1.f);
  ir::Attributes a = PoolAttrs({2, 2}, {2, 2});
  std::vector<Tensor> out = RunNode("MaxPool", {x}, a, 2, 12);
  ExpectValues(out[0], {1, 1, 2, 2}, {7, 9, 17, 19});
  EXPECT_EQ(out[1].dtype(), DType::kInt64);
  EXPECT_EQ(out[1].ToInt64Vector(), (std::vector<int64_t>{6, 8, 16, 18}));
  a.set("storage_order", int64_t{1});
  out = RunNode("MaxPool", {x}, a, 2, 12);
  EXPECT_EQ(out[1].ToInt64Vector(), (std::vector<int64_t>{6, 16, 8, 18}));
  // Batch and channel offsets count in the flat index.
  Tensor x2 = Iota({2, 2, 2, 2});
  out = RunNode("MaxPool", {x2}, PoolAttrs({2, 2}), 2, 12);
  EXPECT_EQ(out[1].ToInt64Vector(), (std::vector<int64_t>{3, 7, 11, 15}));
}

TEST(NnPool, OneAndThreeDimsAndUInt8) {
  Tensor x1 = Tensor::FromFloats({1, 1, 6}, {1, 5, 2, 8, 3, 0});
  ExpectValues(Run1("MaxPool", {x1}, PoolAttrs({2}, {2})), {1, 1, 3}, {5, 8, 3});
  ExpectValues(Run1("AveragePool", {x1}, PoolAttrs({3}, {3})), {1, 1, 2}, {8.f / 3, 11.f / 3});
  Tensor x3 = Iota({1, 1, 2, 2, 2});
  ExpectValues(Run1("AveragePool", {x3}, PoolAttrs({2, 2, 2})), {1, 1, 1, 1, 1}, {3.5f});
  ExpectValues(Run1("MaxPool", {x3}, PoolAttrs({2, 1, 2})), {1, 1, 1, 2, 1}, {5, 7});
  Tensor u8 = Iota({1, 1, 2, 2}).CastTo(DType::kUInt8);
  Tensor y = Run1("MaxPool", {u8}, PoolAttrs({2, 2}));
  EXPECT_EQ(y.dtype(), DType::kUInt8);
  EXPECT_EQ(y.GetAsInt64(0), 3);
}

TEST(NnPool, GlobalPools) {
  Tensor x = Iota({2, 3, 2, 2});
  Tensor avg = Run1("GlobalAveragePool", {x}, {});
  ExpectValues(avg, {2, 3, 1, 1}, {1.5, 5.5, 9.5, 13.5, 17.5, 21.5});
  ExpectValues(Run1("GlobalMaxPool", {x}, {}), {2, 3, 1, 1}, {3, 7, 11, 15, 19, 23});
  ExpectValues(Run1("GlobalAveragePool", {Iota({1, 2, 3})}, {}), {1, 2, 1}, {1, 4});
}

TEST(NnPool, RejectsBadAttributes) {
  Tensor x = RandomTensor({1, 1, 4, 4});
  EXPECT_THROW(Run1("MaxPool", {x}, {}), Error);                        // No kernel_shape.
  EXPECT_THROW(Run1("MaxPool", {x}, PoolAttrs({2})), Error);            // Wrong length.
  EXPECT_THROW(Run1("AveragePool", {x}, PoolAttrs({5, 5})), Error);     // Larger than input.
  EXPECT_THROW(Run1("MaxPool", {x}, PoolAttrs({2, 2}, {}, {1, 1})), Error);  // Bad pads.
  EXPECT_THROW(Run1("MaxPool", {RandomTensor({4, 4})}, PoolAttrs({2})), Error);
  ir::Attributes bad = PoolAttrs({2, 2});
  bad.set("auto_pad", std::string("SAME"));
  EXPECT_THROW(Run1("MaxPool", {x}, bad), Error);
}

// ---- Normalization ----

TEST(NnBatchNorm, InferenceFormula) {
  Tensor x = Tensor::FromFloats({1, 2, 1, 3}, {-1, 0, 1, 2, 4, 6});
  Tensor scale = Tensor::FromFloats({2}, {1.0f, 1.5f});
  Tensor bias = Tensor::FromFloats({2}, {0.f, 1.f});
  Tensor mean = Tensor::FromFloats({2}, {0.f, 3.f});
  Tensor var = Tensor::FromFloats({2}, {1.f, 1.5f});
  ir::Attributes a;
  a.set("epsilon", 1e-5f);
  Tensor y = Run1("BatchNormalization", {x, scale, bias, mean, var}, a, 15);
  std::vector<float> expected;
  for (int c = 0; c < 2; ++c)
    for (int i = 0; i < 3; ++i) {
      float xv = x.data<float>()[c * 3 + i];
      expected.push_back((xv - mean.data<float>()[c]) / std::sqrt(var.data<float>()[c] + 1e-5f) *
                             scale.data<float>()[c] + bias.data<float>()[c]);
    }
  ExpectValues(y, {1, 2, 1, 3}, expected);
  // Opset 7 per-activation parameters (spatial = 0).
  Tensor ones6 = Filled({2, 1, 3}, 1.f), zeros6 = Filled({2, 1, 3}, 0.f);
  ir::Attributes spatial0;
  spatial0.set("spatial", int64_t{0});
  spatial0.set("epsilon", 0.f);
  Tensor mean6 = Tensor::FromFloats({2, 1, 3}, {1, 1, 1, 2, 2, 2});
  ExpectValues(Run1("BatchNormalization", {x, ones6, zeros6, mean6, ones6}, spatial0, 7),
               {1, 2, 1, 3}, {-2, -1, 0, 0, 2, 4});
}

TEST(NnBatchNorm, RejectsTrainingMode) {
  Tensor x = RandomTensor({1, 2, 2, 2});
  Tensor p = Filled({2}, 1.f);
  ir::Attributes a;
  a.set("training_mode", int64_t{1});
  EXPECT_THROW(Run1("BatchNormalization", {x, p, p, p, p}, a, 15), Error);
  EXPECT_THROW(RunNode("BatchNormalization", {x, p, p, p, p}, {}, 3, 15), Error);
  EXPECT_THROW(Run1("BatchNormalization", {x, Filled({3}, 1.f), p, p, p}, {}, 15), Error);
}

TEST(NnBatchNorm, Opset6IsTest) {
  // BatchNormalization-6: is_test=1 selects the inference formula; the
  // default is_test=0 (training, batch statistics) is rejected.
  Tensor x = Tensor::FromFloats({1, 2, 3}, {-1, 0, 1, 2, 4, 6});
  Tensor scale = Tensor::FromFloats({2}, {2.f, 1.f});
  Tensor bias = Tensor::FromFloats({2}, {0.f, 1.f});
  Tensor mean = Tensor::FromFloats({2}, {1.f, 4.f});
  Tensor var = Tensor::FromFloats({2}, {4.f, 1.f});
  ir::Attributes a;
  a.set("is_test", int64_t{1});
  a.set("epsilon", 0.f);
  a.set("momentum", 0.9f);
  // (x - mean) / sqrt(var) * scale + bias, per channel.
  ExpectValues(Run1("BatchNormalization", {x, scale, bias, mean, var}, a, 6), {1, 2, 3},
               {-2, -1, 0, -1, 1, 3});
  // consumed_inputs (opset 1) is ignored.
  ir::Attributes a1 = a;
  a1.set("consumed_inputs", std::vector<int64_t>{0, 0, 0, 1, 1});
  ExpectValues(Run1("BatchNormalization", {x, scale, bias, mean, var}, a1, 1), {1, 2, 3},
               {-2, -1, 0, -1, 1, 3});
  EXPECT_THROW(Run1("BatchNormalization", {x, scale, bias, mean, var}, {}, 6), Error);
  ir::Attributes training;
  training.set("is_test", int64_t{0});
  EXPECT_THROW(Run1("BatchNormalization", {x, scale, bias, mean, var}, training, 6), Error);
}

TEST(NnOldOpset, ConvPoolGemmAcceptOpset1And6) {
  // These ops mean the same before opset 7; check values at the old opsets
  // match the opset-17 results.
  Tensor x = RandomTensor({1, 2, 5, 5}, -1, 1, 41);
  Tensor w = RandomTensor({3, 2, 3, 3}, -1, 1, 42);
  Tensor b = RandomTensor({3}, -1, 1, 43);
  ir::Attributes conv;
  conv.set("kernel_shape", std::vector<int64_t>{3, 3});
  conv.set("pads", std::vector<int64_t>{1, 1, 1, 1});
  conv.set("strides", std::vector<int64_t>{2, 2});
  EXPECT_EQ(MaxAbsoluteError(Run1("Conv", {x, w, b}, conv, 6), Run1("Conv", {x, w, b}, conv)),
            0.0);
  ir::Attributes pool;
  pool.set("kernel_shape", std::vector<int64_t>{2, 2});
  pool.set("pads", std::vector<int64_t>{0, 0, 1, 1});
  pool.set("strides", std::vector<int64_t>{2, 2});
  for (const char* op : {"MaxPool", "AveragePool"})
    EXPECT_EQ(MaxAbsoluteError(Run1(op, {x}, pool, 1), Run1(op, {x}, pool)), 0.0) << op;
  // AveragePool before opset 7 has no count_include_pad: padding is excluded.
  Tensor ones = Filled({1, 1, 3, 3}, 1.f);
  ExpectValues(Run1("AveragePool", {ones}, pool, 6), {1, 1, 2, 2}, {1, 1, 1, 1});
  ExpectValues(Run1("GlobalAveragePool", {Iota({1, 2, 2, 2})}, {}, 1), {1, 2, 1, 1}, {1.5f, 5.5f});
  ExpectValues(Run1("GlobalMaxPool", {Iota({1, 2, 2, 2})}, {}, 1), {1, 2, 1, 1}, {3, 7});

  // Gemm-6 with broadcast=1: C of shape (N) is added to every row.
  Tensor a = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  Tensor bm = Tensor::FromFloats({2, 2}, {1, 0, 0, 1});
  Tensor c = Tensor::FromFloats({2}, {10, 20});
  ir::Attributes gemm;
  gemm.set("broadcast", int64_t{1});
  gemm.set("alpha", 1.f);
  gemm.set("beta", 1.f);
  ExpectValues(Run1("Gemm", {a, bm, c}, gemm, 6), {2, 2}, {11, 22, 13, 24});
  gemm.set("transB", int64_t{1});
  Tensor bt = Tensor::FromFloats({2, 2}, {1, 2, 3, 4});
  // A * B^T = [[5, 11], [11, 25]], plus C on every row.
  ExpectValues(Run1("Gemm", {a, bt, c}, gemm, 6), {2, 2}, {15, 31, 21, 45});
  ExpectValues(Run1("MatMul", {a, bm}, {}, 1), {2, 2}, {1, 2, 3, 4});
}

TEST(NnInstanceNorm, MatchesNaive) {
  Tensor x = RandomTensor({2, 3, 4, 5}, -2, 2, 31);
  Tensor scale = RandomTensor({3}, 0.5, 1.5, 32);
  Tensor bias = RandomTensor({3}, -1, 1, 33);
  ir::Attributes a;
  a.set("epsilon", 1e-3f);
  Tensor y = Run1("InstanceNormalization", {x, scale, bias}, a);
  Tensor expected(DType::kFloat32, x.dims());
  for (int64_t p = 0; p < 6; ++p) {
    const float* xs = x.data<float>() + p * 20;
    double mean = 0, var = 0;
    for (int i = 0; i < 20; ++i) mean += xs[i] / 20.0;
    for (int i = 0; i < 20; ++i) var += (xs[i] - mean) * (xs[i] - mean) / 20.0;
    for (int i = 0; i < 20; ++i)
      expected.data<float>()[p * 20 + i] = static_cast<float>(
          (xs[i] - mean) / std::sqrt(var + 1e-3) * scale.data<float>()[p % 3] + bias.data<float>()[p % 3]);
  }
  EXPECT_LT(MaxAbsoluteError(y, expected), 1e-5);
  EXPECT_THROW(Run1("InstanceNormalization", {x, Filled({2}, 1.f), bias}, a), Error);
}

// ---- Gemm / MatMul ----

// Naive batched matmul of row-major [b, m, k] x [b, k, n] given per-batch offsets.
Tensor NaiveMatMul2D(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false) {
  const int64_t m = trans_a ? a.dim(1) : a.dim(0), k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  Tensor y = Filled({m, n}, 0.f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < k; ++p)
        acc += a.GetAsDouble(trans_a ? p * m + i : i * k + p) * b.GetAsDouble(trans_b ? j * k + p : p * n + j);
      y.data<float>()[i * n + j] = static_cast<float>(acc);
    }
  return y;
}

TEST(NnGemm, TransposesAlphaBetaAndBiasBroadcast) {
  Tensor a = RandomTensor({4, 3}, -1, 1, 41);
  Tensor b = RandomTensor({4, 4}, -1, 1, 42);
  ir::Attributes attrs;
  attrs.set("transA", int64_t{1});
  attrs.set("transB", int64_t{1});
  attrs.set("alpha", 0.5f);
  attrs.set("beta", 2.0f);
  Tensor ab = NaiveMatMul2D(a, b, true, true);  // [3, 4]
  struct Case {
    std::string name;
    Tensor c;
  };
  const std::vector<Case> cases = {{"matrix", RandomTensor({3, 4}, -1, 1, 43)},
                                   {"row", RandomTensor({4}, -1, 1, 44)},
                                   {"row2d", RandomTensor({1, 4}, -1, 1, 45)},
                                   {"column", RandomTensor({3, 1}, -1, 1, 46)},
                                   {"scalar", Tensor::Scalar(0.75f)},
                                   {"single", Tensor::FromFloats({1}, {-2.f})}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Tensor y = Run1("Gemm", {a, b, c.c}, attrs, 13);
    ASSERT_EQ(y.dims(), (std::vector<int64_t>{3, 4}));
    std::vector<int64_t> cd = c.c.dims();
    while (cd.size() < 2) cd.insert(cd.begin(), 1);
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        float cv = c.c.data<float>()[(cd[0] == 1 ? 0 : i) * cd[1] + (cd[1] == 1 ? 0 : j)];
        EXPECT_NEAR(y.data<float>()[i * 4 + j], 0.5f * ab.data<float>()[i * 4 + j] + 2.f * cv, 1e-5);
      }
  }
  // No C (opset 11+), plain orientation.
  Tensor a2 = RandomTensor({2, 3}, -1, 1, 47), b2 = RandomTensor({3, 4}, -1, 1, 48);
  EXPECT_LT(MaxAbsoluteError(Run1("Gemm", {a2, b2}, {}, 13), NaiveMatMul2D(a2, b2)), 1e-5);
}

TEST(NnGemm, IntegerAndErrors) {
  Tensor a = Tensor::FromInt64s({2, 2}, {1, 2, 3, 4}).CastTo(DType::kInt32);
  Tensor b = Tensor::FromInt64s({2, 2}, {5, 6, 7, 8}).CastTo(DType::kInt32);
  Tensor c = Tensor::FromInt64s({2}, {1, -1}).CastTo(DType::kInt32);
  Tensor y = Run1("Gemm", {a, b, c}, {}, 13);
  EXPECT_EQ(y.dtype(), DType::kInt32);
  EXPECT_EQ(y.ToInt64Vector(), (std::vector<int64_t>{20, 21, 44, 49}));
  EXPECT_THROW(Run1("Gemm", {RandomTensor({2, 3}), RandomTensor({4, 2})}, {}, 13), Error);
  EXPECT_THROW(Run1("Gemm", {RandomTensor({2, 3}), RandomTensor({3, 2}), RandomTensor({3})}, {}, 13),
               Error);
  EXPECT_THROW(Run1("Gemm", {RandomTensor({2, 3, 1}), RandomTensor({3, 2})}, {}, 13), Error);
  EXPECT_THROW(Run1("Gemm", {RandomTensor({2, 3}), RandomTensor({3, 2})}, {}, 9), Error);  // C required.
}

// out[batch..., i, j] for broadcast batch dims, computed with explicit indices.
Tensor NaiveBatchedMatMul(const Tensor& a, const Tensor& b) {
  std::vector<int64_t> ad = a.dims(), bd = b.dims();
  const bool a_vec = ad.size() == 1, b_vec = bd.size() == 1;
  if (a_vec) ad.insert(ad.begin(), 1);
  if (b_vec) bd.push_back(1);
  const int64_t m = ad[ad.size() - 2], k = ad.back(), n = bd.back();
  std::vector<int64_t> ab(ad.begin(), ad.end() - 2), bb(bd.begin(), bd.end() - 2);
  std::vector<int64_t> batch = BroadcastDims(ab, bb);
  const size_t r = batch.size();
  while (ab.size() < r) ab.insert(ab.begin(), 1);
  while (bb.size() < r) bb.insert(bb.begin(), 1);
  std::vector<int64_t> out_dims = batch;
  if (!a_vec) out_dims.push_back(m);
  if (!b_vec) out_dims.push_back(n);
  Tensor y(DType::kFloat32, out_dims);
  const int64_t count = Product(batch);
  for (int64_t item = 0; item < count; ++item) {
    int64_t rem = item, a_off = 0, b_off = 0, a_mul = 1, b_mul = 1;
    for (size_t i = r; i-- > 0;) {
      int64_t idx = rem % batch[i];
      rem /= batch[i];
      a_off += (ab[i] == 1 ? 0 : idx) * a_mul;
      b_off += (bb[i] == 1 ? 0 : idx) * b_mul;
      a_mul *= ab[i];
      b_mul *= bb[i];
    }
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p)
          acc += a.data<float>()[a_off * m * k + i * k + p] * b.data<float>()[b_off * k * n + p * n + j];
        y.data<float>()[(item * m + i) * n + j] = static_cast<float>(acc);
      }
  }
  return y;
}

TEST(NnMatMul, BroadcastingAndVectors) {
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cases = {
      {{3, 4}, {4, 5}},       {{2, 3, 4}, {4, 5}},      {{2, 1, 3, 4}, {5, 4, 2}},
      {{1, 3, 4}, {2, 4, 5}}, {{4}, {4}},               {{4}, {2, 4, 3}},
      {{2, 3, 4}, {4}},       {{2, 2, 3, 4}, {2, 1, 4, 6}}, {{3, 0}, {0, 2}}};
  uint32_t seed = 50;
  for (const auto& [ad, bd] : cases) {
    SCOPED_TRACE(DimsToString(ad) + " x " + DimsToString(bd));
    Tensor a = RandomTensor(ad, -1, 1, seed++), b = RandomTensor(bd, -1, 1, seed++);
    Tensor y = Run1("MatMul", {a, b}, {});
    Tensor expected = NaiveBatchedMatMul(a, b);
    EXPECT_EQ(y.dims(), expected.dims());
    EXPECT_LT(MaxAbsoluteError(y, expected), 1e-5);
  }
}

TEST(NnMatMul, IntegerDoubleAndErrors) {
  Tensor a = Tensor::FromInt64s({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = Tensor::FromInt64s({3, 1}, {1, 0, -1});
  EXPECT_EQ(Run1("MatMul", {a, b}, {}).ToInt64Vector(), (std::vector<int64_t>{-2, -2}));
  Tensor ad = a.CastTo(DType::kFloat64), bd = b.CastTo(DType::kFloat64);
  Tensor yd = Run1("MatMul", {ad, bd}, {});
  EXPECT_EQ(yd.dtype(), DType::kFloat64);
  EXPECT_EQ(yd.GetAsDouble(1), -2.0);
  EXPECT_THROW(Run1("MatMul", {RandomTensor({2, 3}), RandomTensor({4, 2})}, {}), Error);
  EXPECT_THROW(Run1("MatMul", {RandomTensor({2, 2, 3}), RandomTensor({3, 3, 2})}, {}), Error);
  EXPECT_THROW(Run1("MatMul", {RandomTensor({2, 3}), a}, {}), Error);  // dtype mismatch
}

// ---- Einsum ----

Tensor Einsum(const std::string& eq, const std::vector<Tensor>& inputs) {
  ir::Attributes a;
  a.set("equation", eq);
  return Run1("Einsum", inputs, a, 12);
}

TEST(NnEinsum, TransformerForms) {
  Tensor q = RandomTensor({2, 3, 4, 5}, -1, 1, 61), k = RandomTensor({2, 3, 6, 5}, -1, 1, 62);
  Tensor y = Einsum("bhqd,bhkd->bhqk", {q, k});
  ASSERT_EQ(y.dims(), (std::vector<int64_t>{2, 3, 4, 6}));
  for (int64_t b = 0; b < 6; ++b)
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 6; ++j) {
        double acc = 0;
        for (int64_t d = 0; d < 5; ++d)
          acc += q.data<float>()[(b * 4 + i) * 5 + d] * k.data<float>()[(b * 6 + j) * 5 + d];
        EXPECT_NEAR(y.data<float>()[(b * 4 + i) * 6 + j], acc, 1e-5);
      }
  Tensor a = RandomTensor({5, 2, 3}, -1, 1, 63), b = RandomTensor({5, 3, 4}, -1, 1, 64);
  EXPECT_LT(MaxAbsoluteError(Einsum("bij, bjk -> bik", {a, b}), Run1("MatMul", {a, b}, {})), 1e-6);
  Tensor m1 = RandomTensor({3, 4}, -1, 1, 65), m2 = RandomTensor({4, 2}, -1, 1, 66);
  EXPECT_LT(MaxAbsoluteError(Einsum("ij,jk->ik", {m1, m2}), NaiveMatMul2D(m1, m2)), 1e-6);
  EXPECT_LT(MaxAbsoluteError(Einsum("ij,jk", {m1, m2}), NaiveMatMul2D(m1, m2)), 1e-6);
  // Output order differs from the natural [batch, m, n] order.
  Tensor t = Einsum("ij,jk->ki", {m1, m2});
  Tensor ref = NaiveMatMul2D(m1, m2);
  ASSERT_EQ(t.dims(), (std::vector<int64_t>{2, 3}));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j) EXPECT_NEAR(t.data<float>()[j * 3 + i], ref.data<float>()[i * 2 + j], 1e-6);
}

TEST(NnEinsum, SingleOperandAndOuterForms) {
  Tensor x = Iota({3, 4});
  Tensor t = Einsum("ij->ji", {x});
  ASSERT_EQ(t.dims(), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(t.data<float>()[1], 4.f);  // t[0, 1] = x[1, 0]
  ExpectValues(Einsum("ij->i", {x}), {3}, {6, 22, 38});
  ExpectValues(Einsum("ij->", {x}), {}, {66});
  Tensor u = Tensor::FromFloats({2}, {1, 2}), v = Tensor::FromFloats({3}, {3, 4, 5});
  ExpectValues(Einsum("i,j->ij", {u, v}), {2, 3}, {3, 4, 5, 6, 8, 10});
  ExpectValues(Einsum("i,i", {u, Tensor::FromFloats({2}, {4, -1})}), {}, {2});
  Tensor sq = Iota({3, 3});
  ExpectValues(Einsum("ii->i", {sq}), {3}, {0, 4, 8});
  ExpectValues(Einsum("ii", {sq}), {}, {12});
  ExpectValues(Einsum("...ii->...i", {Iota({2, 2, 2})}), {2, 2}, {0, 3, 4, 7});
  // Ellipsis batch broadcasting: [2,1,3] with [4,3] over "...j,...j->...".
  Tensor e1 = RandomTensor({2, 1, 3}, -1, 1, 67), e2 = RandomTensor({4, 3}, -1, 1, 68);
  Tensor e = Einsum("...j,...j->...", {e1, e2});
  ASSERT_EQ(e.dims(), (std::vector<int64_t>{2, 4}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      double acc = 0;
      for (int p = 0; p < 3; ++p) acc += e1.data<float>()[i * 3 + p] * e2.data<float>()[j * 3 + p];
      EXPECT_NEAR(e.data<float>()[i * 4 + j], acc, 1e-6);
    }
  // Three operands and integer types.
  Tensor i1 = Tensor::FromInt64s({2}, {1, 2}), i2 = Tensor::FromInt64s({2, 2}, {1, 2, 3, 4}),
         i3 = Tensor::FromInt64s({2}, {5, 6});
  ExpectValues(Einsum("i,ij,j->", {i1, i2, i3}), {}, {1 * 1 * 5 + 1 * 2 * 6 + 2 * 3 * 5 + 2 * 4 * 6});
}

TEST(NnEinsum, RejectsBadEquations) {
  Tensor x = RandomTensor({3, 4});
  EXPECT_THROW(Einsum("ijk->i", {x}), Error);        // Rank mismatch.
  EXPECT_THROW(Einsum("ij,jk->ik", {x}), Error);     // Operand count.
  EXPECT_THROW(Einsum("ij->k", {x}), Error);         // Unknown output label.
  EXPECT_THROW(Einsum("ij->ii", {x}), Error);        // Repeated output label.
  EXPECT_THROW(Einsum("i1->i", {x}), Error);         // Bad character.
  EXPECT_THROW(Einsum("ii->i", {x}), Error);         // Diagonal of a non-square.
  EXPECT_THROW(Einsum("ij,ij->ij", {x, RandomTensor({3, 5})}), Error);  // Size mismatch.
}

}  // namespace
}  // namespace kiln
