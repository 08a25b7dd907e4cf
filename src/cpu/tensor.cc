// CPU kernels for the tensor (shape and data movement) operators.
//
// Pure data movement works on bytes, dispatched on element size only, so
// every dtype (bool, float16, int64, ...) shares one code path. Most layout
// ops (Transpose, Slice, Expand, Tile, DepthToSpace) reduce to one strided
// copy: out[i0..in] = src[offset + sum(ik * stride_k)].
#include "ops/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>

#include "cpu/kernel_util.h"

namespace kiln {
namespace {

using tensor_ops::PadMode;
using tensor_ops::ResizeMode;
using tensor_ops::ResizePlan;
using tensor_ops::ResizeTaps;

// Calls fn(U{}) with an unsigned integer type as wide as one element.
template <typename Fn>
void DispatchBySize(size_t element_size, Fn&& fn) {
  switch (element_size) {
    case 1:
      fn(uint8_t{});
      break;
    case 2:
      fn(uint16_t{});
      break;
    case 4:
      fn(uint32_t{});
      break;
    case 8:
      fn(uint64_t{});
      break;
    default:
      Fail("unsupported element size ", element_size);
  }
}

std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i)
    strides[static_cast<size_t>(i)] =
        strides[static_cast<size_t>(i) + 1] * dims[static_cast<size_t>(i) + 1];
  return strides;
}

template <typename U>
void StridedCopyTyped(const U* src, int64_t offset, const std::vector<int64_t>& dims,
                      const std::vector<int64_t>& strides, U* dst) {
  const int64_t total = Product(dims);
  if (total == 0) return;
  const size_t rank = dims.size();
  if (rank == 0) {
    dst[0] = src[offset];
    return;
  }
  const int64_t inner = dims[rank - 1];
  const int64_t inner_stride = strides[rank - 1];
  std::vector<int64_t> index(rank - 1, 0);
  int64_t base = offset;
  for (int64_t o = 0; o < total; o += inner) {
    if (inner_stride == 1) {
      std::memcpy(dst + o, src + base, static_cast<size_t>(inner) * sizeof(U));
    } else {
      for (int64_t j = 0; j < inner; ++j) dst[o + j] = src[base + j * inner_stride];
    }
    // Advance the odometer over the outer dims.
    for (int k = static_cast<int>(rank) - 2; k >= 0; --k) {
      size_t kk = static_cast<size_t>(k);
      base += strides[kk];
      if (++index[kk] < dims[kk]) break;
      base -= strides[kk] * dims[kk];
      index[kk] = 0;
    }
  }
}

// dst (contiguous, `dims`) gets src elements at offset + sum(index_k * strides_k).
void StridedCopy(const Tensor& src, int64_t offset, const std::vector<int64_t>& dims,
                 const std::vector<int64_t>& strides, Tensor& dst) {
  DispatchBySize(DTypeSize(src.dtype()), [&](auto u) {
    using U = decltype(u);
    StridedCopyTyped(src.data<U>(), offset, dims, strides, dst.data<U>());
  });
}

void CopyBytes(const Tensor& src, Tensor& dst) {
  KILN_CHECK(src.nbytes() == dst.nbytes(), "cannot copy ", src.TypeString(), " into ",
             dst.TypeString());
  if (src.nbytes() > 0) std::memcpy(dst.raw_data(), src.raw_data(), src.nbytes());
}

// One element of `dtype` holding `value`, as raw bytes.
Tensor ScalarOf(DType dtype, double value) {
  Tensor t = Tensor::FromFloats({}, {0.f});
  if (dtype == DType::kInt64) return Tensor::FromInt64s({}, {static_cast<int64_t>(value)});
  if (dtype == DType::kFloat64) {
    Tensor d(DType::kFloat64, {});
    d.data<double>()[0] = value;
    return d;
  }
  t.data<float>()[0] = static_cast<float>(value);
  return t.CastTo(dtype);
}

// Fills every element of `dst` with the single element of `value` (same dtype).
void FillWith(Tensor& dst, const Tensor& value) {
  DispatchBySize(DTypeSize(dst.dtype()), [&](auto u) {
    using U = decltype(u);
    std::fill_n(dst.data<U>(), dst.numel(), value.data<U>()[0]);
  });
}

std::vector<int64_t> IndicesAsInt64(const Tensor& indices) {
  KILN_CHECK(indices.dtype() == DType::kInt32 || indices.dtype() == DType::kInt64,
             "indices must be int32 or int64, got ", indices.TypeString());
  return indices.ToInt64Vector();
}

// Maps a possibly negative index into [0, size); throws when out of range.
int64_t CheckIndex(int64_t index, int64_t size, const char* what) {
  KILN_CHECK(index >= -size && index < size, what, " index ", index,
             " is out of range for a dimension of size ", size);
  return index < 0 ? index + size : index;
}

// ---- Simple copies ----

void CopyKernel(KernelContext& ctx) { CopyBytes(ctx.input(0), ctx.output(0)); }

