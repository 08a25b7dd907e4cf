// GPU layers of the tensor family (shape and data movement), matching the CPU
// reference kernels in src/cpu/tensor.cc and reading attributes through the
// shared helpers of src/ops/tensor.h.
//
// Everything is planned at creation from the static shapes: Reshape-like ops
// become zero-copy aliases; Transpose/Slice/Expand/Tile/DepthToSpace reduce to
// one strided copy (with a tiled fast path for batched 2-D transposes);
// shape-valued inputs (Slice's starts, Pad's pads, Resize's scales, ...) must
// be constants and are read on the host. Layers whose output is fixed at
// creation (Shape, Size, ConstantOfShape, EyeLike) write it with a tiny kernel
// whose values travel by value, so Enqueue stays capturable.
//
// Layout: only Concat (and the builder's KilnToNHWC / KilnToRowMajor) accept
// NHWC inputs; every other layer gets row-major tensors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/tensor.h"
#include "cuda/layer.h"
#include "ops/tensor.h"

namespace kiln::gpu {
namespace {

namespace tk = tensor_kernels;

// A layer assembled from a precomputed launch closure.
class TensorLayer final : public Layer {
 public:
  std::function<void(const LaunchArgs&)> enqueue;
  std::vector<bool> host_only;  // Inputs read only at creation.
  std::vector<int> aliases;     // Per output: input index it aliases, or -1.
  int launches = 1;

  void Enqueue(const LaunchArgs& args) const override {
    if (enqueue) enqueue(args);
  }
  bool ReadsInputOnDevice(int input) const override {
    return !(input >= 0 && static_cast<size_t>(input) < host_only.size() &&
             host_only[static_cast<size_t>(input)]);
  }
  int AliasOf(int output) const override {
    return output >= 0 && static_cast<size_t>(output) < aliases.size()
               ? aliases[static_cast<size_t>(output)]
               : -1;
  }
  int KernelLaunches() const override { return launches; }
};

// Runs fn, prefixing any kiln::Error from the shared op helpers with the node.
template <typename Fn>
auto Guard(const LayerInit& init, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    const std::string prefix = init.node.Describe();
    const std::string what = e.what();
    if (what.rfind(prefix, 0) == 0) throw;
    Fail(prefix, " on GPU: ", what);
  }
}

bool HasInput(const LayerInit& init, int i) {
  return i >= 0 && static_cast<size_t>(i) < init.inputs.size() &&
         init.inputs[static_cast<size_t>(i)].defined();
}

bool HasOutput(const LayerInit& init, int i) {
  return i >= 0 && static_cast<size_t>(i) < init.outputs.size() &&
         init.outputs[static_cast<size_t>(i)].defined();
}

const TensorDesc& Input(const LayerInit& init, int i) {
  KILN_LAYER_CHECK(init, HasInput(init, i), "input ", i, " is required");
  return init.inputs[static_cast<size_t>(i)];
}

const TensorDesc& Output(const LayerInit& init, int i) {
  KILN_LAYER_CHECK(init, HasOutput(init, i), "output ", i, " is required");
  return init.outputs[static_cast<size_t>(i)];
}

// The host value of an input that drives shapes or indexing (nullptr when the
// input is omitted); throws when it is present but not a constant.
const Tensor* HostInput(const LayerInit& init, int i, const char* what) {
  if (!HasInput(init, i)) return nullptr;
  const Tensor* t = static_cast<size_t>(i) < init.constants.size()
                        ? init.constants[static_cast<size_t>(i)]
                        : nullptr;
  KILN_LAYER_CHECK(init, t != nullptr, what, " (input ", i,
                   ") must be a constant: GPU engines have static shapes");
  return t;
}

// The constant value of input i if it has one, else nullptr.
const Tensor* ConstantOrNull(const LayerInit& init, int i) {
  if (!HasInput(init, i) || static_cast<size_t>(i) >= init.constants.size()) return nullptr;
  return init.constants[static_cast<size_t>(i)];
}

void RequireRowMajor(const LayerInit& init) {
  for (size_t i = 0; i < init.inputs.size(); ++i) {
    if (!init.inputs[i].defined()) continue;
    KILN_LAYER_CHECK(init, init.inputs[i].layout == Layout::kRowMajor, "input ", i, " is ",
                     init.inputs[i].ToString(), "; this layer needs row-major inputs");
  }
}

size_t ElementSize(const LayerInit& init, DType dtype) {
  const size_t size = DTypeSize(dtype);
  KILN_LAYER_CHECK(init, size == 1 || size == 2 || size == 4 || size == 8, "dtype ",
                   DTypeName(dtype), " is not supported");
  return size;
}

void RequireSameDType(const LayerInit& init, const TensorDesc& in, const TensorDesc& out) {
  KILN_LAYER_CHECK(init, in.dtype == out.dtype, "input is ", in.ToString(), " but output is ",
                   out.ToString(), " (this layer does not convert dtypes)");
}

void RequireRank(const LayerInit& init, size_t rank) {
  KILN_LAYER_CHECK(init, rank <= static_cast<size_t>(tk::kMaxRank), "rank ", rank,
                   " exceeds the GPU limit of ", tk::kMaxRank);
}

std::vector<bool> HostOnlyExcept(size_t count, std::initializer_list<int> device_inputs) {
  std::vector<bool> host(count, true);
  for (int i : device_inputs)
    if (static_cast<size_t>(i) < count) host[static_cast<size_t>(i)] = false;
  return host;
}

// The little-endian bit pattern of a one-element tensor.
uint64_t PatternOf(const Tensor& t) {
  uint64_t bits = 0;
  KILN_CHECK(t.numel() >= 1 && DTypeSize(t.dtype()) <= sizeof(bits), "bad fill value ",
             t.TypeString());
  std::memcpy(&bits, t.raw_data(), DTypeSize(t.dtype()));
  return bits;
}

// `value` as one element of dtype, as bits.
uint64_t ScalarPattern(DType dtype, double value) {
  if (dtype == DType::kBool) return value != 0.0 ? 1 : 0;
  Tensor d(DType::kFloat64, {});
  d.data<double>()[0] = value;
  return PatternOf(d.CastTo(dtype));
}

// A one-element host tensor (attribute value) converted to the storage dtype.
uint64_t ValuePattern(const Tensor& value, DType dtype) {
  if (value.dtype() == dtype) return PatternOf(value);
  return ScalarPattern(dtype, value.GetAsDouble(0));
}

// Largest power-of-two unit (<= 16 bytes) dividing every value OR-ed into
// `bits` (byte sizes and addresses).
size_t UnitOf(uint64_t bits) {
  size_t unit = 16;
  while (unit > 1 && bits % unit != 0) unit /= 2;
  return unit;
}

// Logical strides (elements) of a tensor stored in `layout`.
std::vector<int64_t> LogicalStrides(const TensorDesc& d) {
  if (d.layout == Layout::kRowMajor) return RowMajorStrides(d.dims);
  std::vector<int64_t> physical = RowMajorStrides(d.PhysicalDims());
  std::vector<int64_t> strides(d.dims.size());
  for (int l = 0; l < d.rank(); ++l)
    strides[static_cast<size_t>(l)] =
        physical[static_cast<size_t>(PhysicalAxis(d.layout, d.rank(), l))];
  return strides;
}

// A strided copy plan, or a clear error when it needs more than kMaxRank dims.
tk::StridedCopyParams PlanCopy(const LayerInit& init, const std::vector<int64_t>& dims,
                               const std::vector<int64_t>& strides, int64_t offset,
                               const std::vector<int64_t>* out_strides = nullptr,
                               int64_t out_offset = 0) {
  tk::StridedCopyParams p;
  KILN_LAYER_CHECK(init, tk::PlanStridedCopy(dims, strides, offset, out_strides, out_offset, &p),
                   "the copy of ", DimsToString(dims), " needs more than ", tk::kMaxRank,
                   " dims after merging");
  return p;
}

// A layer that is one strided copy of input 0 into output 0 (contiguous).
std::unique_ptr<Layer> StridedCopyLayer(const LayerInit& init, tk::StridedCopyParams p,
                                        std::vector<bool> host_only) {
  const size_t esize = ElementSize(init, init.inputs[0].dtype);
  KILN_LAYER_CHECK(init, tk::NumElements(p) == init.outputs[0].numel(), "copy plan of ",
                   tk::NumElements(p), " elements does not match the output ",
                   init.outputs[0].ToString());
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = std::move(host_only);
  layer->enqueue = [p, esize](const LaunchArgs& args) {
    tk::LaunchStridedCopy(args.inputs[0], args.outputs[0], esize, p, args.stream);
  };
  return layer;
}

// ---------------------------------------------------------------- aliases

std::unique_ptr<Layer> MakeAlias(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, in, out);
  KILN_LAYER_CHECK(init, in.numel() == out.numel(), "input ", in.ToString(), " and output ",
                   out.ToString(), " differ in size");
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = HostOnlyExcept(init.inputs.size(), {0});
  layer->aliases = {0};
  layer->launches = 0;
  return layer;
}

