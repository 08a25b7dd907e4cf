// CPU kernels for reductions, normalizations and the softmax family.
//
// Single-axis ops view their input as [outer, n, inner] (n along the axis,
// inner contiguous). Multi-axis reductions merge adjacent axes that are all
// reduced or all kept into groups and walk the input once in memory order,
// folding each contiguous run of the innermost group into the output
// accumulators (see ReduceLayout / ForEachRun).
#include "ops/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/kernel_util.h"

namespace kiln {
namespace {

using cpu::DispatchNumeric;
using cpu::WithFloat32Compute;

// Converts a double result to T: rounds toward zero and saturates for
// integers (NaN -> 0), so out-of-range results never invoke UB.
template <typename T>
T FromDouble(double v) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    if (std::isnan(v)) return T{0};
    if (v <= static_cast<double>(std::numeric_limits<T>::lowest()))
      return std::numeric_limits<T>::lowest();
    if (v >= static_cast<double>(std::numeric_limits<T>::max()))
      return std::numeric_limits<T>::max();
    return static_cast<T>(v);
  }
}

// Dispatches float32/float64 (half types arrive widened by WithFloat32Compute).
template <typename Fn>
void DispatchFloat(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); break;
    case DType::kFloat64: fn(double{}); break;
    default: Fail("dtype ", DTypeName(dtype), " is not supported by this CPU kernel");
  }
}

// [outer, n, inner] view of dims around `axis`.
struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};

AxisView ViewAroundAxis(const std::vector<int64_t>& dims, int axis) {
  size_t a = static_cast<size_t>(axis);
  return {Product(dims, 0, a), dims[a], Product(dims, a + 1)};
}

// ---------------------------------------------------------------------------
// Multi-axis reductions

struct ReduceLayout {
  std::vector<int64_t> sizes;        // Merged groups, outermost first (no size-1 axes).
  std::vector<int64_t> in_strides;   // Element strides of each group in the input.
  std::vector<int64_t> out_strides;  // Strides in the output; 0 for reduced groups.
  bool inner_reduced = false;        // Whether the innermost group is reduced.
  int64_t reduce_count = 1;          // Input elements folded into each output element.
};

ReduceLayout MakeReduceLayout(const std::vector<int64_t>& dims, const std::vector<bool>& reduced) {
  ReduceLayout layout;
  std::vector<bool> group_reduced;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (reduced[i]) layout.reduce_count *= dims[i];
    if (dims[i] == 1) continue;  // Size-1 axes change neither layout nor result.
    if (!layout.sizes.empty() && group_reduced.back() == reduced[i]) {
      layout.sizes.back() *= dims[i];
    } else {
      layout.sizes.push_back(dims[i]);
      group_reduced.push_back(reduced[i]);
    }
  }
  size_t k = layout.sizes.size();
  layout.in_strides.assign(k, 0);
  layout.out_strides.assign(k, 0);
  int64_t in_stride = 1, out_stride = 1;
  for (size_t g = k; g-- > 0;) {
    layout.in_strides[g] = in_stride;
    in_stride *= layout.sizes[g];
    if (!group_reduced[g]) {
      layout.out_strides[g] = out_stride;
      out_stride *= layout.sizes[g];
    }
  }
  layout.inner_reduced = k > 0 && group_reduced.back();
  return layout;
}

// Calls visit(in_offset, out_offset, n) for each contiguous run of n input
// elements (the innermost group). Within a run, element j maps to output
// out_offset + j when the innermost group is kept, else to out_offset.
template <typename Visit>
void ForEachRun(const ReduceLayout& layout, Visit&& visit) {
  const size_t k = layout.sizes.size();
  if (k == 0) {  // Every axis has size 1: a single element.
    visit(int64_t{0}, int64_t{0}, int64_t{1});
    return;
  }
  for (int64_t s : layout.sizes)
    if (s == 0) return;
  const int64_t run = layout.sizes[k - 1];
  const int64_t runs = Product(layout.sizes, 0, k - 1);
  std::vector<int64_t> index(k - 1, 0);
  int64_t in_offset = 0, out_offset = 0;
  for (int64_t r = 0; r < runs; ++r) {
    visit(in_offset, out_offset, run);
    for (size_t g = k - 1; g-- > 0;) {  // Odometer step over the outer groups.
      in_offset += layout.in_strides[g];
      out_offset += layout.out_strides[g];
      if (++index[g] < layout.sizes[g]) break;
      in_offset -= layout.in_strides[g] * layout.sizes[g];
      out_offset -= layout.out_strides[g] * layout.sizes[g];
      index[g] = 0;
    }
  }
}