void DropoutKernel(KernelContext& ctx) {
  tensor_ops::CheckLegacyDropoutIsTest(ctx.node());
  if (ctx.opset() >= 12) {
    const Tensor* training = ctx.optional_input(2);
    const Tensor* ratio = ctx.optional_input(1);
    // Training mode drops at random, except with ratio 0 where it is an identity.
    KILN_CHECK(
        !training || training->GetAsDouble(0) == 0.0 || (ratio && ratio->GetAsDouble(0) == 0.0),
        "training_mode=true is not supported: kiln runs inference only");
  }
  CopyBytes(ctx.input(0), ctx.output(0));
  if (ctx.has_output(1)) {
    Tensor& mask = ctx.output(1);  // Nothing is dropped at inference: all true / 1.
    FillWith(mask, ScalarOf(mask.dtype(), 1.0));
  }
}

void ConstantKernel(KernelContext& ctx) {
  CopyBytes(tensor_ops::ConstantValue(ctx.node()), ctx.output(0));
}

void ShapeKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  auto [start, end] = tensor_ops::ShapeRange(ctx.node(), in.rank());
  int64_t* out = ctx.output(0).data<int64_t>();
  for (int i = start; i < end; ++i) out[i - start] = in.dim(i);
}

void SizeKernel(KernelContext& ctx) { ctx.output(0).data<int64_t>()[0] = ctx.input(0).numel(); }

void ConstantOfShapeKernel(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  if (ctx.attrs().has("value")) {
    FillWith(out, ctx.attrs().GetTensor("value"));
  } else {
    std::fill_n(out.data<float>(), out.numel(), 0.f);
  }
}

// ---- Layout ----

void TransposeKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  std::vector<int> perm = tensor_ops::ResolvePerm(ctx.node(), in.rank());
  std::vector<int64_t> in_strides = ContiguousStrides(in.dims());
  std::vector<int64_t> dims, strides;
  for (int p : perm) {
    dims.push_back(in.dim(p));
    strides.push_back(in_strides[static_cast<size_t>(p)]);
  }
  StridedCopy(in, 0, dims, strides, ctx.output(0));
}

void SliceKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  tensor_ops::SliceArgs args =
      tensor_ops::GetSliceArgs(ctx.node(), in.rank(), ctx.optional_input(1), ctx.optional_input(2),
                               ctx.optional_input(3), ctx.optional_input(4));
  std::vector<int64_t> strides = ContiguousStrides(in.dims());
  std::vector<int64_t> dims = in.dims();
  int64_t offset = 0;
  for (size_t i = 0; i < args.axes.size(); ++i) {
    size_t axis = static_cast<size_t>(args.axes[i]);
    tensor_ops::SliceRange r =
        tensor_ops::ResolveSliceRange(dims[axis], args.starts[i], args.ends[i], args.steps[i]);
    offset += r.start * strides[axis];
    strides[axis] *= r.step;
    dims[axis] = r.count;
  }
  StridedCopy(in, offset, dims, strides, ctx.output(0));
}

void ExpandKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  const size_t lead = out.dims().size() - in.dims().size();
  std::vector<int64_t> in_strides = ContiguousStrides(in.dims());
  std::vector<int64_t> strides(out.dims().size(), 0);  // Broadcast dims read one element.
  for (size_t i = 0; i < in.dims().size(); ++i)
    if (in.dims()[i] != 1) strides[lead + i] = in_strides[i];
  StridedCopy(in, 0, out.dims(), strides, out);
}

void TileKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  std::vector<int64_t> reps = ctx.input(1).ToInt64Vector();
  // View the output [r0*d0, r1*d1, ...] as [r0, d0, r1, d1, ...]; repeats read stride 0.
  std::vector<int64_t> in_strides = ContiguousStrides(in.dims());
  std::vector<int64_t> dims, strides;
  for (int i = 0; i < in.rank(); ++i) {
    dims.push_back(reps[static_cast<size_t>(i)]);
    strides.push_back(0);
    dims.push_back(in.dim(i));
    strides.push_back(in_strides[static_cast<size_t>(i)]);
  }
  StridedCopy(in, 0, dims, strides, ctx.output(0));
}

void DepthToSpaceKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  const int64_t b = ctx.attrs().GetInt("blocksize");
  const int64_t n = in.dim(0), c = in.dim(1), h = in.dim(2), w = in.dim(3);
  const int64_t oc = c / (b * b);
  const bool crd = ctx.opset() >= 11 && ctx.attrs().GetString("mode", "DCR") == "CRD";
  KILN_CHECK(crd || ctx.attrs().GetString("mode", "DCR") == "DCR", "unknown mode '",
             ctx.attrs().GetString("mode"), "'");
  // Input viewed as [n, b1, b2, oc, h, w] (DCR) or [n, oc, b1, b2, h, w] (CRD);
  // output is [n, oc, h, b1, w, b2].
  std::vector<int64_t> s = ContiguousStrides(crd ? std::vector<int64_t>{n, oc, b, b, h, w}
                                                 : std::vector<int64_t>{n, b, b, oc, h, w});
  int64_t sn = s[0], sc = crd ? s[1] : s[3], sb1 = crd ? s[2] : s[1], sb2 = crd ? s[3] : s[2];
  StridedCopy(in, 0, {n, oc, h, b, w, b}, {sn, sc, s[4], sb1, s[5], sb2}, ctx.output(0));
}

void SpaceToDepthKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  const int64_t b = ctx.attrs().GetInt("blocksize");
  const int64_t n = in.dim(0), c = in.dim(1), h = in.dim(2) / b, w = in.dim(3) / b;
  // Input viewed as [n, c, h, b1, w, b2]; output is [n, b1, b2, c, h, w].
  std::vector<int64_t> s = ContiguousStrides({n, c, h, b, w, b});
  StridedCopy(in, 0, {n, b, b, c, h, w}, {s[0], s[3], s[5], s[1], s[2], s[4]}, ctx.output(0));
}

void ConcatKernel(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  const int axis = NormalizeAxis(tensor_ops::ConcatAxis(ctx.node()), out.rank(), ctx.node());
  const size_t esize = DTypeSize(out.dtype());
  const int64_t outer = Product(out.dims(), 0, static_cast<size_t>(axis));
  const size_t out_row =
      static_cast<size_t>(Product(out.dims(), static_cast<size_t>(axis))) * esize;
  size_t column = 0;
  auto* dst = static_cast<uint8_t*>(out.raw_data());
  for (int i = 0; i < ctx.num_inputs(); ++i) {
    const Tensor& in = ctx.input(i);
    const size_t row = static_cast<size_t>(Product(in.dims(), static_cast<size_t>(axis))) * esize;
    const auto* src = static_cast<const uint8_t*>(in.raw_data());
    if (row == 0) continue;
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(dst + static_cast<size_t>(o) * out_row + column,
                  src + static_cast<size_t>(o) * row, row);
    column += row;
  }
}

void SplitKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), in.rank(), ctx.node());
  std::vector<int64_t> sizes = tensor_ops::SplitSizes(
      ctx.node(), in.dim(axis), ctx.optional_input(1), ctx.num_outputs());
  const size_t esize = DTypeSize(in.dtype());
  const int64_t outer = Product(in.dims(), 0, static_cast<size_t>(axis));
  const size_t inner =
      static_cast<size_t>(Product(in.dims(), static_cast<size_t>(axis) + 1)) * esize;
  const size_t in_row = static_cast<size_t>(in.dim(axis)) * inner;
  const auto* src = static_cast<const uint8_t*>(in.raw_data());
  size_t column = 0;
  for (int i = 0; i < ctx.num_outputs(); ++i) {
    const size_t row = static_cast<size_t>(sizes[static_cast<size_t>(i)]) * inner;
    if (ctx.has_output(i) && row > 0) {
      auto* dst = static_cast<uint8_t*>(ctx.output(i).raw_data());
      for (int64_t o = 0; o < outer; ++o)
        std::memcpy(dst + static_cast<size_t>(o) * row,
                    src + static_cast<size_t>(o) * in_row + column, row);
    }
    column += row;
  }
}

// ---- Indexing ----

void GatherKernel(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  std::vector<int64_t> indices = IndicesAsInt64(ctx.input(1));
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), data.rank(), ctx.node());
  const size_t esize = DTypeSize(data.dtype());
  const int64_t outer = Product(data.dims(), 0, static_cast<size_t>(axis));
  const int64_t axis_len = data.dim(axis);
  const size_t block =
      static_cast<size_t>(Product(data.dims(), static_cast<size_t>(axis) + 1)) * esize;
  for (int64_t& i : indices) i = CheckIndex(i, axis_len, "Gather");
  const auto* src = static_cast<const uint8_t*>(data.raw_data());
  auto* dst = static_cast<uint8_t*>(ctx.output(0).raw_data());
  if (block == 0) return;
  for (int64_t o = 0; o < outer; ++o) {
    const uint8_t* slab = src + static_cast<size_t>(o * axis_len) * block;
    for (int64_t index : indices) {
      std::memcpy(dst, slab + static_cast<size_t>(index) * block, block);
      dst += block;
    }
  }
}

// Shared walk for GatherElements/ScatterElements: calls fn(flat position in
// the indices tensor, flat position in data) for every index element.
template <typename Fn>
void ForEachElementIndex(const std::vector<int64_t>& data_dims,
                         const std::vector<int64_t>& index_dims,
                         const std::vector<int64_t>& indices, int axis, Fn&& fn) {
  const size_t rank = index_dims.size();
  KILN_CHECK(data_dims.size() == rank, "data and indices must have the same rank");
  const int64_t total = Product(index_dims);
  if (total == 0) return;
  std::vector<int64_t> strides = ContiguousStrides(data_dims);
  std::vector<int64_t> coord(rank, 0);
  const int64_t axis_len = data_dims[static_cast<size_t>(axis)];
  for (int64_t i = 0; i < total; ++i) {
    int64_t pos = 0;
    for (size_t d = 0; d < rank; ++d) {
      int64_t c = d == static_cast<size_t>(axis)
                      ? CheckIndex(indices[static_cast<size_t>(i)], axis_len, "element")
                      : coord[d];
      pos += c * strides[d];
    }
    fn(i, pos);
    for (int d = static_cast<int>(rank) - 1; d >= 0; --d) {
      if (++coord[static_cast<size_t>(d)] < index_dims[static_cast<size_t>(d)]) break;
      coord[static_cast<size_t>(d)] = 0;
    }
  }
}