std::unique_ptr<Layer> MakeDropout(const LayerInit& init) {
  RequireRowMajor(init);
  Guard(init, [&] { tensor_ops::CheckLegacyDropoutIsTest(init.node); });
  const TensorDesc& in = Input(init, 0);
  RequireSameDType(init, in, Output(init, 0));
  if (init.node.opset >= 12 && HasInput(init, 2)) {
    const Tensor* training = HostInput(init, 2, "training_mode");
    const Tensor* ratio = ConstantOrNull(init, 1);
    KILN_LAYER_CHECK(init, training->numel() == 1, "training_mode must be a scalar");
    KILN_LAYER_CHECK(init,
                     training->GetAsDouble(0) == 0.0 ||
                         (ratio && ratio->numel() == 1 && ratio->GetAsDouble(0) == 0.0),
                     "training_mode=true is not supported: kiln runs inference only");
  }
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = HostOnlyExcept(init.inputs.size(), {0});
  layer->aliases = {0};
  layer->launches = 0;
  if (HasOutput(init, 1)) {
    // Nothing is dropped at inference: the mask is all true (or all 1).
    const TensorDesc& mask = init.outputs[1];
    const size_t esize = ElementSize(init, mask.dtype);
    const uint64_t one = ScalarPattern(mask.dtype, 1.0);
    const int64_t n = mask.numel();
    layer->aliases = {0, -1};
    layer->launches = n > 0 ? 1 : 0;
    layer->enqueue = [esize, one, n](const LaunchArgs& args) {
      if (args.outputs.size() > 1 && args.outputs[1])
        tk::LaunchFill(args.outputs[1], n, esize, one, args.stream);
    };
  }
  return layer;
}

// ---------------------------------------------------------------- generators