// Accumulator of sums: double for floats, 64-bit for integers.
template <typename T>
using SumAcc = std::conditional_t<std::is_floating_point_v<T>, double,
                                  std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>;

// A reduction is identity/map/combine/finish over an accumulator type Acc:
// out = Finish(Combine(Init, Map(x0), Map(x1), ...), count).
template <typename T>
struct SumOp {  // ReduceSum, and ReduceMean with mean = true.
  using Acc = SumAcc<T>;
  bool mean = false;
  Acc Init() const { return Acc{0}; }
  Acc Map(T x) const { return static_cast<Acc>(x); }
  Acc Combine(Acc a, Acc b) const { return a + b; }
  T Finish(Acc a, int64_t count) const {
    if (!mean) return static_cast<T>(a);
    if constexpr (std::is_floating_point_v<T>) {
      return static_cast<T>(a / static_cast<double>(count));
    } else {
      return count == 0 ? T{0} : static_cast<T>(a / static_cast<Acc>(count));
    }
  }
};

enum class SumKind { kL1, kL2, kSquare, kLog };

template <typename T>
struct SumOfOp {  // ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum.
  using Acc = SumAcc<T>;
  SumKind kind;
  Acc Init() const { return Acc{0}; }
  Acc Map(T x) const {
    Acc v = static_cast<Acc>(x);
    if (kind == SumKind::kL2 || kind == SumKind::kSquare) return v * v;
    if (kind == SumKind::kL1) {
      if constexpr (std::is_signed_v<Acc>) return v < 0 ? -v : v;
    }
    return v;
  }
  Acc Combine(Acc a, Acc b) const { return a + b; }
  T Finish(Acc a, int64_t) const {
    if (kind == SumKind::kL2) return FromDouble<T>(std::sqrt(static_cast<double>(a)));
    if (kind == SumKind::kLog) return FromDouble<T>(std::log(static_cast<double>(a)));
    return static_cast<T>(a);
  }
};

template <typename T>
struct ProdOp {
  using Acc = SumAcc<T>;
  Acc Init() const { return Acc{1}; }
  Acc Map(T x) const { return static_cast<Acc>(x); }
  Acc Combine(Acc a, Acc b) const { return a * b; }
  T Finish(Acc a, int64_t) const { return static_cast<T>(a); }
};

// Max and min propagate NaN (x != x only for NaN; always false for integers).
template <typename T>
struct MaxOp {
  using Acc = T;
  Acc Init() const {
    if constexpr (std::is_floating_point_v<T>) return -std::numeric_limits<T>::infinity();
    return std::numeric_limits<T>::lowest();
  }
  Acc Map(T x) const { return x; }
  Acc Combine(Acc a, Acc b) const { return (b > a || b != b) ? b : a; }
  T Finish(Acc a, int64_t) const { return a; }
};

template <typename T>
struct MinOp {
  using Acc = T;
  Acc Init() const {
    if constexpr (std::is_floating_point_v<T>) return std::numeric_limits<T>::infinity();
    return std::numeric_limits<T>::max();
  }
  Acc Map(T x) const { return x; }
  Acc Combine(Acc a, Acc b) const { return (b < a || b != b) ? b : a; }
  T Finish(Acc a, int64_t) const { return a; }
};