void GatherElementsKernel(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), data.rank(), ctx.node());
  for (int d = 0; d < data.rank(); ++d)
    KILN_CHECK(d == axis || indices.dim(d) <= data.dim(d), "indices ", indices.TypeString(),
               " exceed data ", data.TypeString(), " off the gather axis");
  std::vector<int64_t> index_values = IndicesAsInt64(indices);
  DispatchBySize(DTypeSize(data.dtype()), [&](auto u) {
    using U = decltype(u);
    const U* src = data.data<U>();
    U* dst = ctx.output(0).data<U>();
    ForEachElementIndex(data.dims(), indices.dims(), index_values, axis,
                        [&](int64_t i, int64_t pos) { dst[i] = src[pos]; });
  });
}

void GatherNDKernel(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  std::vector<int64_t> index_values = IndicesAsInt64(indices);
  const size_t b = static_cast<size_t>(ctx.attrs().GetInt("batch_dims", 0));
  const size_t m = static_cast<size_t>(indices.dims().back());
  for (size_t i = 0; i < b; ++i)
    KILN_CHECK(data.dims()[i] == indices.dims()[i], "batch dims of data ", data.TypeString(),
               " and indices ", indices.TypeString(), " differ");
  const size_t esize = DTypeSize(data.dtype());
  const int64_t batches = Product(data.dims(), 0, b);
  const int64_t per_batch = Product(indices.dims(), b, indices.dims().size() - 1);
  const size_t slice = static_cast<size_t>(Product(data.dims(), b + m)) * esize;
  std::vector<int64_t> strides = ContiguousStrides(data.dims());
  const int64_t batch_stride = b == 0 ? 0 : strides[b - 1];
  const auto* src = static_cast<const uint8_t*>(data.raw_data());
  auto* dst = static_cast<uint8_t*>(ctx.output(0).raw_data());
  const int64_t* idx = index_values.data();
  for (int64_t batch = 0; batch < batches; ++batch) {
    for (int64_t j = 0; j < per_batch; ++j, idx += m) {
      int64_t pos = batch * batch_stride;
      for (size_t k = 0; k < m; ++k)
        pos += CheckIndex(idx[k], data.dims()[b + k], "GatherND") * strides[b + k];
      if (slice > 0) std::memcpy(dst, src + static_cast<size_t>(pos) * esize, slice);
      dst += slice;
    }
  }
}

// Runs scatter(dst_index, update_index) over every update with the node's reduction.
template <typename Walk>
void ScatterWithReduction(KernelContext& ctx, Walk&& walk) {
  const Tensor& updates = ctx.input(2);
  Tensor& out = ctx.output(0);
  CopyBytes(ctx.input(0), out);
  std::string reduction = ctx.opset() >= 16 ? ctx.attrs().GetString("reduction", "none") : "none";
  KILN_CHECK(reduction == "none" || reduction == "add" || reduction == "mul" ||
                 ((reduction == "max" || reduction == "min") && ctx.opset() >= 18),
             "unsupported reduction '", reduction, "'");
  if (reduction == "none") {
    DispatchBySize(DTypeSize(out.dtype()), [&](auto u) {
      using U = decltype(u);
      U* dst = out.data<U>();
      const U* src = updates.data<U>();
      walk([&](int64_t update_pos, int64_t pos) { dst[pos] = src[update_pos]; });
    });
    return;
  }
  cpu::DispatchNumeric(out.dtype(), [&](auto t) {
    using T = decltype(t);
    T* dst = out.data<T>();
    const T* src = updates.data<T>();
    // Strings compare once per element, not per operation: pick the op up front.
    auto apply = [&](auto op) {
      walk([&](int64_t update_pos, int64_t pos) { dst[pos] = op(dst[pos], src[update_pos]); });
    };
    if (reduction == "add") apply([](T a, T b) { return static_cast<T>(a + b); });
    if (reduction == "mul") apply([](T a, T b) { return static_cast<T>(a * b); });
    if (reduction == "max") apply([](T a, T b) { return std::max(a, b); });
    if (reduction == "min") apply([](T a, T b) { return std::min(a, b); });
  });
}

void ScatterElementsKernel(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  const Tensor& updates = ctx.input(2);
  KILN_CHECK(indices.dims() == updates.dims(), "indices ", indices.TypeString(), " and updates ",
             updates.TypeString(), " must have the same shape");
  KILN_CHECK(data.rank() >= 1 && indices.rank() == data.rank(), "data ", data.TypeString(),
             " and indices ", indices.TypeString(), " must have the same rank");
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), data.rank(), ctx.node());
  for (int d = 0; d < data.rank(); ++d)
    KILN_CHECK(d == axis || indices.dim(d) <= data.dim(d), "indices ", indices.TypeString(),
               " exceed data ", data.TypeString(), " off the scatter axis");
  std::vector<int64_t> index_values = IndicesAsInt64(indices);
  ScatterWithReduction(ctx, [&](auto&& fn) {
    ForEachElementIndex(data.dims(), indices.dims(), index_values, axis, fn);
  });
}