std::unique_ptr<Layer> FillLayer(const LayerInit& init, uint64_t pattern,
                                 std::vector<bool> host_only) {
  const TensorDesc& out = Output(init, 0);
  const size_t esize = ElementSize(init, out.dtype);
  const int64_t n = out.numel();
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = std::move(host_only);
  layer->launches = n > 0 ? 1 : 0;
  layer->enqueue = [esize, n, pattern](const LaunchArgs& args) {
    tk::LaunchFill(args.outputs[0], n, esize, pattern, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> BlobLayer(const LayerInit& init, const Tensor& value,
                                 std::vector<bool> host_only) {
  const TensorDesc& out = Output(init, 0);
  KILN_LAYER_CHECK(init, value.dtype() == out.dtype && value.numel() == out.numel(), "value ",
                   value.TypeString(), " does not match the output ", out.ToString());
  KILN_LAYER_CHECK(init, value.nbytes() <= static_cast<size_t>(tk::kBlobBytes), "a value of ",
                   value.nbytes(), " bytes is too large to write from the host (limit ",
                   tk::kBlobBytes, "); fold it into an initializer");
  tk::Blob blob;
  blob.nbytes = static_cast<int64_t>(value.nbytes());
  if (value.nbytes()) std::memcpy(blob.bytes, value.raw_data(), value.nbytes());
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = std::move(host_only);
  layer->launches = blob.nbytes > 0 ? 1 : 0;
  layer->enqueue = [blob](const LaunchArgs& args) {
    tk::LaunchWriteBlob(args.outputs[0], blob, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeShape(const LayerInit& init) {
  const TensorDesc& in = Input(init, 0);
  auto [start, end] = Guard(init, [&] { return tensor_ops::ShapeRange(init.node, in.rank()); });
  std::vector<int64_t> dims(in.dims.begin() + start, in.dims.begin() + end);
  Tensor value = Tensor::FromInt64s({static_cast<int64_t>(dims.size())}, dims);
  return BlobLayer(init, value, {true});
}

std::unique_ptr<Layer> MakeSize(const LayerInit& init) {
  const TensorDesc& in = Input(init, 0);
  KILN_LAYER_CHECK(init, Output(init, 0).dtype == DType::kInt64, "output must be int64");
  return FillLayer(init, static_cast<uint64_t>(in.numel()), {true});
}

std::unique_ptr<Layer> MakeConstantOfShape(const LayerInit& init) {
  const TensorDesc& out = Output(init, 0);
  uint64_t pattern = 0;
  if (init.node.attrs.has("value")) {
    const Tensor& value = init.node.attrs.GetTensor("value");
    KILN_LAYER_CHECK(init, value.numel() == 1, "value must hold one element");
    pattern = Guard(init, [&] { return ValuePattern(value, out.dtype); });
  }
  return FillLayer(init, pattern, {true});
}

std::unique_ptr<Layer> MakeConstant(const LayerInit& init) {
  const TensorDesc& out = Output(init, 0);
  Tensor value = Guard(init, [&] { return tensor_ops::ConstantValue(init.node); });
  if (value.dtype() != out.dtype) value = Guard(init, [&] { return value.CastTo(out.dtype); });
  return BlobLayer(init, value, {});
}

std::unique_ptr<Layer> MakeEyeLike(const LayerInit& init) {
  const TensorDesc& out = Output(init, 0);
  KILN_LAYER_CHECK(init, out.rank() == 2, "output must be 2-D, got ", out.ToString());
  const size_t esize = ElementSize(init, out.dtype);
  const uint64_t one = Guard(init, [&] { return ScalarPattern(out.dtype, 1.0); });
  const int64_t rows = out.dims[0], cols = out.dims[1];
  const int64_t k = init.node.attrs.GetInt("k", 0);
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = {true};
  layer->launches = rows * cols > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchEyeLike(args.outputs[0], esize, rows, cols, k, one, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeRange(const LayerInit& init) {
  const TensorDesc& out = Output(init, 0);
  for (int i = 0; i < 3; ++i) {
    const TensorDesc& in = Input(init, i);
    KILN_LAYER_CHECK(init, in.dtype == out.dtype && in.numel() == 1, "input ", i, " is ",
                     in.ToString(), "; expected a scalar ", DTypeName(out.dtype));
  }
  KILN_LAYER_CHECK(init, tk::RangeSupported(out.dtype), "dtype ", DTypeName(out.dtype),
                   " is not supported");
  const DType dtype = out.dtype;
  const int64_t n = out.numel();
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = {false, true, false};  // limit only sets the (static) length.
  layer->launches = n > 0 ? 1 : 0;
  layer->enqueue = [dtype, n](const LaunchArgs& args) {
    tk::LaunchRange(args.inputs[0], args.inputs[2], args.outputs[0], dtype, n, args.stream);
  };
  return layer;
}

// ---------------------------------------------------------------- layout ops

std::unique_ptr<Layer> MakeTranspose(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  RequireSameDType(init, in, Output(init, 0));
  std::vector<int> perm = Guard(init, [&] { return tensor_ops::ResolvePerm(init.node, in.rank()); });
  std::vector<int64_t> in_strides = RowMajorStrides(in.dims);
  std::vector<int64_t> dims, strides;
  for (int p : perm) {
    dims.push_back(in.dims[static_cast<size_t>(p)]);
    strides.push_back(in_strides[static_cast<size_t>(p)]);
  }
  tk::StridedCopyParams p = PlanCopy(init, dims, strides, 0);
  // A batched swap of the last two dims ([B,R,C] -> [B,C,R]) takes the tiled path.
  int64_t B = 0, R = 0, C = 0;
  if (p.rank == 2 && p.in_strides[0] == 1 && p.in_strides[1] == p.dims[0]) {
    B = 1, C = p.dims[0], R = p.dims[1];
  } else if (p.rank == 3 && p.in_strides[1] == 1 && p.in_strides[2] == p.dims[1] &&
             p.in_strides[0] == p.dims[1] * p.dims[2]) {
    B = p.dims[0], C = p.dims[1], R = p.dims[2];
  }
  if (B == 0) return StridedCopyLayer(init, p, {});
  const DType dtype = in.dtype;
  ElementSize(init, dtype);
  auto layer = std::make_unique<TensorLayer>();
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchTransposeBRC(args.inputs[0], dtype, args.outputs[0], dtype, B, R, C, args.stream);
  };
  return layer;
}

// KilnToNHWC (to_nhwc) / KilnToRowMajor: the builder's layout conversions,
// optionally fused with a float32 <-> float16/bfloat16 cast.
std::unique_ptr<Layer> MakeLayoutConversion(const LayerInit& init, bool to_nhwc) {
  const TensorDesc& in = Input(init, 0);
  const TensorDesc& out = Output(init, 0);
  KILN_LAYER_CHECK(init, in.rank() == 4, "input must be rank 4, got ", in.ToString());
  KILN_LAYER_CHECK(init, in.dims == out.dims, "input ", in.ToString(), " and output ",
                   out.ToString(), " must have the same logical dims");
  KILN_LAYER_CHECK(init, tk::TransposeCastSupported(in.dtype, out.dtype), "cannot convert ",
                   DTypeName(in.dtype), " to ", DTypeName(out.dtype));
  const Layout target = to_nhwc ? Layout::kNHWC : Layout::kRowMajor;
  KILN_LAYER_CHECK(init, out.layout == target || out.layout == Layout::kRowMajor,
                   "output is described as ", out.ToString(), " but this layer produces ",
                   LayoutName(target));
  const int64_t N = in.dims[0], C = in.dims[1], HW = in.dims[2] * in.dims[3];
  int64_t b = 1, r = 1, c = in.numel();  // Same layout: a plain copy/cast.
  if (in.layout != target) {
    if (to_nhwc) {
      b = N, r = C, c = HW;  // [N, C, HW] -> [N, HW, C]
    } else {
      b = N, r = HW, c = C;  // [N, HW, C] -> [N, C, HW]
    }
  }
  const DType in_dtype = in.dtype, out_dtype = out.dtype;
  auto layer = std::make_unique<TensorLayer>();
  // Same dtype and the same bytes in both orders ([b, r, c] -> [b, c, r]
  // moves nothing when r or c is 1: one pixel per image, e.g. a global pool's
  // [N, C, 1, 1], or one channel): a zero-copy view.
  if (in_dtype == out_dtype && (r == 1 || c == 1)) {
    layer->aliases = {0};
    layer->launches = 0;
    return layer;
  }
  layer->launches = in.numel() > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchTransposeBRC(args.inputs[0], in_dtype, args.outputs[0], out_dtype, b, r, c,
                           args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeSlice(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  RequireSameDType(init, in, Output(init, 0));
  const bool inputs = init.node.opset >= 10;
  const Tensor* starts = inputs ? HostInput(init, 1, "starts") : nullptr;
  const Tensor* ends = inputs ? HostInput(init, 2, "ends") : nullptr;
  const Tensor* axes = inputs ? HostInput(init, 3, "axes") : nullptr;
  const Tensor* steps = inputs ? HostInput(init, 4, "steps") : nullptr;
  tensor_ops::SliceArgs a = Guard(init, [&] {
    return tensor_ops::GetSliceArgs(init.node, in.rank(), starts, ends, axes, steps);
  });
  std::vector<int64_t> strides = RowMajorStrides(in.dims);
  std::vector<int64_t> dims = in.dims;
  int64_t offset = 0;
  for (size_t i = 0; i < a.axes.size(); ++i) {
    const size_t axis = static_cast<size_t>(a.axes[i]);
    tensor_ops::SliceRange r =
        tensor_ops::ResolveSliceRange(dims[axis], a.starts[i], a.ends[i], a.steps[i]);
    offset += r.start * strides[axis];
    strides[axis] *= r.step;
    dims[axis] = r.count;
  }
  KILN_LAYER_CHECK(init, dims == init.outputs[0].dims, "slice of ", in.ToString(), " gives ",
                   DimsToString(dims), " but the output is ", init.outputs[0].ToString());
  return StridedCopyLayer(init, PlanCopy(init, dims, strides, offset),
                          HostOnlyExcept(init.inputs.size(), {0}));
}

std::unique_ptr<Layer> MakeExpand(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, in, out);
  KILN_LAYER_CHECK(init, out.rank() >= in.rank(), "output ", out.ToString(),
                   " has lower rank than input ", in.ToString());
  const size_t lead = out.dims.size() - in.dims.size();
  std::vector<int64_t> in_strides = RowMajorStrides(in.dims);
  std::vector<int64_t> strides(out.dims.size(), 0);
  for (size_t i = 0; i < in.dims.size(); ++i) {
    KILN_LAYER_CHECK(init, in.dims[i] == 1 || in.dims[i] == out.dims[lead + i], "cannot expand ",
                     in.ToString(), " to ", out.ToString());
    if (in.dims[i] != 1) strides[lead + i] = in_strides[i];
  }
  return StridedCopyLayer(init, PlanCopy(init, out.dims, strides, 0), {false, true});
}

std::unique_ptr<Layer> MakeTile(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, in, out);
  KILN_LAYER_CHECK(init, out.rank() == in.rank(), "output rank differs from the input's");
  // View the output [r0*d0, r1*d1, ...] as [r0, d0, r1, d1, ...]; repeats read stride 0.
  std::vector<int64_t> in_strides = RowMajorStrides(in.dims);
  std::vector<int64_t> dims, strides;
  for (int i = 0; i < in.rank(); ++i) {
    const int64_t d = in.dims[static_cast<size_t>(i)], o = out.dims[static_cast<size_t>(i)];
    int64_t reps = 0;
    if (d > 0) {
      KILN_LAYER_CHECK(init, o % d == 0, "output ", out.ToString(), " is not a tiling of ",
                       in.ToString());
      reps = o / d;
    } else if (const Tensor* r = ConstantOrNull(init, 1)) {
      reps = r->GetAsInt64(i);
    }
    dims.push_back(reps);
    strides.push_back(0);
    dims.push_back(d);
    strides.push_back(in_strides[static_cast<size_t>(i)]);
  }
  return StridedCopyLayer(init, PlanCopy(init, dims, strides, 0), {false, true});
}

std::unique_ptr<Layer> MakeDepthToSpace(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  RequireSameDType(init, in, Output(init, 0));
  KILN_LAYER_CHECK(init, in.rank() == 4, "input must be 4-D, got ", in.ToString());
  const int64_t b = init.node.attrs.GetInt("blocksize");
  KILN_LAYER_CHECK(init, b >= 1, "blocksize must be positive");
  const int64_t n = in.dims[0], c = in.dims[1], h = in.dims[2], w = in.dims[3];
  if (init.node.op_type == "DepthToSpace") {
    const std::string mode = init.node.attrs.GetString("mode", "DCR");
    const bool crd = init.node.opset >= 11 && mode == "CRD";
    KILN_LAYER_CHECK(init, crd || mode == "DCR", "unknown mode '", mode, "'");
    KILN_LAYER_CHECK(init, c % (b * b) == 0, "channels are not divisible by blocksize^2");
    const int64_t oc = c / (b * b);
    std::vector<int64_t> s = RowMajorStrides(crd ? std::vector<int64_t>{n, oc, b, b, h, w}
                                                 : std::vector<int64_t>{n, b, b, oc, h, w});
    const int64_t sn = s[0], sc = crd ? s[1] : s[3], sb1 = crd ? s[2] : s[1],
                  sb2 = crd ? s[3] : s[2];
    return StridedCopyLayer(
        init, PlanCopy(init, {n, oc, h, b, w, b}, {sn, sc, s[4], sb1, s[5], sb2}, 0), {});
  }
  KILN_LAYER_CHECK(init, h % b == 0 && w % b == 0, "spatial dims are not divisible by blocksize");
  const int64_t oh = h / b, ow = w / b;
  std::vector<int64_t> s = RowMajorStrides({n, c, oh, b, ow, b});
  return StridedCopyLayer(
      init, PlanCopy(init, {n, b, b, c, oh, ow}, {s[0], s[3], s[5], s[1], s[2], s[4]}, 0), {});
}

// ---------------------------------------------------------------- concat / split

std::unique_ptr<Layer> MakeConcat(const LayerInit& init) {
  const TensorDesc& out = Output(init, 0);
  const size_t esize = ElementSize(init, out.dtype);
  const int rank = out.rank();
  const int axis =
      Guard(init, [&] { return NormalizeAxis(tensor_ops::ConcatAxis(init.node), rank, init.node); });
  const int count = static_cast<int>(init.inputs.size());
  bool same_layout = true;
  for (int i = 0; i < count; ++i) {
    const TensorDesc& in = Input(init, i);
    RequireSameDType(init, in, out);
    KILN_LAYER_CHECK(init, in.rank() == rank, "input ", i, " ", in.ToString(),
                     " has a different rank than the output ", out.ToString());
    same_layout = same_layout && in.layout == out.layout;
  }
  auto layer = std::make_unique<TensorLayer>();
  if (!same_layout) {
    // Mixed layouts: one strided copy per input into its slab of the output.
    std::vector<int64_t> out_strides = LogicalStrides(out);
    std::vector<std::pair<int, tk::StridedCopyParams>> copies;
    int64_t column = 0;
    for (int i = 0; i < count; ++i) {
      const TensorDesc& in = init.inputs[static_cast<size_t>(i)];
      if (in.numel() > 0)
        copies.emplace_back(i, PlanCopy(init, in.dims, LogicalStrides(in), 0, &out_strides,
                                        column * out_strides[static_cast<size_t>(axis)]));
      column += in.dims[static_cast<size_t>(axis)];
    }
    layer->launches = static_cast<int>(copies.size());
    layer->enqueue = [copies, esize](const LaunchArgs& args) {
      for (const auto& [i, p] : copies)
        tk::LaunchStridedCopy(args.inputs[static_cast<size_t>(i)], args.outputs[0], esize, p,
                              args.stream);
    };
    return layer;
  }
  // Shared layout: rows of the physical [outer, axis * inner] view side by side.
  const int physical_axis = PhysicalAxis(out.layout, rank, axis);
  const std::vector<int64_t> out_phys = out.PhysicalDims();
  const int64_t outer = Product(out_phys, 0, static_cast<size_t>(physical_axis));
  const int64_t wide = Product(out_phys, static_cast<size_t>(physical_axis));
  std::vector<int64_t> rows, offsets;
  int64_t column = 0;
  for (int i = 0; i < count; ++i) {
    const int64_t row = Product(init.inputs[static_cast<size_t>(i)].PhysicalDims(),
                                static_cast<size_t>(physical_axis));
    rows.push_back(row);
    offsets.push_back(column);
    column += row;
  }
  KILN_LAYER_CHECK(init, column == wide, "inputs do not add up to the output ", out.ToString());
  layer->launches = outer * wide > 0 ? (count + tk::kMaxParts - 1) / tk::kMaxParts : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    if (outer * wide == 0) return;
    for (int first = 0; first < count; first += tk::kMaxParts) {
      tk::PartsParams p;
      p.count = std::min(count - first, tk::kMaxParts);
      p.outer = outer;
      uint64_t bits = static_cast<uint64_t>(wide) * esize |
                      reinterpret_cast<uintptr_t>(args.outputs[0]);
      for (int j = 0; j < p.count; ++j) {
        const size_t i = static_cast<size_t>(first + j);
        bits |= static_cast<uint64_t>(rows[i]) * esize | static_cast<uint64_t>(offsets[i]) * esize |
                reinterpret_cast<uintptr_t>(args.inputs[i]);
      }
      const size_t unit = UnitOf(bits);
      auto units = [&](int64_t elements) {
        return elements * static_cast<int64_t>(esize) / static_cast<int64_t>(unit);
      };
      p.wide_row = units(wide);
      for (int j = 0; j < p.count; ++j) {
        const size_t i = static_cast<size_t>(first + j);
        p.row[j] = units(rows[i]);
        p.offset[j] = units(offsets[i]);
        p.ptr[j] = const_cast<void*>(args.inputs[i]);
      }
      tk::LaunchConcat(p, args.outputs[0], unit, args.stream);
    }
  };
  return layer;
}

std::unique_ptr<Layer> MakeSplit(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  const size_t esize = ElementSize(init, in.dtype);
  const int axis = Guard(
      init, [&] { return NormalizeAxis(init.node.attrs.GetInt("axis", 0), in.rank(), init.node); });
  const int count = static_cast<int>(init.outputs.size());
  bool all_defined = true;
  for (int i = 0; i < count; ++i) all_defined = all_defined && HasOutput(init, i);
  std::vector<int64_t> sizes;
  if (all_defined) {
    for (int i = 0; i < count; ++i) sizes.push_back(init.outputs[static_cast<size_t>(i)].dims[static_cast<size_t>(axis)]);
  } else {
    const Tensor* split =
        (init.node.opset >= 13 || init.node.opset < 2) ? HostInput(init, 1, "split") : nullptr;
    sizes = Guard(init, [&] {
      return tensor_ops::SplitSizes(init.node, in.dims[static_cast<size_t>(axis)], split, count);
    });
  }
  const int64_t outer = Product(in.dims, 0, static_cast<size_t>(axis));
  const int64_t inner = Product(in.dims, static_cast<size_t>(axis) + 1);
  const int64_t wide = in.dims[static_cast<size_t>(axis)] * inner;
  std::vector<int64_t> rows, offsets;
  int64_t column = 0;
  for (int i = 0; i < count; ++i) {
    const int64_t row = sizes[static_cast<size_t>(i)] * inner;
    if (HasOutput(init, i)) {
      const TensorDesc& out = init.outputs[static_cast<size_t>(i)];
      RequireSameDType(init, in, out);
      KILN_LAYER_CHECK(init, out.numel() == outer * row, "output ", i, " ", out.ToString(),
                       " does not match the split sizes");
    }
    rows.push_back(row);
    offsets.push_back(column);
    column += row;
  }
  KILN_LAYER_CHECK(init, column == wide, "split sizes do not add up to the input ", in.ToString());
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = HostOnlyExcept(init.inputs.size(), {0});
  layer->launches = outer * wide > 0 ? (count + tk::kMaxParts - 1) / tk::kMaxParts : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    if (outer * wide == 0) return;
    for (int first = 0; first < count; first += tk::kMaxParts) {
      tk::PartsParams p;
      p.count = std::min(count - first, tk::kMaxParts);
      p.outer = outer;
      uint64_t bits = static_cast<uint64_t>(wide) * esize |
                      reinterpret_cast<uintptr_t>(args.inputs[0]);
      for (int j = 0; j < p.count; ++j) {
        const size_t i = static_cast<size_t>(first + j);
        bits |= static_cast<uint64_t>(rows[i]) * esize | static_cast<uint64_t>(offsets[i]) * esize;
        if (i < args.outputs.size()) bits |= reinterpret_cast<uintptr_t>(args.outputs[i]);
      }
      const size_t unit = UnitOf(bits);
      auto units = [&](int64_t elements) {
        return elements * static_cast<int64_t>(esize) / static_cast<int64_t>(unit);
      };
      p.wide_row = units(wide);
      for (int j = 0; j < p.count; ++j) {
        const size_t i = static_cast<size_t>(first + j);
        p.row[j] = units(rows[i]);
        p.offset[j] = units(offsets[i]);
        p.ptr[j] = i < args.outputs.size() ? args.outputs[i] : nullptr;
      }
      tk::LaunchSplit(p, args.inputs[0], unit, args.stream);
    }
  };
  return layer;
}

// ---------------------------------------------------------------- gather / scatter

bool IndicesInt64(const LayerInit& init, const TensorDesc& indices) {
  KILN_LAYER_CHECK(init, indices.dtype == DType::kInt32 || indices.dtype == DType::kInt64,
                   "indices must be int32 or int64, got ", indices.ToString());
  return indices.dtype == DType::kInt64;
}

// Checks constant indices like the CPU does (non-constant out-of-range
// indices read as zeros / are skipped on the GPU: kernels cannot throw).
void CheckConstantIndices(const LayerInit& init, int input, int64_t size, const char* what) {
  const Tensor* t = ConstantOrNull(init, input);
  if (!t) return;
  for (int64_t v : t->ToInt64Vector())
    KILN_LAYER_CHECK(init, v >= -size && v < size, what, " index ", v,
                     " is out of range for a dimension of size ", size);
}

std::unique_ptr<Layer> MakeGather(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& data = Input(init, 0);
  const TensorDesc& indices = Input(init, 1);
  RequireSameDType(init, data, Output(init, 0));
  const size_t esize = ElementSize(init, data.dtype);
  const bool idx64 = IndicesInt64(init, indices);
  KILN_LAYER_CHECK(init, data.rank() >= 1, "cannot gather from a scalar");
  const int axis = Guard(
      init, [&] { return NormalizeAxis(init.node.attrs.GetInt("axis", 0), data.rank(), init.node); });
  const int64_t outer = Product(data.dims, 0, static_cast<size_t>(axis));
  const int64_t axis_len = data.dims[static_cast<size_t>(axis)];
  const int64_t block = Product(data.dims, static_cast<size_t>(axis) + 1);
  const int64_t n_idx = indices.numel();
  CheckConstantIndices(init, 1, axis_len, "Gather");
  const int64_t n = outer * n_idx * block;
  auto layer = std::make_unique<TensorLayer>();
  layer->launches = n > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    if (n == 0) return;
    const size_t unit = UnitOf(static_cast<uint64_t>(block) * esize |
                               reinterpret_cast<uintptr_t>(args.inputs[0]) |
                               reinterpret_cast<uintptr_t>(args.outputs[0]));
    const int64_t block_units = block * static_cast<int64_t>(esize) / static_cast<int64_t>(unit);
    tk::LaunchGather(args.inputs[0], args.inputs[1], idx64, args.outputs[0], outer, axis_len,
                     n_idx, block_units, unit, args.stream);
  };
  return layer;
}

tk::ElementIndexParams ElementParams(const LayerInit& init, const TensorDesc& data,
                                     const TensorDesc& indices, const char* what) {
  KILN_LAYER_CHECK(init, data.rank() >= 1 && indices.rank() == data.rank(), "data ",
                   data.ToString(), " and indices ", indices.ToString(),
                   " must have the same rank >= 1");
  RequireRank(init, indices.dims.size());
  tk::ElementIndexParams p;
  p.rank = data.rank();
  p.axis = Guard(
      init, [&] { return NormalizeAxis(init.node.attrs.GetInt("axis", 0), data.rank(), init.node); });
  p.axis_len = data.dims[static_cast<size_t>(p.axis)];
  std::vector<int64_t> strides = RowMajorStrides(data.dims);
  for (int d = 0; d < p.rank; ++d) {
    KILN_LAYER_CHECK(init, d == p.axis || indices.dims[static_cast<size_t>(d)] <= data.dims[static_cast<size_t>(d)],
                     "indices ", indices.ToString(), " exceed data ", data.ToString(), " off the ",
                     what, " axis");
    p.idx_dims[d] = indices.dims[static_cast<size_t>(d)];
    p.data_strides[d] = strides[static_cast<size_t>(d)];
  }
  return p;
}

std::unique_ptr<Layer> MakeGatherElements(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& data = Input(init, 0);
  const TensorDesc& indices = Input(init, 1);
  RequireSameDType(init, data, Output(init, 0));
  const size_t esize = ElementSize(init, data.dtype);
  const bool idx64 = IndicesInt64(init, indices);
  tk::ElementIndexParams p = ElementParams(init, data, indices, "gather");
  CheckConstantIndices(init, 1, p.axis_len, "element");
  auto layer = std::make_unique<TensorLayer>();
  layer->launches = indices.numel() > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchGatherElements(args.inputs[0], args.inputs[1], idx64, args.outputs[0], esize, p,
                             args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeGatherND(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& data = Input(init, 0);
  const TensorDesc& indices = Input(init, 1);
  RequireSameDType(init, data, Output(init, 0));
  const size_t esize = ElementSize(init, data.dtype);
  const bool idx64 = IndicesInt64(init, indices);
  const int64_t b = init.node.attrs.GetInt("batch_dims", 0);
  const int r = data.rank(), q = indices.rank();
  KILN_LAYER_CHECK(init, r >= 1 && q >= 1 && b >= 0 && b < std::min(r, q),
                   "bad batch_dims/ranks for data ", data.ToString(), " and indices ",
                   indices.ToString());
  const int64_t m = indices.dims.back();
  KILN_LAYER_CHECK(init, m >= 1 && m <= r - b && m <= tk::kMaxRank, "indices' last dim ", m,
                   " is not supported for data ", data.ToString());
  const size_t bs = static_cast<size_t>(b);
  for (size_t i = 0; i < bs; ++i)
    KILN_LAYER_CHECK(init, data.dims[i] == indices.dims[i], "batch dims of data ",
                     data.ToString(), " and indices ", indices.ToString(), " differ");
  std::vector<int64_t> strides = RowMajorStrides(data.dims);
  tk::GatherNDParams p;
  p.m = static_cast<int>(m);
  p.batches = Product(data.dims, 0, bs);
  p.per_batch = Product(indices.dims, bs, indices.dims.size() - 1);
  p.slice = Product(data.dims, bs + static_cast<size_t>(m));
  p.batch_stride = b == 0 ? 0 : strides[bs - 1];
  for (int k = 0; k < p.m; ++k) {
    p.dims[k] = data.dims[bs + static_cast<size_t>(k)];
    p.strides[k] = strides[bs + static_cast<size_t>(k)];
  }
  if (const Tensor* t = ConstantOrNull(init, 1)) {
    std::vector<int64_t> v = t->ToInt64Vector();
    for (size_t i = 0; i < v.size(); ++i) {
      const int64_t size = p.dims[i % static_cast<size_t>(m)];
      KILN_LAYER_CHECK(init, v[i] >= -size && v[i] < size, "GatherND index ", v[i],
                       " is out of range for a dimension of size ", size);
    }
  }
  auto layer = std::make_unique<TensorLayer>();
  layer->launches = p.batches * p.per_batch * p.slice > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchGatherND(args.inputs[0], args.inputs[1], idx64, args.outputs[0], esize, p,
                       args.stream);
  };
  return layer;
}

tk::ScatterReduction ScatterReductionOf(const LayerInit& init, DType dtype) {
  const std::string r =
      init.node.opset >= 16 ? init.node.attrs.GetString("reduction", "none") : "none";
  tk::ScatterReduction reduction = tk::ScatterReduction::kNone;
  if (r == "add") {
    reduction = tk::ScatterReduction::kAdd;
  } else if (r == "mul") {
    reduction = tk::ScatterReduction::kMul;
  } else if (r == "max" && init.node.opset >= 18) {
    reduction = tk::ScatterReduction::kMax;
  } else if (r == "min" && init.node.opset >= 18) {
    reduction = tk::ScatterReduction::kMin;
  } else {
    KILN_LAYER_CHECK(init, r == "none", "unsupported reduction '", r, "'");
  }
  KILN_LAYER_CHECK(init,
                   reduction == tk::ScatterReduction::kNone || tk::ScatterReductionSupported(dtype),
                   "reduction '", r, "' does not support ", DTypeName(dtype));
  return reduction;
}

std::unique_ptr<Layer> MakeScatterElements(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& data = Input(init, 0);
  const TensorDesc& indices = Input(init, 1);
  const TensorDesc& updates = Input(init, 2);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, data, out);
  RequireSameDType(init, updates, out);
  ElementSize(init, data.dtype);
  const bool idx64 = IndicesInt64(init, indices);
  KILN_LAYER_CHECK(init, indices.dims == updates.dims, "indices ", indices.ToString(),
                   " and updates ", updates.ToString(), " must have the same shape");
  tk::ElementIndexParams p = ElementParams(init, data, indices, "scatter");
  CheckConstantIndices(init, 1, p.axis_len, "element");
  const tk::ScatterReduction reduction = ScatterReductionOf(init, data.dtype);
  const DType dtype = data.dtype;
  const size_t bytes = data.nbytes();
  auto layer = std::make_unique<TensorLayer>();
  layer->launches = (bytes > 0 ? 1 : 0) + (indices.numel() > 0 ? 1 : 0);
  layer->enqueue = [=](const LaunchArgs& args) {
    if (bytes)
      KILN_CUDA_CHECK(cudaMemcpyAsync(args.outputs[0], args.inputs[0], bytes,
                                      cudaMemcpyDeviceToDevice, args.stream));
    tk::LaunchScatterElements(args.inputs[2], args.inputs[1], idx64, args.outputs[0], dtype,
                              reduction, p, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeScatterND(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& data = Input(init, 0);
  const TensorDesc& indices = Input(init, 1);
  const TensorDesc& updates = Input(init, 2);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, data, out);
  RequireSameDType(init, updates, out);
  ElementSize(init, data.dtype);
  const bool idx64 = IndicesInt64(init, indices);
  KILN_LAYER_CHECK(init, indices.rank() >= 1, "indices must have rank >= 1");
  const int64_t m = indices.dims.back();
  KILN_LAYER_CHECK(init, m >= 0 && m <= data.rank() && m <= tk::kMaxRank, "indices' last dim ",
                   m, " is not supported for data ", data.ToString());
  std::vector<int64_t> expected(indices.dims.begin(), indices.dims.end() - 1);
  expected.insert(expected.end(), data.dims.begin() + static_cast<std::ptrdiff_t>(m),
                  data.dims.end());
  KILN_LAYER_CHECK(init, updates.dims == expected, "updates ", updates.ToString(),
                   " must have shape ", DimsToString(expected));
  std::vector<int64_t> strides = RowMajorStrides(data.dims);
  tk::GatherNDParams p;
  p.m = static_cast<int>(m);
  p.batches = 1;
  p.per_batch = Product(indices.dims, 0, indices.dims.size() - 1);
  p.slice = Product(data.dims, static_cast<size_t>(m));
  for (int k = 0; k < p.m; ++k) {
    p.dims[k] = data.dims[static_cast<size_t>(k)];
    p.strides[k] = strides[static_cast<size_t>(k)];
  }
  if (const Tensor* t = ConstantOrNull(init, 1); t && m > 0) {
    std::vector<int64_t> v = t->ToInt64Vector();
    for (size_t i = 0; i < v.size(); ++i) {
      const int64_t size = p.dims[i % static_cast<size_t>(m)];
      KILN_LAYER_CHECK(init, v[i] >= -size && v[i] < size, "ScatterND index ", v[i],
                       " is out of range for a dimension of size ", size);
    }
  }
  const tk::ScatterReduction reduction = ScatterReductionOf(init, data.dtype);
  const DType dtype = data.dtype;
  const size_t bytes = data.nbytes();
  auto layer = std::make_unique<TensorLayer>();
  layer->launches = (bytes > 0 ? 1 : 0) + (updates.numel() > 0 ? 1 : 0);
  layer->enqueue = [=](const LaunchArgs& args) {
    if (bytes)
      KILN_CUDA_CHECK(cudaMemcpyAsync(args.outputs[0], args.inputs[0], bytes,
                                      cudaMemcpyDeviceToDevice, args.stream));
    tk::LaunchScatterND(args.inputs[2], args.inputs[1], idx64, args.outputs[0], dtype, reduction,
                        p, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeNonZero(const LayerInit& init) {
  KILN_LAYER_CHECK(init, false,
                   "data-dependent output shape: not supported in static-shape GPU engines");
  return nullptr;
}

// ---------------------------------------------------------------- pad

std::unique_ptr<Layer> MakePad(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, in, out);
  const size_t esize = ElementSize(init, in.dtype);
  const int rank = in.rank();
  RequireRank(init, static_cast<size_t>(rank));
  const bool inputs = init.node.opset >= 11;
  const Tensor* pads = inputs ? HostInput(init, 1, "pads") : nullptr;
  const Tensor* axes = init.node.opset >= 18 ? HostInput(init, 3, "axes") : nullptr;
  tensor_ops::PadArgs a =
      Guard(init, [&] { return tensor_ops::GetPadArgs(init.node, rank, pads, axes); });
  tk::PadParams p;
  p.rank = rank;
  switch (a.mode) {
    case tensor_ops::PadMode::kConstant: p.mode = tk::PadKind::kConstant; break;
    case tensor_ops::PadMode::kReflect: p.mode = tk::PadKind::kReflect; break;
    case tensor_ops::PadMode::kEdge: p.mode = tk::PadKind::kEdge; break;
    case tensor_ops::PadMode::kWrap: p.mode = tk::PadKind::kWrap; break;
  }
  std::vector<int64_t> strides = RowMajorStrides(in.dims);
  for (int d = 0; d < rank; ++d) {
    const size_t ds = static_cast<size_t>(d);
    const int64_t begin = a.pads[ds], end = a.pads[static_cast<size_t>(rank) + ds];
    KILN_LAYER_CHECK(init, in.dims[ds] + begin + end == out.dims[ds], "pads ",
                     DimsToString(a.pads), " do not turn ", in.ToString(), " into ",
                     out.ToString());
    KILN_LAYER_CHECK(init,
                     !(in.dims[ds] == 0 && (begin > 0 || end > 0) &&
                       a.mode != tensor_ops::PadMode::kConstant),
                     "cannot pad an empty axis in ", init.node.attrs.GetString("mode", "constant"),
                     " mode");
    p.in_dims[d] = in.dims[ds];
    p.out_dims[d] = out.dims[ds];
    p.begins[d] = begin;
    p.in_strides[d] = strides[ds];
  }
  // The fill value: the constant_value input read on the device, or the
  // attribute / zero by value.
  bool fill_input = false;
  if (inputs && HasInput(init, 2) && init.inputs[2].numel() > 0) {
    KILN_LAYER_CHECK(init, init.inputs[2].dtype == in.dtype, "constant_value is ",
                     init.inputs[2].ToString(), " but data is ", DTypeName(in.dtype));
    fill_input = true;
  } else {
    p.fill_pattern = Guard(init, [&] {
      return ScalarPattern(in.dtype, inputs ? 0.0 : init.node.attrs.GetFloat("value", 0.f));
    });
  }
  const int64_t n = out.numel();
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = HostOnlyExcept(init.inputs.size(), {0});
  if (fill_input) layer->host_only[2] = false;
  layer->launches = n > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchPad(args.inputs[0], args.outputs[0], fill_input ? args.inputs[2] : nullptr, esize,
                  p, args.stream);
  };
  return layer;
}

// ---------------------------------------------------------------- resize

// True when resizing `axis` maps every x to x exactly (such axes are skipped,
// as the CPU reference does), using the reference's own coordinate math.
bool AxisIsIdentity(const tensor_ops::ResizePlan& plan, int axis, int rank, int64_t in_len,
                    int64_t out_len) {
  if (in_len != out_len) return false;
  if (plan.mode == tensor_ops::ResizeMode::kNearest) {
    for (int64_t x = 0; x < out_len; ++x) {
      const double coord = tensor_ops::ResizeSourceCoordinate(plan, axis, rank, x, in_len, out_len);
      if (tensor_ops::ResizeOutsideCrop(plan, coord, in_len)) return false;
      if (tensor_ops::ResizeNearestIndex(plan, coord, plan.scales[static_cast<size_t>(axis)],
                                         in_len) != x)
        return false;
    }
    return true;
  }
  const std::vector<tensor_ops::ResizeTaps> taps =
      tensor_ops::ResizeAxisTaps(plan, axis, rank, in_len, out_len);
  for (int64_t x = 0; x < out_len; ++x) {
    const tensor_ops::ResizeTaps& t = taps[static_cast<size_t>(x)];
    if (t.outside) return false;
    for (int k = 0; k < t.count; ++k)
      if (!(t.weight[k] == 0 || (t.weight[k] == 1 && t.index[k] == x))) return false;
  }
  return true;
}

std::unique_ptr<Layer> MakeResize(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, in, out);
  ElementSize(init, in.dtype);
  const int rank = in.rank();
  RequireRank(init, static_cast<size_t>(rank));
  int roi = -1, scales = -1, sizes = -1;
  tensor_ops::ResizeInputIndices(init.node, &roi, &scales, &sizes);
  const bool crop =
      init.node.attrs.GetString("coordinate_transformation_mode", "") == "tf_crop_and_resize";
  tensor_ops::ResizeInputs inputs;
  inputs.roi = roi >= 0 && crop ? HostInput(init, roi, "roi") : nullptr;
  inputs.scales = scales >= 0 ? HostInput(init, scales, "scales") : nullptr;
  inputs.sizes = sizes >= 0 ? HostInput(init, sizes, "sizes") : nullptr;
  tensor_ops::ResizePlan plan =
      Guard(init, [&] { return tensor_ops::PlanResize(init.node, in.dims, inputs); });
  KILN_LAYER_CHECK(init, plan.out_dims == out.dims, "resize plan ", DimsToString(plan.out_dims),
                   " does not match the output ", out.ToString());
  KILN_LAYER_CHECK(init, out.numel() == 0 || in.numel() > 0, "cannot resize an empty tensor to ",
                   out.ToString());
  tk::ResizeParams p;
  p.rank = rank;
  switch (plan.mode) {
    case tensor_ops::ResizeMode::kNearest: p.interp = tk::ResizeInterp::kNearest; break;
    case tensor_ops::ResizeMode::kLinear: p.interp = tk::ResizeInterp::kLinear; break;
    case tensor_ops::ResizeMode::kCubic: p.interp = tk::ResizeInterp::kCubic; break;
  }
  const std::string& cm = plan.coordinate_mode;
  if (cm == "half_pixel") {
    p.coord = tk::ResizeCoord::kHalfPixel;
  } else if (cm == "half_pixel_symmetric") {
    p.coord = tk::ResizeCoord::kHalfPixelSymmetric;
  } else if (cm == "pytorch_half_pixel") {
    p.coord = tk::ResizeCoord::kPytorchHalfPixel;
  } else if (cm == "align_corners") {
    p.coord = tk::ResizeCoord::kAlignCorners;
  } else if (cm == "asymmetric") {
    p.coord = tk::ResizeCoord::kAsymmetric;
  } else if (cm == "tf_half_pixel_for_nn") {
    p.coord = tk::ResizeCoord::kTfHalfPixelForNn;
  } else if (cm == "tf_crop_and_resize") {
    p.coord = tk::ResizeCoord::kTfCropAndResize;
  } else {
    KILN_LAYER_CHECK(init, false, "unsupported coordinate_transformation_mode '", cm, "'");
  }
  const std::string& nm = plan.nearest_mode;
  if (nm == "round_prefer_floor") {
    p.nearest = tk::ResizeNearest::kRoundPreferFloor;
  } else if (nm == "round_prefer_ceil") {
    p.nearest = tk::ResizeNearest::kRoundPreferCeil;
  } else if (nm == "floor") {
    p.nearest = tk::ResizeNearest::kFloor;
  } else if (nm == "ceil") {
    p.nearest = tk::ResizeNearest::kCeil;
  } else if (nm == "simple") {
    p.nearest = tk::ResizeNearest::kSimple;
  } else {
    KILN_LAYER_CHECK(init, plan.mode != tensor_ops::ResizeMode::kNearest,
                     "unsupported nearest_mode '", nm, "'");
  }
  p.cubic_a = static_cast<double>(plan.cubic_a);
  p.exclude_outside = plan.exclude_outside ? 1 : 0;
  p.extrapolation = plan.extrapolation_value;
  if (plan.mode == tensor_ops::ResizeMode::kNearest) {
    p.extrapolation_pattern =
        Guard(init, [&] { return ScalarPattern(in.dtype, plan.extrapolation_value); });
  } else {
    KILN_LAYER_CHECK(init,
                     in.dtype == DType::kFloat32 || in.dtype == DType::kFloat16 ||
                         in.dtype == DType::kBFloat16,
                     "linear/cubic resize supports float32, float16 and bfloat16, not ",
                     DTypeName(in.dtype));
  }
  std::vector<int64_t> strides = RowMajorStrides(in.dims);
  int interpolated = 0;
  for (int d = 0; d < rank; ++d) {
    const size_t ds = static_cast<size_t>(d);
    tk::ResizeAxis& a = p.axes[d];
    a.in_len = in.dims[ds];
    a.out_len = out.dims[ds];
    a.scale = plan.scales[ds];
    a.resized = static_cast<double>(a.in_len) * a.scale;
    const double adjustment =
        static_cast<double>(a.out_len) / (a.scale * static_cast<double>(a.in_len));
    const double center = static_cast<double>(a.in_len) / 2;
    a.sym_offset = center * (1 - adjustment);
    a.roi_start = plan.roi[ds];
    a.roi_end = plan.roi[static_cast<size_t>(rank) + ds];
    a.identity = out.numel() > 0 && AxisIsIdentity(plan, d, rank, a.in_len, a.out_len) ? 1 : 0;
    if (!a.identity) ++interpolated;
    p.in_strides[d] = strides[ds];
  }
  KILN_LAYER_CHECK(init,
                   plan.mode == tensor_ops::ResizeMode::kNearest ||
                       interpolated <= tk::kMaxInterpolatedAxes,
                   "linear/cubic resize of more than ", tk::kMaxInterpolatedAxes,
                   " axes at once is not supported");
  const DType dtype = in.dtype;
  const int64_t n = out.numel();
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = HostOnlyExcept(init.inputs.size(), {0});
  layer->launches = n > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchResize(args.inputs[0], args.outputs[0], dtype, n, p, args.stream);
  };
  return layer;
}

// ---------------------------------------------------------------- topk, cumsum, trilu, onehot

std::unique_ptr<Layer> MakeTopK(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  const TensorDesc& values = Output(init, 0);
  const TensorDesc& indices = Output(init, 1);
  RequireSameDType(init, in, values);
  KILN_LAYER_CHECK(init, indices.dtype == DType::kInt64, "indices output must be int64");
  KILN_LAYER_CHECK(init, tk::TopKSupported(in.dtype), "dtype ", DTypeName(in.dtype),
                   " is not supported");
  KILN_LAYER_CHECK(init, in.rank() >= 1, "TopK needs an input of rank >= 1");
  const int axis = Guard(
      init, [&] { return NormalizeAxis(init.node.attrs.GetInt("axis", -1), in.rank(), init.node); });
  const size_t as = static_cast<size_t>(axis);
  const int64_t k = values.dims[as];
  const int64_t len = in.dims[as];
  KILN_LAYER_CHECK(init, k >= 0 && k <= len, "k=", k, " is out of range for an axis of ", len);
  KILN_LAYER_CHECK(init, len < std::numeric_limits<int32_t>::max(), "axis is too long");
  const bool largest = init.node.opset < 11 || init.node.attrs.GetInt("largest", 1) != 0;
  const int64_t outer = Product(in.dims, 0, as);
  const int64_t inner = Product(in.dims, as + 1);
  const DType dtype = in.dtype;
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = {false, true};
  layer->launches = outer * inner * k > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchTopK(args.inputs[0], dtype, args.outputs[0], args.outputs[1], outer, len, inner, k,
                   largest, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeCumSum(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  RequireSameDType(init, in, Output(init, 0));
  KILN_LAYER_CHECK(init, tk::CumSumSupported(in.dtype), "dtype ", DTypeName(in.dtype),
                   " is not supported");
  const Tensor* axis_value = HostInput(init, 1, "axis");
  KILN_LAYER_CHECK(init, axis_value && axis_value->numel() == 1, "axis must be a scalar");
  const int axis = Guard(
      init, [&] { return NormalizeAxis(axis_value->GetAsInt64(0), in.rank(), init.node); });
  const bool exclusive = init.node.attrs.GetInt("exclusive", 0) != 0;
  const bool reverse = init.node.attrs.GetInt("reverse", 0) != 0;
  const size_t as = static_cast<size_t>(axis);
  const int64_t outer = Product(in.dims, 0, as);
  const int64_t len = in.rank() == 0 ? 1 : in.dims[as];
  const int64_t inner = Product(in.dims, as + 1);
  const DType dtype = in.dtype;
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = {false, true};
  layer->launches = in.numel() > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchCumSum(args.inputs[0], args.outputs[0], dtype, outer, len, inner, exclusive,
                     reverse, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeTrilu(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& in = Input(init, 0);
  RequireSameDType(init, in, Output(init, 0));
  const size_t esize = ElementSize(init, in.dtype);
  KILN_LAYER_CHECK(init, in.rank() >= 2, "input must have rank >= 2, got ", in.ToString());
  const bool upper = init.node.attrs.GetInt("upper", 1) != 0;
  int64_t k = 0;
  bool k_on_device = false;
  if (HasInput(init, 1)) {
    KILN_LAYER_CHECK(init, init.inputs[1].numel() == 1, "k must be a scalar");
    if (const Tensor* kv = ConstantOrNull(init, 1)) {
      k = kv->GetAsInt64(0);
    } else {
      KILN_LAYER_CHECK(init, init.inputs[1].dtype == DType::kInt64, "k must be int64");
      k_on_device = true;
    }
  }
  const int64_t rows = in.dims[static_cast<size_t>(in.rank() - 2)];
  const int64_t cols = in.dims[static_cast<size_t>(in.rank() - 1)];
  const int64_t matrices = Product(in.dims, 0, in.dims.size() - 2);
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = {false, !k_on_device};
  layer->launches = in.numel() > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchTrilu(args.inputs[0], args.outputs[0], esize, matrices, rows, cols, k,
                    k_on_device ? args.inputs[1] : nullptr, upper, args.stream);
  };
  return layer;
}

std::unique_ptr<Layer> MakeOneHot(const LayerInit& init) {
  RequireRowMajor(init);
  const TensorDesc& indices = Input(init, 0);
  const TensorDesc& values = Input(init, 2);
  const TensorDesc& out = Output(init, 0);
  RequireSameDType(init, values, out);
  KILN_LAYER_CHECK(init, values.numel() == 2, "values must hold [off, on], got ",
                   values.ToString());
  KILN_LAYER_CHECK(init, tk::OneHotIndexSupported(indices.dtype), "indices dtype ",
                   DTypeName(indices.dtype), " is not supported");
  const size_t esize = ElementSize(init, out.dtype);
  const int axis = Guard(
      init, [&] { return NormalizeAxis(init.node.attrs.GetInt("axis", -1), out.rank(), init.node); });
  const int64_t depth = out.dims[static_cast<size_t>(axis)];
  const int64_t outer = Product(indices.dims, 0, static_cast<size_t>(axis));
  const int64_t inner = Product(indices.dims, static_cast<size_t>(axis));
  const DType idx_dtype = indices.dtype;
  auto layer = std::make_unique<TensorLayer>();
  layer->host_only = {false, true, false};
  layer->launches = out.numel() > 0 ? 1 : 0;
  layer->enqueue = [=](const LaunchArgs& args) {
    tk::LaunchOneHot(args.inputs[0], idx_dtype, args.inputs[2], args.outputs[0], esize, outer,
                     depth, inner, args.stream);
  };
  return layer;
}

}  // namespace

void RegisterSpaceToDepthGpuLayers(GpuLayerRegistry& registry);  // layers/space_to_depth.cc

void RegisterTensorGpuLayers(GpuLayerRegistry& registry) {
  for (const char* name : {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})
    registry.Register({name, MakeAlias, false});
  registry.Register({"Dropout", MakeDropout, false});
  registry.Register({"Constant", MakeConstant, false});
  registry.Register({"Shape", MakeShape, false});
  registry.Register({"Size", MakeSize, false});
  registry.Register({"ConstantOfShape", MakeConstantOfShape, false});
  registry.Register({"EyeLike", MakeEyeLike, false});
  registry.Register({"Range", MakeRange, false});
  registry.Register({"Transpose", MakeTranspose, false});
  registry.Register({"Slice", MakeSlice, false});
  registry.Register({"Expand", MakeExpand, false});
  registry.Register({"Tile", MakeTile, false});
  registry.Register({"DepthToSpace", MakeDepthToSpace, false});
  registry.Register({"SpaceToDepth", MakeDepthToSpace, false});
  registry.Register({"Concat", MakeConcat, true});
  registry.Register({"Split", MakeSplit, false});
  registry.Register({"Gather", MakeGather, false});
  registry.Register({"GatherElements", MakeGatherElements, false});
  registry.Register({"GatherND", MakeGatherND, false});
  registry.Register({"ScatterElements", MakeScatterElements, false});
  registry.Register({"Scatter", MakeScatterElements, false});
  registry.Register({"ScatterND", MakeScatterND, false});
  registry.Register({"NonZero", MakeNonZero, false});
  registry.Register({"Pad", MakePad, false});
  registry.Register({"Resize", MakeResize, false});
  registry.Register({"Upsample", MakeResize, false});
  registry.Register({"TopK", MakeTopK, false});
  registry.Register({"CumSum", MakeCumSum, false});
  registry.Register({"Trilu", MakeTrilu, false});
  registry.Register({"OneHot", MakeOneHot, false});
  registry.Register({"KilnToNHWC", [](const LayerInit& init) { return MakeLayoutConversion(init, true); }, true});
  registry.Register({"KilnToRowMajor", [](const LayerInit& init) { return MakeLayoutConversion(init, false); }, true});
  RegisterSpaceToDepthGpuLayers(registry);
}

}  // namespace kiln::gpu