// Folds n contiguous values into one accumulator, keeping kLanes independent
// partial results so the loop is not bound by the latency of a single
// accumulator chain (and can vectorize).
template <typename T, typename Op>
typename Op::Acc FoldRun(const T* x, int64_t n, const Op& op) {
  using Acc = typename Op::Acc;
  constexpr int kLanes = 8;
  Acc lanes[kLanes];
  std::fill(lanes, lanes + kLanes, op.Init());
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] = op.Combine(lanes[l], op.Map(x[j + l]));
  Acc total = op.Init();
  for (; j < n; ++j) total = op.Combine(total, op.Map(x[j]));
  for (int l = 0; l < kLanes; ++l) total = op.Combine(total, lanes[l]);
  return total;
}

// Folds the input into one accumulator per output element.
template <typename T, typename Op>
std::vector<typename Op::Acc> Accumulate(const T* x, const ReduceLayout& layout, int64_t out_numel,
                                         const Op& op) {
  using Acc = typename Op::Acc;
  std::vector<Acc> acc(static_cast<size_t>(out_numel), op.Init());
  Acc* a = acc.data();
  if (layout.inner_reduced) {
    ForEachRun(layout, [&](int64_t in_off, int64_t out_off, int64_t n) {
      a[out_off] = op.Combine(a[out_off], FoldRun(x + in_off, n, op));
    });
  } else {
    ForEachRun(layout, [&](int64_t in_off, int64_t out_off, int64_t n) {
      const T* run = x + in_off;
      Acc* out = a + out_off;
      for (int64_t j = 0; j < n; ++j) out[j] = op.Combine(out[j], op.Map(run[j]));
    });
  }
  return acc;
}

template <typename T, typename Op>
void RunReduction(const Tensor& x, Tensor& y, const ReduceLayout& layout, const Op& op) {
  std::vector<typename Op::Acc> acc = Accumulate(x.data<T>(), layout, y.numel(), op);
  T* out = y.data<T>();
  for (int64_t i = 0; i < y.numel(); ++i)
    out[i] = op.Finish(acc[static_cast<size_t>(i)], layout.reduce_count);
}

// log(sum(exp(x))) computed as max + log(sum(exp(x - max))) so large inputs
// do not overflow.
template <typename T>
void RunLogSumExp(const Tensor& x, Tensor& y, const ReduceLayout& layout) {
  const T* in = x.data<T>();
  std::vector<T> maxes = Accumulate(in, layout, y.numel(), MaxOp<T>{});
  std::vector<double> sums(maxes.size(), 0.0);
  // A -inf or NaN max would turn x - max into NaN; shift by 0 instead.
  std::vector<double> shift(maxes.size());
  for (size_t i = 0; i < maxes.size(); ++i)
    shift[i] = std::isfinite(static_cast<double>(maxes[i])) ? static_cast<double>(maxes[i]) : 0.0;
  ForEachRun(layout, [&](int64_t in_off, int64_t out_off, int64_t n) {
    const T* run = in + in_off;
    if (layout.inner_reduced) {
      double s = 0, m = shift[static_cast<size_t>(out_off)];
      for (int64_t j = 0; j < n; ++j) s += std::exp(static_cast<double>(run[j]) - m);
      sums[static_cast<size_t>(out_off)] += s;
    } else {
      double* s = sums.data() + out_off;
      const double* m = shift.data() + out_off;
      for (int64_t j = 0; j < n; ++j) s[j] += std::exp(static_cast<double>(run[j]) - m[j]);
    }
  });
  T* out = y.data<T>();
  for (size_t i = 0; i < sums.size(); ++i) out[i] = FromDouble<T>(shift[i] + std::log(sums[i]));
}

enum class ReduceKind { kSum, kMean, kProd, kMax, kMin, kL1, kL2, kSumSquare, kLogSum, kLogSumExp };