void ScatterNDKernel(KernelContext& ctx) {
  const Tensor& data = ctx.input(0);
  const Tensor& indices = ctx.input(1);
  const Tensor& updates = ctx.input(2);
  KILN_CHECK(indices.rank() >= 1, "indices must have rank >= 1");
  const size_t m = static_cast<size_t>(indices.dims().back());
  KILN_CHECK(m <= data.dims().size(), "indices' last dim ", m, " exceeds data rank ", data.rank());
  // updates.shape must be indices.shape[:-1] + data.shape[m:].
  std::vector<int64_t> expected(indices.dims().begin(), indices.dims().end() - 1);
  expected.insert(expected.end(), data.dims().begin() + static_cast<std::ptrdiff_t>(m),
                  data.dims().end());
  KILN_CHECK(updates.dims() == expected, "updates ", updates.TypeString(), " must have shape ",
             DimsToString(expected));
  std::vector<int64_t> index_values = IndicesAsInt64(indices);
  std::vector<int64_t> strides = ContiguousStrides(data.dims());
  const int64_t slice = Product(data.dims(), m);
  const int64_t count = Product(indices.dims(), 0, indices.dims().size() - 1);
  ScatterWithReduction(ctx, [&](auto&& fn) {
    for (int64_t j = 0; j < count; ++j) {
      int64_t pos = 0;
      for (size_t k = 0; k < m; ++k)
        pos +=
            CheckIndex(index_values[static_cast<size_t>(j) * m + k], data.dims()[k], "ScatterND") *
            strides[k];
      for (int64_t e = 0; e < slice; ++e) fn(j * slice + e, pos + e);
    }
  });
}

void NonZeroKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  const int64_t count = out.dim(1);
  std::vector<int64_t> dims = in.rank() == 0 ? std::vector<int64_t>{1} : in.dims();
  int64_t* dst = out.data<int64_t>();
  std::vector<int64_t> coord(dims.size(), 0);
  int64_t found = 0;
  for (int64_t i = 0; i < in.numel(); ++i) {
    if (in.GetAsDouble(i) != 0.0) {
      for (size_t d = 0; d < dims.size(); ++d)
        dst[static_cast<int64_t>(d) * count + found] = coord[d];
      ++found;
    }
    for (int d = static_cast<int>(dims.size()) - 1; d >= 0; --d) {
      if (++coord[static_cast<size_t>(d)] < dims[static_cast<size_t>(d)]) break;
      coord[static_cast<size_t>(d)] = 0;
    }
  }
}

void OneHotKernel(KernelContext& ctx) {
  const Tensor& indices = ctx.input(0);
  const Tensor& values = ctx.input(2);
  Tensor& out = ctx.output(0);
  KILN_CHECK(values.numel() == 2, "values must hold [off, on], got ", values.TypeString());
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", -1), out.rank(), ctx.node());
  const int64_t depth = out.dim(axis);
  const int64_t outer = Product(indices.dims(), 0, static_cast<size_t>(axis));
  const int64_t inner = Product(indices.dims(), static_cast<size_t>(axis));
  DispatchBySize(DTypeSize(out.dtype()), [&](auto u) {
    using U = decltype(u);
    const U off = values.data<U>()[0], on = values.data<U>()[1];
    U* dst = out.data<U>();
    std::fill_n(dst, out.numel(), off);
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        int64_t index = static_cast<int64_t>(indices.GetAsDouble(o * inner + i));
        if (index < 0) index += depth;
        if (index < 0 || index >= depth) continue;  // Out of range: all "off".
        dst[(o * depth + index) * inner + i] = on;
      }
    }
  });
}

// ---- Generation and masks ----

void RangeKernel(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  cpu::DispatchNumeric(out.dtype(), [&](auto t) {
    using T = decltype(t);
    const T start = ctx.input(0).data<T>()[0];
    const T delta = ctx.input(2).data<T>()[0];
    T* dst = out.data<T>();
    for (int64_t i = 0; i < out.numel(); ++i)
      dst[i] = static_cast<T>(start + static_cast<T>(i) * delta);
  });
}

void TriluKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  CopyBytes(in, out);
  const bool upper = ctx.attrs().GetInt("upper", 1) != 0;
  const int64_t k = ctx.has_input(1) ? ctx.input(1).GetAsInt64(0) : 0;
  const int64_t rows = in.dim(in.rank() - 2), cols = in.dim(in.rank() - 1);
  const int64_t matrices = Product(in.dims(), 0, in.dims().size() - 2);
  const size_t esize = DTypeSize(in.dtype());
  auto* dst = static_cast<uint8_t*>(out.raw_data());
  // Zero bytes are zero for every numeric dtype, so masking is a memset.
  for (int64_t m = 0; m < matrices; ++m) {
    for (int64_t i = 0; i < rows; ++i) {
      uint8_t* row = dst + static_cast<size_t>((m * rows + i) * cols) * esize;
      // Kept columns: j >= i + k (upper) or j <= i + k (lower).
      int64_t lo = upper ? 0 : std::clamp<int64_t>(i + k + 1, 0, cols);
      int64_t hi = upper ? std::clamp<int64_t>(i + k, 0, cols) : cols;
      if (hi > lo)
        std::memset(row + static_cast<size_t>(lo) * esize, 0, static_cast<size_t>(hi - lo) * esize);
    }
  }
}