CpuKernelFn MakeReduceKernel(ReduceKind kind) {
  return WithFloat32Compute([kind](KernelContext& ctx) {
    const Tensor& x = ctx.input(0);
    Tensor& y = ctx.output(0);
    const ir::Node& node = ctx.node();
    ReduceAxesArg arg = ReadReduceAxes(node, ReduceAxesInputOpset(node.op_type), ctx.has_input(1),
                                       ctx.optional_input(1));
    KILN_CHECK(arg.known, "axes input has no value");
    std::vector<bool> mask = ReducedAxesMask(arg.axes, arg.noop_with_empty_axes, x.rank());
    ReduceLayout layout = MakeReduceLayout(x.dims(), mask);
    DispatchNumeric(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      switch (kind) {
        case ReduceKind::kSum: RunReduction<T>(x, y, layout, SumOp<T>{}); break;
        case ReduceKind::kMean: RunReduction<T>(x, y, layout, SumOp<T>{true}); break;
        case ReduceKind::kProd: RunReduction<T>(x, y, layout, ProdOp<T>{}); break;
        case ReduceKind::kMax: RunReduction<T>(x, y, layout, MaxOp<T>{}); break;
        case ReduceKind::kMin: RunReduction<T>(x, y, layout, MinOp<T>{}); break;
        case ReduceKind::kL1: RunReduction<T>(x, y, layout, SumOfOp<T>{SumKind::kL1}); break;
        case ReduceKind::kL2: RunReduction<T>(x, y, layout, SumOfOp<T>{SumKind::kL2}); break;
        case ReduceKind::kSumSquare:
          RunReduction<T>(x, y, layout, SumOfOp<T>{SumKind::kSquare});
          break;
        case ReduceKind::kLogSum: RunReduction<T>(x, y, layout, SumOfOp<T>{SumKind::kLog}); break;
        case ReduceKind::kLogSumExp: RunLogSumExp<T>(x, y, layout); break;
      }
    });
  });
}

// ---------------------------------------------------------------------------
// ArgMax / ArgMin

template <typename T, bool kMax>
void ArgReduce(const T* x, int64_t* out, AxisView v, bool select_last) {
  std::vector<T> best(static_cast<size_t>(v.inner));
  for (int64_t o = 0; o < v.outer; ++o) {
    const T* block = x + o * v.n * v.inner;
    int64_t* idx = out + o * v.inner;
    std::copy(block, block + v.inner, best.begin());
    std::fill(idx, idx + v.inner, int64_t{0});
    for (int64_t k = 1; k < v.n; ++k) {
      const T* row = block + k * v.inner;
      for (int64_t j = 0; j < v.inner; ++j) {
        T value = row[j];
        T& b = best[static_cast<size_t>(j)];
        bool better = kMax ? value > b : value < b;
        if (better || (select_last && value == b)) {
          b = value;
          idx[j] = k;
        }
      }
    }
  }
}

CpuKernelFn MakeArgReduceKernel(bool is_max) {
  return WithFloat32Compute([is_max](KernelContext& ctx) {
    const Tensor& x = ctx.input(0);
    int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 0), x.rank(), ctx.node());
    AxisView v = ViewAroundAxis(x.dims(), axis);
    KILN_CHECK(v.n > 0 || v.outer * v.inner == 0, "cannot take ", ctx.node().op_type,
               " over an empty axis ", axis, " of ", x.TypeString());
    bool select_last = ctx.attrs().GetInt("select_last_index", 0) != 0;
    int64_t* out = ctx.output(0).data<int64_t>();
    DispatchNumeric(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      if (is_max) {
        ArgReduce<T, true>(x.data<T>(), out, v, select_last);
      } else {
        ArgReduce<T, false>(x.data<T>(), out, v, select_last);
      }
    });
  });
}

// ---------------------------------------------------------------------------
// Softmax, LogSoftmax, Hardmax

// Before opset 13 these ops flatten the input to 2-D at `axis` and normalize
// each row; from 13 on they normalize along the single axis.
AxisView SoftmaxView(const KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  bool legacy = ctx.opset() < 13;
  int axis = NormalizeAxis(ctx.attrs().GetInt("axis", legacy ? 1 : -1), x.rank(), ctx.node());
  if (legacy)
    return {Product(x.dims(), 0, static_cast<size_t>(axis)),
            Product(x.dims(), static_cast<size_t>(axis)), 1};
  return ViewAroundAxis(x.dims(), axis);
}

// Rows of n contiguous elements (inner == 1), the common case.
template <typename T>
void SoftmaxRows(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* in = x + r * n;
    T* out = y + r * n;
    T max = FoldRun(in, n, MaxOp<T>{});
    for (int64_t k = 0; k < n; ++k) out[k] = std::exp(in[k] - max);
    double sum = FoldRun(out, n, SumOp<T>{});
    if (log) {
      // (x - max) first: it is exact near the max, where max + log(sum) would round.
      T log_sum = static_cast<T>(std::log(sum));
      for (int64_t k = 0; k < n; ++k) out[k] = (in[k] - max) - log_sum;
    } else {
      T scale = static_cast<T>(1.0 / sum);
      for (int64_t k = 0; k < n; ++k) out[k] *= scale;
    }
  }
}

// The axis has stride `inner`: keep one running max/sum per inner position so
// every loop still walks memory contiguously.
template <typename T>
void SoftmaxStrided(const T* x, T* y, AxisView v, bool log) {
  std::vector<T> max(static_cast<size_t>(v.inner));
  std::vector<double> sum(static_cast<size_t>(v.inner));
  for (int64_t o = 0; o < v.outer; ++o) {
    const T* in = x + o * v.n * v.inner;
    T* out = y + o * v.n * v.inner;
    std::fill(max.begin(), max.end(), -std::numeric_limits<T>::infinity());
    std::fill(sum.begin(), sum.end(), 0.0);
    for (int64_t k = 0; k < v.n; ++k)
      for (int64_t j = 0; j < v.inner; ++j)
        max[static_cast<size_t>(j)] = std::max(max[static_cast<size_t>(j)], in[k * v.inner + j]);
    for (int64_t k = 0; k < v.n; ++k) {
      for (int64_t j = 0; j < v.inner; ++j) {
        T e = std::exp(in[k * v.inner + j] - max[static_cast<size_t>(j)]);
        if (!log) out[k * v.inner + j] = e;
        sum[static_cast<size_t>(j)] += e;
      }
    }
    // Reuse the sum buffer: log(sum) for LogSoftmax, 1/sum for Softmax.
    for (double& s : sum) s = log ? std::log(s) : 1.0 / s;
    for (int64_t k = 0; k < v.n; ++k) {
      for (int64_t j = 0; j < v.inner; ++j) {
        size_t s = static_cast<size_t>(j);
        int64_t i = k * v.inner + j;
        out[i] = log ? (in[i] - max[s]) - static_cast<T>(sum[s]) : out[i] * static_cast<T>(sum[s]);
      }
    }
  }
}

CpuKernelFn MakeSoftmaxKernel(bool log) {
  return WithFloat32Compute([log](KernelContext& ctx) {
    const Tensor& x = ctx.input(0);
    AxisView v = SoftmaxView(ctx);
    DispatchFloat(x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* y = ctx.output(0).data<T>();
      if (v.inner == 1) {
        SoftmaxRows(x.data<T>(), y, v.outer, v.n, log);
      } else {
        SoftmaxStrided(x.data<T>(), y, v, log);
      }
    });
  });
}

// One-hot of the first maximum along the axis.
template <typename T>
void Hardmax(const T* x, T* y, AxisView v) {
  std::fill(y, y + v.outer * v.n * v.inner, T{0});
  if (v.n == 0) return;
  std::vector<int64_t> idx(static_cast<size_t>(v.inner));
  for (int64_t o = 0; o < v.outer; ++o) {
    const T* in = x + o * v.n * v.inner;
    ArgReduce<T, true>(in, idx.data(), {1, v.n, v.inner}, /*select_last=*/false);
    T* out = y + o * v.n * v.inner;
    for (int64_t j = 0; j < v.inner; ++j) out[idx[static_cast<size_t>(j)] * v.inner + j] = T{1};
  }
}

void HardmaxKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  AxisView v = SoftmaxView(ctx);
  DispatchFloat(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Hardmax(x.data<T>(), ctx.output(0).data<T>(), v);
  });
}

// ---------------------------------------------------------------------------
// Normalizations