void EyeLikeKernel(KernelContext& ctx) {
  Tensor& out = ctx.output(0);
  const int64_t k = ctx.attrs().GetInt("k", 0);
  const size_t esize = DTypeSize(out.dtype());
  std::memset(out.raw_data(), 0, out.nbytes());
  Tensor one = ScalarOf(out.dtype(), 1.0);
  const int64_t rows = out.dim(0), cols = out.dim(1);
  auto* dst = static_cast<uint8_t*>(out.raw_data());
  for (int64_t i = 0; i < rows; ++i) {
    int64_t j = i + k;
    if (j >= 0 && j < cols)
      std::memcpy(dst + static_cast<size_t>(i * cols + j) * esize, one.raw_data(), esize);
  }
}

void CumSumKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  KILN_CHECK(ctx.input(1).numel() == 1, "axis must be a scalar");
  const int axis = NormalizeAxis(ctx.input(1).GetAsInt64(0), in.rank(), ctx.node());
  const bool exclusive = ctx.attrs().GetInt("exclusive", 0) != 0;
  const bool reverse = ctx.attrs().GetInt("reverse", 0) != 0;
  const int64_t outer = Product(in.dims(), 0, static_cast<size_t>(axis));
  const int64_t len = in.rank() == 0 ? 1 : in.dim(axis);
  const int64_t inner = Product(in.dims(), static_cast<size_t>(axis) + 1);
  cpu::DispatchNumeric(in.dtype(), [&](auto t) {
    using T = decltype(t);
    const T* src = in.data<T>();
    T* dst = out.data<T>();
    std::vector<T> sum(static_cast<size_t>(inner));
    for (int64_t o = 0; o < outer; ++o) {
      std::fill(sum.begin(), sum.end(), T(0));
      for (int64_t step = 0; step < len; ++step) {
        int64_t a = reverse ? len - 1 - step : step;
        const T* x = src + (o * len + a) * inner;
        T* y = dst + (o * len + a) * inner;
        for (int64_t i = 0; i < inner; ++i) {
          if (exclusive) {
            y[i] = sum[static_cast<size_t>(i)];
            sum[static_cast<size_t>(i)] = static_cast<T>(sum[static_cast<size_t>(i)] + x[i]);
          } else {
            sum[static_cast<size_t>(i)] = static_cast<T>(sum[static_cast<size_t>(i)] + x[i]);
            y[i] = sum[static_cast<size_t>(i)];
          }
        }
      }
    }
  });
}

// ---- Pad ----

// Maps an output coordinate (already shifted by the begin pad) to a source
// index along an axis of length n; -1 means "constant fill".
int64_t PadSource(int64_t x, int64_t n, PadMode mode) {
  if (x >= 0 && x < n) return x;
  switch (mode) {
    case PadMode::kConstant:
      return -1;
    case PadMode::kEdge:
      return x < 0 ? 0 : n - 1;
    case PadMode::kWrap:
      return ((x % n) + n) % n;
    case PadMode::kReflect: {
      if (n == 1) return 0;
      const int64_t period = 2 * (n - 1);
      int64_t r = ((x % period) + period) % period;
      return r < n ? r : period - r;
    }
  }
  return -1;
}

// Gathers out[o0..on] = src[t0[o0], ..., tn[on]] where each axis has an index
// table; a -1 entry on any axis writes `fill` instead. Shared by Pad and
// nearest-mode Resize.
void GatherByTables(const Tensor& src, const std::vector<std::vector<int64_t>>& tables,
                    const Tensor* fill, Tensor& dst) {
  const size_t rank = tables.size();
  const int64_t total = dst.numel();
  if (total == 0) return;
  std::vector<int64_t> strides = ContiguousStrides(src.dims());
  DispatchBySize(DTypeSize(src.dtype()), [&](auto u) {
    using U = decltype(u);
    const U* in = src.data<U>();
    U* out = dst.data<U>();
    const U fill_value = fill ? fill->data<U>()[0] : U{};
    if (rank == 0) {
      out[0] = in[0];
      return;
    }
    const std::vector<int64_t>& last = tables[rank - 1];
    const int64_t inner = static_cast<int64_t>(last.size());
    std::vector<int64_t> coord(rank - 1, 0);
    for (int64_t o = 0; o < total; o += inner) {
      int64_t base = 0;
      bool filled = false;
      for (size_t d = 0; d + 1 < rank; ++d) {
        int64_t s = tables[d][static_cast<size_t>(coord[d])];
        if (s < 0) filled = true;
        base += s * strides[d];
      }
      U* row = out + o;
      if (filled) {
        std::fill_n(row, inner, fill_value);
      } else {
        for (int64_t j = 0; j < inner; ++j) {
          int64_t s = last[static_cast<size_t>(j)];
          row[j] = s < 0 ? fill_value : in[base + s];
        }
      }
      for (int d = static_cast<int>(rank) - 2; d >= 0; --d) {
        if (++coord[static_cast<size_t>(d)] <
            static_cast<int64_t>(tables[static_cast<size_t>(d)].size()))
          break;
        coord[static_cast<size_t>(d)] = 0;
      }
    }
  });
}

void PadKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  const int rank = in.rank();
  tensor_ops::PadArgs args = tensor_ops::GetPadArgs(
      ctx.node(), rank, ctx.optional_input(1), ctx.opset() >= 18 ? ctx.optional_input(3) : nullptr);
  std::vector<std::vector<int64_t>> tables(static_cast<size_t>(rank));
  for (int d = 0; d < rank; ++d) {
    const int64_t n = in.dim(d), begin = args.pads[static_cast<size_t>(d)];
    const bool padded =
        args.pads[static_cast<size_t>(d)] > 0 || args.pads[static_cast<size_t>(rank + d)] > 0;
    KILN_CHECK(!(n == 0 && padded && args.mode != PadMode::kConstant),
               "cannot pad an empty axis in ", ctx.attrs().GetString("mode", "constant"), " mode");
    auto& table = tables[static_cast<size_t>(d)];
    table.resize(static_cast<size_t>(out.dim(d)));
    for (int64_t o = 0; o < out.dim(d); ++o)
      table[static_cast<size_t>(o)] = PadSource(o - begin, n, args.mode);
  }
  // The fill value as one element of the data's dtype.
  Tensor fill;
  if (ctx.opset() >= 11) {
    const Tensor* value = ctx.optional_input(2);
    if (value && value->numel() > 0) {
      KILN_CHECK(value->dtype() == in.dtype(), "constant_value is ", value->TypeString(),
                 " but data is ", DTypeName(in.dtype()));
      fill = *value;
    }
  }
  if (!fill.defined())
    fill = ScalarOf(in.dtype(), ctx.opset() < 11 ? ctx.attrs().GetFloat("value", 0.f) : 0.0);
  GatherByTables(in, tables, &fill, out);
}

// ---- Resize ----

// Resizes one axis: in [outer, in_len, inner] -> out [outer, out_len, inner].
template <typename T>
void ResizeAxis(const T* in, T* out, int64_t outer, int64_t in_len, int64_t inner,
                const std::vector<ResizeTaps>& taps, T extrapolation) {
  const int64_t out_len = static_cast<int64_t>(taps.size());
  for (int64_t o = 0; o < outer; ++o) {
    const T* src = in + o * in_len * inner;
    T* dst = out + o * out_len * inner;
    for (int64_t x = 0; x < out_len; ++x) {
      const ResizeTaps& t = taps[static_cast<size_t>(x)];
      T* row = dst + x * inner;
      if (t.outside) {
        std::fill_n(row, inner, extrapolation);
        continue;
      }
      std::fill_n(row, inner, T(0));
      for (int k = 0; k < t.count; ++k) {
        if (t.weight[k] == 0) continue;
        const T w = static_cast<T>(t.weight[k]);
        const T* tap = src + t.index[k] * inner;
        for (int64_t i = 0; i < inner; ++i) row[i] += w * tap[i];
      }
    }
  }
}

// Linear/cubic resize as one separable pass per resized axis.
template <typename T>
void ResizeInterpolate(const ResizePlan& plan, const Tensor& in, Tensor& out) {
  const int rank = in.rank();
  Tensor current = in;
  for (int axis = 0; axis < rank; ++axis) {
    const int64_t in_len = current.dim(axis);
    const int64_t out_len = plan.out_dims[static_cast<size_t>(axis)];
    std::vector<ResizeTaps> taps = tensor_ops::ResizeAxisTaps(plan, axis, rank, in_len, out_len);
    bool identity = in_len == out_len;
    for (int64_t x = 0; identity && x < out_len; ++x) {
      const ResizeTaps& t = taps[static_cast<size_t>(x)];
      for (int k = 0; k < t.count && identity; ++k)
        identity = t.weight[k] == 0 || (t.weight[k] == 1 && t.index[k] == x);
      identity = identity && !t.outside;
    }
    if (identity) continue;
    std::vector<int64_t> dims = current.dims();
    dims[static_cast<size_t>(axis)] = out_len;
    Tensor next(current.dtype(), dims);
    ResizeAxis(current.data<T>(), next.data<T>(), Product(dims, 0, static_cast<size_t>(axis)),
               in_len, Product(dims, static_cast<size_t>(axis) + 1), taps,
               static_cast<T>(plan.extrapolation_value));
    current = next;
  }
  CopyBytes(current, out);
}

void ResizeKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  Tensor& out = ctx.output(0);
  int roi = -1, scales = -1, sizes = -1;
  tensor_ops::ResizeInputIndices(ctx.node(), &roi, &scales, &sizes);
  tensor_ops::ResizeInputs inputs;
  inputs.roi = roi >= 0 ? ctx.optional_input(roi) : nullptr;
  inputs.scales = scales >= 0 ? ctx.optional_input(scales) : nullptr;
  inputs.sizes = sizes >= 0 ? ctx.optional_input(sizes) : nullptr;
  ResizePlan plan = tensor_ops::PlanResize(ctx.node(), in.dims(), inputs);
  KILN_CHECK(plan.out_dims == out.dims(), "resize plan ", DimsToString(plan.out_dims),
             " does not match the output ", out.TypeString());
  if (out.numel() == 0) return;
  KILN_CHECK(in.numel() > 0, "cannot resize an empty tensor to ", out.TypeString());
  if (plan.mode == ResizeMode::kNearest) {
    std::vector<std::vector<int64_t>> tables(static_cast<size_t>(in.rank()));
    for (int d = 0; d < in.rank(); ++d) {
      auto& table = tables[static_cast<size_t>(d)];
      for (int64_t x = 0; x < out.dim(d); ++x) {
        double coord = tensor_ops::ResizeSourceCoordinate(plan, d, in.rank(), x, in.dim(d), out.dim(d));
        table.push_back(
            tensor_ops::ResizeOutsideCrop(plan, coord, in.dim(d))
                ? -1
                : tensor_ops::ResizeNearestIndex(plan, coord, plan.scales[static_cast<size_t>(d)], in.dim(d)));
      }
    }
    Tensor fill = ScalarOf(in.dtype(), plan.extrapolation_value);
    GatherByTables(in, tables, &fill, out);
    return;
  }
  // Interpolation computes in float32 (float64 for double inputs).
  if (in.dtype() == DType::kFloat64) {
    ResizeInterpolate<double>(plan, in, out);
  } else if (in.dtype() == DType::kFloat32) {
    ResizeInterpolate<float>(plan, in, out);
  } else {
    Tensor wide_in = in.CastTo(DType::kFloat32);
    Tensor wide_out(DType::kFloat32, out.dims());
    ResizeInterpolate<float>(plan, wide_in, wide_out);
    if (IsInteger(out.dtype())) {  // Round rather than truncate back to integers.
      for (int64_t i = 0; i < wide_out.numel(); ++i)
        wide_out.data<float>()[i] = std::nearbyint(wide_out.data<float>()[i]);
    }
    CopyBytes(wide_out.CastTo(out.dtype()), out);
  }
}

// ---- TopK ----

template <typename T>
bool Greater(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a)) return !std::isnan(b);
    if (std::isnan(b)) return false;
  }
  return a > b;
}

template <typename T>
void TopKTyped(const Tensor& in, int axis, int64_t k, bool largest, Tensor& values,
               Tensor& indices) {
  const int64_t outer = Product(in.dims(), 0, static_cast<size_t>(axis));
  const int64_t len = in.dim(axis);
  const int64_t inner = Product(in.dims(), static_cast<size_t>(axis) + 1);
  const T* src = in.data<T>();
  T* out_values = values.data<T>();
  int64_t* out_indices = indices.data<int64_t>();
  std::vector<int64_t> order(static_cast<size_t>(len));
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      const T* x = src + o * len * inner + i;
      std::iota(order.begin(), order.end(), 0);
      // Ties keep the lower index first, as ONNX requires; NaN ranks above
      // everything so the order stays strict and weak.
      auto before = [&](int64_t a, int64_t b) {
        T va = x[a * inner], vb = x[b * inner];
        bool a_over_b = Greater(va, vb), b_over_a = Greater(vb, va);
        if (a_over_b != b_over_a) return largest ? a_over_b : b_over_a;
        return a < b;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      for (int64_t j = 0; j < k; ++j) {
        int64_t pos = (o * k + j) * inner + i;
        out_values[pos] = x[order[static_cast<size_t>(j)] * inner];
        out_indices[pos] = order[static_cast<size_t>(j)];
      }
    }
  }
}

void TopKKernel(KernelContext& ctx) {
  const Tensor& in = ctx.input(0);
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", -1), in.rank(), ctx.node());
  const int64_t k = ctx.output(0).dim(axis);
  const bool largest = ctx.opset() < 11 || ctx.attrs().GetInt("largest", 1) != 0;
  cpu::DispatchNumeric(in.dtype(), [&](auto t) {
    TopKTyped<decltype(t)>(in, axis, k, largest, ctx.output(0), ctx.output(1));
  });
}

}  // namespace

void RegisterTensorCpuKernels(OpRegistry& registry) {
  auto set = [&](const char* name, CpuKernelFn kernel) {
    registry.Define(name).cpu_kernel = std::move(kernel);
  };
  for (const char* name : {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})
    set(name, CopyKernel);
  set("Dropout", DropoutKernel);
  set("Constant", ConstantKernel);
  set("Shape", ShapeKernel);
  set("Size", SizeKernel);
  set("ConstantOfShape", ConstantOfShapeKernel);
  set("Transpose", TransposeKernel);
  set("Slice", SliceKernel);
  set("Expand", ExpandKernel);
  set("Tile", TileKernel);
  set("DepthToSpace", DepthToSpaceKernel);
  set("SpaceToDepth", SpaceToDepthKernel);
  set("Concat", ConcatKernel);
  set("Split", SplitKernel);
  set("Gather", GatherKernel);
  set("GatherElements", GatherElementsKernel);
  set("GatherND", GatherNDKernel);
  // Reductions compute in float32 for half types; plain scatters move bytes.
  set("ScatterElements", cpu::WithFloat32Compute(ScatterElementsKernel));
  set("Scatter", cpu::WithFloat32Compute(ScatterElementsKernel));
  set("ScatterND", cpu::WithFloat32Compute(ScatterNDKernel));
  set("NonZero", NonZeroKernel);
  set("OneHot", OneHotKernel);
  set("Range", RangeKernel);
  set("Trilu", TriluKernel);
  set("EyeLike", EyeLikeKernel);
  set("CumSum", cpu::WithFloat32Compute(CumSumKernel));
  set("Pad", PadKernel);
  set("Resize", cpu::WithFloat32Compute(ResizeKernel));
  set("Upsample", cpu::WithFloat32Compute(ResizeKernel));
  set("TopK", cpu::WithFloat32Compute(TopKKernel));
}

}  // namespace kiln