// Expands a Scale/B tensor that broadcasts to the trailing dims `norm` into a
// dense vector of Product(norm) values.
template <typename T>
std::vector<T> ExpandToTrailing(const Tensor& param, const std::vector<int64_t>& norm,
                                const char* what) {
  std::vector<int64_t> dims = param.dims();
  while (dims.size() > norm.size() && dims.front() == 1) dims.erase(dims.begin());
  KILN_CHECK(dims.size() <= norm.size(), what, " ", param.TypeString(),
             " does not broadcast to the normalized shape ", DimsToString(norm));
  dims.insert(dims.begin(), norm.size() - dims.size(), 1);
  for (size_t i = 0; i < dims.size(); ++i)
    KILN_CHECK(dims[i] == norm[i] || dims[i] == 1, what, " ", param.TypeString(),
               " does not broadcast to the normalized shape ", DimsToString(norm));
  // Strides of the parameter within the normalized index space (0 where broadcast).
  std::vector<int64_t> strides(dims.size(), 0);
  int64_t stride = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    strides[i] = dims[i] == 1 ? 0 : stride;
    stride *= dims[i];
  }
  const T* src = param.data<T>();
  int64_t total = Product(norm);
  std::vector<T> dense(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) {
    int64_t rest = i, offset = 0;
    for (size_t d = norm.size(); d-- > 0;) {
      offset += (rest % norm[d]) * strides[d];
      rest /= norm[d];
    }
    dense[static_cast<size_t>(i)] = src[offset];
  }
  return dense;
}

// Writes a per-row statistic to the Mean/InvStdDev outputs, whatever their
// float type (stash_type).
void StoreStat(Tensor& t, int64_t i, double v) {
  if (t.dtype() == DType::kFloat64) {
    t.data<double>()[i] = v;
  } else {
    t.data<float>()[i] = static_cast<float>(v);
  }
}

// Mean and 1/sqrt(var + epsilon) of n contiguous values (two-pass variance).
struct RowStats {
  double mean, inv_std;
};

template <typename T>
struct SquaredDeviationOp {
  using Acc = double;
  double mean;
  Acc Init() const { return 0.0; }
  Acc Map(T x) const { return (x - mean) * (x - mean); }
  Acc Combine(Acc a, Acc b) const { return a + b; }
};

template <typename T>
RowStats ComputeRowStats(const T* x, int64_t n, double epsilon) {
  if (n == 0) return {0.0, 1.0 / std::sqrt(epsilon)};
  double mean = static_cast<double>(FoldRun(x, n, SumOp<T>{})) / static_cast<double>(n);
  double var = FoldRun(x, n, SquaredDeviationOp<T>{mean}) / static_cast<double>(n);
  return {mean, 1.0 / std::sqrt(var + epsilon)};
}

void LayerNormKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  int axis = NormalizeAxis(ctx.attrs().GetInt("axis", -1), x.rank(), ctx.node());
  double epsilon = ctx.attrs().GetFloat("epsilon", 1e-5f);
  std::vector<int64_t> norm_dims(x.dims().begin() + axis, x.dims().end());
  int64_t rows = Product(x.dims(), 0, static_cast<size_t>(axis));
  int64_t n = Product(norm_dims);
  Tensor* mean_out = ctx.has_output(1) ? &ctx.output(1) : nullptr;
  Tensor* inv_std_out = ctx.has_output(2) ? &ctx.output(2) : nullptr;
  DispatchFloat(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> scale = ExpandToTrailing<T>(ctx.input(1), norm_dims, "Scale");
    std::vector<T> bias = ctx.has_input(2) ? ExpandToTrailing<T>(ctx.input(2), norm_dims, "B")
                                           : std::vector<T>(static_cast<size_t>(n), T{0});
    const T* in = x.data<T>();
    T* out = ctx.output(0).data<T>();
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = in + r * n;
      T* y = out + r * n;
      RowStats s = ComputeRowStats(row, n, epsilon);
      T mean = static_cast<T>(s.mean), inv_std = static_cast<T>(s.inv_std);
      for (int64_t k = 0; k < n; ++k)
        y[k] = (row[k] - mean) * inv_std * scale[static_cast<size_t>(k)] +
               bias[static_cast<size_t>(k)];
      if (mean_out) StoreStat(*mean_out, r, s.mean);
      if (inv_std_out) StoreStat(*inv_std_out, r, s.inv_std);
    }
  });
}

void GroupNormKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  KILN_CHECK(x.rank() >= 2, "X must have rank >= 2 (N, C, ...), got ", x.TypeString());
  int64_t groups = ctx.attrs().GetInt("num_groups");
  double epsilon = ctx.attrs().GetFloat("epsilon", 1e-5f);
  int64_t batch = x.dim(0), channels = x.dim(1);
  KILN_CHECK(groups >= 1 && channels % groups == 0, "channel count ", channels,
             " is not divisible by num_groups ", groups);
  // Opset 18 has one scale/bias per group; opset 21 one per channel.
  bool per_channel = ctx.opset() >= 21;
  int64_t params = per_channel ? channels : groups;
  const Tensor& scale_t = ctx.input(1);
  const Tensor& bias_t = ctx.input(2);
  KILN_CHECK(scale_t.numel() == params && bias_t.numel() == params, "scale ", scale_t.TypeString(),
             " and bias ", bias_t.TypeString(), " must hold ", params,
             per_channel ? " values (one per channel)" : " values (one per group)");
  int64_t spatial = Product(x.dims(), 2);
  int64_t channels_per_group = channels / groups;
  int64_t group_size = channels_per_group * spatial;
  DispatchFloat(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* scale = scale_t.data<T>();
    const T* bias = bias_t.data<T>();
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t g = 0; g < groups; ++g) {
        int64_t offset = (b * groups + g) * group_size;
        const T* in = x.data<T>() + offset;
        T* out = ctx.output(0).data<T>() + offset;
        RowStats s = ComputeRowStats(in, group_size, epsilon);
        for (int64_t c = 0; c < channels_per_group; ++c) {
          int64_t p = per_channel ? g * channels_per_group + c : g;
          T mul = static_cast<T>(s.inv_std) * scale[p];
          T add = bias[p] - static_cast<T>(s.mean) * mul;
          const T* xc = in + c * spatial;
          T* yc = out + c * spatial;
          for (int64_t i = 0; i < spatial; ++i) yc[i] = xc[i] * mul + add;
        }
      }
    }
  });
}

// x / ||x||_p along one axis; an all-zero slice stays zero.
template <typename T>
void LpNormalize(const T* x, T* y, AxisView v, int64_t p) {
  std::vector<double> norm(static_cast<size_t>(v.inner));
  for (int64_t o = 0; o < v.outer; ++o) {
    const T* in = x + o * v.n * v.inner;
    T* out = y + o * v.n * v.inner;
    std::fill(norm.begin(), norm.end(), 0.0);
    for (int64_t k = 0; k < v.n; ++k) {
      for (int64_t j = 0; j < v.inner; ++j) {
        double value = in[k * v.inner + j];
        norm[static_cast<size_t>(j)] += p == 1 ? std::fabs(value) : value * value;
      }
    }
    for (double& s : norm) {
      if (p == 2) s = std::sqrt(s);
      s = s == 0 ? 0.0 : 1.0 / s;  // Reciprocal, so the last loop multiplies.
    }
    for (int64_t k = 0; k < v.n; ++k)
      for (int64_t j = 0; j < v.inner; ++j)
        out[k * v.inner + j] = static_cast<T>(in[k * v.inner + j] * norm[static_cast<size_t>(j)]);
  }
}

void LpNormKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  int axis = NormalizeAxis(ctx.attrs().GetInt("axis", -1), x.rank(), ctx.node());
  int64_t p = ctx.attrs().GetInt("p", 2);
  KILN_CHECK(p == 1 || p == 2, "p must be 1 or 2, got ", p);
  AxisView v = ViewAroundAxis(x.dims(), axis);
  DispatchFloat(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    LpNormalize(x.data<T>(), ctx.output(0).data<T>(), v, p);
  });
}

// (x - mean) / (std + 1e-9) over `axes`, the epsilon placed as in the ONNX
// function body of MeanVarianceNormalization.
template <typename T>
void MeanVarianceNormalize(const T* x, T* y, const ReduceLayout& layout, int64_t stats_numel) {
  std::vector<double> mean = Accumulate(x, layout, stats_numel, SumOp<T>{});
  double count = static_cast<double>(std::max<int64_t>(layout.reduce_count, 1));
  for (double& m : mean) m /= count;
  std::vector<double> var(mean.size(), 0.0);
  ForEachRun(layout, [&](int64_t in_off, int64_t out_off, int64_t n) {
    int64_t step = layout.inner_reduced ? 0 : 1;
    for (int64_t j = 0; j < n; ++j) {
      double d = x[in_off + j] - mean[static_cast<size_t>(out_off + j * step)];
      var[static_cast<size_t>(out_off + j * step)] += d * d;
    }
  });
  std::vector<double> inv(var.size());
  for (size_t i = 0; i < var.size(); ++i) inv[i] = 1.0 / (std::sqrt(var[i] / count) + 1e-9);
  ForEachRun(layout, [&](int64_t in_off, int64_t out_off, int64_t n) {
    int64_t step = layout.inner_reduced ? 0 : 1;
    for (int64_t j = 0; j < n; ++j) {
      size_t s = static_cast<size_t>(out_off + j * step);
      y[in_off + j] = static_cast<T>((x[in_off + j] - mean[s]) * inv[s]);
    }
  });
}

void MeanVarianceNormKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  std::vector<bool> mask = ReducedAxesMask(ctx.attrs().GetInts("axes", {0, 2, 3}), false, x.rank());
  ReduceLayout layout = MakeReduceLayout(x.dims(), mask);
  int64_t stats_numel = 1;
  for (int i = 0; i < x.rank(); ++i)
    if (!mask[static_cast<size_t>(i)]) stats_numel *= x.dim(i);
  DispatchFloat(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    MeanVarianceNormalize(x.data<T>(), ctx.output(0).data<T>(), layout, stats_numel);
  });
}

}  // namespace

void RegisterReduceCpuKernels(OpRegistry& registry) {
  const std::pair<const char*, ReduceKind> kReductions[] = {
      {"ReduceSum", ReduceKind::kSum},       {"ReduceMean", ReduceKind::kMean},
      {"ReduceProd", ReduceKind::kProd},     {"ReduceMax", ReduceKind::kMax},
      {"ReduceMin", ReduceKind::kMin},       {"ReduceL1", ReduceKind::kL1},
      {"ReduceL2", ReduceKind::kL2},         {"ReduceSumSquare", ReduceKind::kSumSquare},
      {"ReduceLogSum", ReduceKind::kLogSum}, {"ReduceLogSumExp", ReduceKind::kLogSumExp},
  };
  for (const auto& [name, kind] : kReductions)
    registry.Define(name).cpu_kernel = MakeReduceKernel(kind);
  registry.Define("ArgMax").cpu_kernel = MakeArgReduceKernel(/*is_max=*/true);
  registry.Define("ArgMin").cpu_kernel = MakeArgReduceKernel(/*is_max=*/false);
  registry.Define("Softmax").cpu_kernel = MakeSoftmaxKernel(/*log=*/false);
  registry.Define("LogSoftmax").cpu_kernel = MakeSoftmaxKernel(/*log=*/true);
  registry.Define("Hardmax").cpu_kernel = WithFloat32Compute(HardmaxKernel);
  registry.Define("LayerNormalization").cpu_kernel = WithFloat32Compute(LayerNormKernel);
  registry.Define("GroupNormalization").cpu_kernel = WithFloat32Compute(GroupNormKernel);
  registry.Define("LpNormalization").cpu_kernel = WithFloat32Compute(LpNormKernel);
  registry.Define("MeanVarianceNormalization").cpu_kernel =
      WithFloat32Compute(MeanVarianceNormKernel);
}

}  // namespace kiln
