// CPU kernels for the elementwise family (definitions in ops/elementwise.cc).
//
// Every binary, ternary and variadic op goes through one broadcast walker
// (BroadcastRows): it merges dimensions so same-shape operands become a single
// contiguous row and a broadcast operand becomes rows with stride 0, and the
// per-op loops only ever see (pointer, stride in {0,1}, length) rows. Half
// types run through WithFloat32Compute; integer arithmetic wraps like
// two's-complement hardware instead of invoking undefined behaviour, and
// integer division by zero raises a kiln::Error rather than trapping.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/kernel_util.h"
#include "ops/registry.h"

namespace kiln {
namespace {

using cpu::DispatchNumeric;
using cpu::WithFloat32Compute;

// ---- Broadcasting ----

// Walks the output of a numpy broadcast of N inputs row by row. Output dims
// of size 1 are dropped and adjacent dims that every input walks the same way
// (all contiguous, or all broadcast) are merged, so the innermost row is as
// long as possible.
template <size_t N>
class BroadcastRows {
 public:
  BroadcastRows(const std::vector<int64_t>& out_dims,
                const std::array<const std::vector<int64_t>*, N>& in_dims) {
    const size_t rank = out_dims.size();
    std::array<std::vector<int64_t>, N> full;  // Stride of input k along output dim d.
    for (size_t k = 0; k < N; ++k) {
      const std::vector<int64_t>& dims = *in_dims[k];
      KILN_CHECK(dims.size() <= rank, "cannot broadcast ", DimsToString(dims), " to ",
                 DimsToString(out_dims));
      full[k].assign(rank, 0);
      const size_t lead = rank - dims.size();
      int64_t stride = 1;
      for (size_t i = dims.size(); i-- > 0;) {
        KILN_CHECK(dims[i] == out_dims[lead + i] || dims[i] == 1, "cannot broadcast ",
                   DimsToString(dims), " to ", DimsToString(out_dims));
        if (dims[i] != 1) full[k][lead + i] = stride;
        stride *= dims[i];
      }
    }
    for (size_t d = 0; d < rank; ++d) {
      if (out_dims[d] == 0) empty_ = true;
      if (out_dims[d] == 1) continue;
      bool mergeable = !dims_.empty();
      for (size_t k = 0; k < N && mergeable; ++k)
        mergeable = strides_[k].back() == full[k][d] * out_dims[d];
      if (mergeable) {
        dims_.back() *= out_dims[d];
        for (size_t k = 0; k < N; ++k) strides_[k].back() = full[k][d];
      } else {
        dims_.push_back(out_dims[d]);
        for (size_t k = 0; k < N; ++k) strides_[k].push_back(full[k][d]);
      }
    }
    if (dims_.empty()) {  // All dims are 1: one element.
      dims_.push_back(1);
      for (size_t k = 0; k < N; ++k) strides_[k].push_back(0);
    }
  }

  // Calls row(out_offset, in_offsets, in_steps, length) for each innermost
  // row; input k's elements are at in_offsets[k] + j * in_steps[k].
  template <typename RowFn>
  void ForEachRow(RowFn&& row) const {
    if (empty_) return;
    const size_t outer_rank = dims_.size() - 1;
    const int64_t length = dims_.back();
    std::array<int64_t, N> steps;
    for (size_t k = 0; k < N; ++k) steps[k] = strides_[k].back();
    int64_t rows = 1;
    for (size_t d = 0; d < outer_rank; ++d) rows *= dims_[d];
    std::vector<int64_t> counter(outer_rank, 0);
    std::array<int64_t, N> offsets{};
    for (int64_t r = 0; r < rows; ++r) {
      row(r * length, offsets, steps, length);
      for (size_t d = outer_rank; d-- > 0;) {  // Odometer increment.
        for (size_t k = 0; k < N; ++k) offsets[k] += strides_[k][d];
        if (++counter[d] < dims_[d]) break;
        for (size_t k = 0; k < N; ++k) offsets[k] -= strides_[k][d] * dims_[d];
        counter[d] = 0;
      }
    }
  }

 private:
  bool empty_ = false;
  std::vector<int64_t> dims_;
  std::array<std::vector<int64_t>, N> strides_;
};

// out[i] = fn(in[i]) for same-shape tensors.
template <typename I, typename O, typename Fn>
void UnaryLoop(const Tensor& in, Tensor& out, Fn fn) {
  const I* x = in.data<I>();
  O* y = out.data<O>();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) y[i] = fn(x[i]);
}

// out = fn(a, b) with a and b (given their effective dims) broadcast to out's
// dims. `out` may alias `a` when a already has out's dims.
template <typename A, typename B, typename O, typename Fn>
void BinaryLoop(const Tensor& a, const std::vector<int64_t>& a_dims, const Tensor& b,
                const std::vector<int64_t>& b_dims, Tensor& out, Fn fn) {
  const A* pa = a.data<A>();
  const B* pb = b.data<B>();
  O* po = out.data<O>();
  BroadcastRows<2> rows(out.dims(), {&a_dims, &b_dims});
  rows.ForEachRow([&](int64_t o, const std::array<int64_t, 2>& off,
                      const std::array<int64_t, 2>& step, int64_t n) {
    const A* x = pa + off[0];
    const B* y = pb + off[1];
    O* z = po + o;
    if (step[0] == 1 && step[1] == 1) {
      for (int64_t i = 0; i < n; ++i) z[i] = fn(x[i], y[i]);
    } else if (step[0] == 1 && step[1] == 0) {
      const B yv = *y;
      for (int64_t i = 0; i < n; ++i) z[i] = fn(x[i], yv);
    } else if (step[0] == 0 && step[1] == 1) {
      const A xv = *x;
      for (int64_t i = 0; i < n; ++i) z[i] = fn(xv, y[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) z[i] = fn(x[i * step[0]], y[i * step[1]]);
    }
  });
}

// out = in broadcast to out's dims.
template <typename T>
void BroadcastCopy(const Tensor& in, Tensor& out) {
  const T* src = in.data<T>();
  T* dst = out.data<T>();
  BroadcastRows<1> rows(out.dims(), {&in.dims()});
  rows.ForEachRow([&](int64_t o, const std::array<int64_t, 1>& off,
                      const std::array<int64_t, 1>& step, int64_t n) {
    if (step[0] == 1) {
      std::memcpy(dst + o, src + off[0], static_cast<size_t>(n) * sizeof(T));
    } else {
      std::fill(dst + o, dst + o + n, src[off[0]]);
    }
  });
}

// Input i's dims as the binary op sees them. Before opset 7, broadcast=1 made
// B align with A starting at `axis` (default: suffix-aligned); padding B with
// 1s expresses that as a numpy broadcast.
std::vector<int64_t> OperandDims(const KernelContext& ctx, int i) {
  const std::vector<int64_t>& dims = ctx.input(i).dims();
  if (i != 1 || ctx.opset() >= 7 || ctx.attrs().GetInt("broadcast", 0) == 0) return dims;
  const int64_t a_rank = ctx.input(0).rank();
  const int64_t b_rank = static_cast<int64_t>(dims.size());
  const int64_t axis = ctx.attrs().GetInt("axis", a_rank - b_rank);
  KILN_CHECK(axis >= 0 && axis + b_rank <= a_rank, "legacy broadcast of B ", DimsToString(dims),
             " into A ", DimsToString(ctx.input(0).dims()), " at axis ", axis, " does not fit");
  std::vector<int64_t> padded(static_cast<size_t>(a_rank), 1);
  std::copy(dims.begin(), dims.end(), padded.begin() + axis);
  return padded;
}

// out = fn(input 0, input 1) with T the inputs' element type.
template <typename T, typename O, typename Fn>
void RunBinary(const KernelContext& ctx, Fn fn) {
  const Tensor& a = ctx.input(0);
  const Tensor& b = ctx.input(1);
  BinaryLoop<T, T, O>(a, OperandDims(ctx, 0), b, OperandDims(ctx, 1), ctx.output(0), fn);
}

// ---- Type dispatch and integer-safe arithmetic ----

template <typename Fn>
void DispatchFloat(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: fn(float{}); break;
    case DType::kFloat64: fn(double{}); break;
    default: Fail("dtype ", DTypeName(dtype), " is not supported (expected a floating-point type)");
  }
}

template <typename Fn>
void DispatchInteger(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kInt8: fn(int8_t{}); break;
    case DType::kUInt8: fn(uint8_t{}); break;
    case DType::kInt16: fn(int16_t{}); break;
    case DType::kUInt16: fn(uint16_t{}); break;
    case DType::kInt32: fn(int32_t{}); break;
    case DType::kUInt32: fn(uint32_t{}); break;
    case DType::kInt64: fn(int64_t{}); break;
    case DType::kUInt64: fn(uint64_t{}); break;
    default: Fail("dtype ", DTypeName(dtype), " is not supported (expected an integer type)");
  }
}

// Calls fn(T{}) with T the element type for a dtype, by size only (Where
// copies elements without interpreting them).
template <typename Fn>
void DispatchBySize(DType dtype, Fn&& fn) {
  switch (DTypeSize(dtype)) {
    case 1: fn(uint8_t{}); break;
    case 2: fn(uint16_t{}); break;
    case 4: fn(uint32_t{}); break;
    case 8: fn(uint64_t{}); break;
    default: Fail("dtype ", DTypeName(dtype), " is not supported");
  }
}

// Integer +, -, * and negation computed modulo 2^bits (what the hardware
// does, without signed-overflow undefined behaviour).
template <typename T>
T WrapAdd(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<uint64_t>(a) + static_cast<uint64_t>(b));
  } else {
    return a + b;
  }
}
template <typename T>
T WrapSub(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<uint64_t>(a) - static_cast<uint64_t>(b));
  } else {
    return a - b;
  }
}
template <typename T>
T WrapMul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<uint64_t>(a) * static_cast<uint64_t>(b));
  } else {
    return a * b;
  }
}
template <typename T>
T WrapNeg(T a) {
  return WrapSub(T{0}, a);
}

// Division; integers truncate toward zero like C.
template <typename T>
T Divide(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0) Fail("integer division by zero");
    if constexpr (std::is_signed_v<T>) {
      if (b == -1) return WrapNeg(a);  // MIN / -1 overflows.
    }
    return static_cast<T>(a / b);
  } else {
    return a / b;
  }
}

// Integer remainder: fmod=true takes the dividend's sign (C %), fmod=false the
// divisor's (Python %).
template <typename T>
T IntegerMod(T a, T b, bool fmod) {
  if (b == 0) Fail("integer modulo by zero");
  if constexpr (std::is_signed_v<T>) {
    if (b == -1) return 0;  // MIN % -1 overflows.
    T r = static_cast<T>(a % b);
    if (!fmod && r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
    return r;
  } else {
    (void)fmod;
    return static_cast<T>(a % b);
  }
}

// base^exponent for integers by repeated squaring (wrapping on overflow).
// Negative exponents give the truncated real result: 0 unless |base| is 1.
template <typename T>
T IntegerPow(T base, T exponent) {
  if constexpr (std::is_signed_v<T>) {
    if (exponent < 0) {
      if (base == 1) return 1;
      if (base == -1) return (exponent & 1) ? T(-1) : T(1);
      return 0;
    }
  }
  uint64_t result = 1;
  uint64_t square = static_cast<uint64_t>(base);
  for (uint64_t e = static_cast<uint64_t>(exponent); e != 0; e >>= 1) {
    if (e & 1) result *= square;
    square *= square;
  }
  return static_cast<T>(result);
}

// Float -> integer conversion truncating toward zero. Values are converted
// through int64 and then wrapped to T (what C casts do on x86 for values that
// fit int64); NaN gives 0 and values beyond int64 saturate, so no input
// triggers undefined behaviour.
template <typename T>
T FloatToInteger(double v) {
  if (std::isnan(v)) return 0;
  v = std::trunc(v);
  if constexpr (std::is_same_v<T, uint64_t>) {
    if (v >= 18446744073709551616.0) return std::numeric_limits<uint64_t>::max();
    if (v >= 9223372036854775808.0) return static_cast<uint64_t>(v);
  }
  if (v >= 9223372036854775808.0) return static_cast<T>(std::numeric_limits<int64_t>::max());
  if (v < -9223372036854775808.0) return static_cast<T>(std::numeric_limits<int64_t>::min());
  return static_cast<T>(static_cast<int64_t>(v));
}

// Max/Min propagating NaN like numpy.maximum/minimum.
template <typename T>
T MaxOf(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a)) return a;
    if (std::isnan(b)) return b;
  }
  return a < b ? b : a;
}
template <typename T>
T MinOf(T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    if (std::isnan(a)) return a;
    if (std::isnan(b)) return b;
  }
  return b < a ? b : a;
}

// ---- Kernel builders ----

// A float-only unary op: make(attrs) returns a generic functor instantiated
// for float and double; half types are widened around it.
template <typename Make>
CpuKernelFn FloatUnaryKernel(Make make) {
  return WithFloat32Compute([make](KernelContext& ctx) {
    auto fn = make(ctx.attrs());
    DispatchFloat(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      UnaryLoop<T, T>(ctx.input(0), ctx.output(0), [&fn](T x) { return static_cast<T>(fn(x)); });
    });
  });
}

// The same without attributes.
template <typename Fn>
CpuKernelFn FloatUnaryKernelNoAttrs(Fn fn) {
  return FloatUnaryKernel([fn](const ir::Attributes&) { return fn; });
}

// A float predicate producing bool.
template <typename Make>
CpuKernelFn FloatPredicateKernel(Make make) {
  return WithFloat32Compute([make](KernelContext& ctx) {
    auto fn = make(ctx.attrs());
    DispatchFloat(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      UnaryLoop<T, uint8_t>(ctx.input(0), ctx.output(0),
                            [&fn](T x) { return static_cast<uint8_t>(fn(x) ? 1 : 0); });
    });
  });
}

// A unary op over every numeric dtype.
template <typename Fn>
CpuKernelFn NumericUnaryKernel(Fn fn) {
  return WithFloat32Compute([fn](KernelContext& ctx) {
    DispatchNumeric(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      UnaryLoop<T, T>(ctx.input(0), ctx.output(0), [&fn](T x) { return static_cast<T>(fn(x)); });
    });
  });
}

// A binary op over every numeric dtype; `bool_output` ops write uint8 0/1.
template <bool kBoolOutput, typename Fn>
CpuKernelFn NumericBinaryKernel(Fn fn) {
  return WithFloat32Compute([fn](KernelContext& ctx) {
    DispatchNumeric(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      if constexpr (kBoolOutput) {
        RunBinary<T, uint8_t>(ctx, [&fn](T a, T b) { return static_cast<uint8_t>(fn(a, b)); });
      } else {
        RunBinary<T, T>(ctx, [&fn](T a, T b) { return static_cast<T>(fn(a, b)); });
      }
    });
  });
}

template <typename Fn>
CpuKernelFn IntegerBinaryKernel(Fn fn) {
  return [fn](KernelContext& ctx) {
    DispatchInteger(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      RunBinary<T, T>(ctx, [&fn](T a, T b) { return static_cast<T>(fn(a, b)); });
    });
  };
}

template <typename Fn>
CpuKernelFn BoolBinaryKernel(Fn fn) {
  return [fn](KernelContext& ctx) {
    RunBinary<uint8_t, uint8_t>(
        ctx, [&fn](uint8_t a, uint8_t b) { return static_cast<uint8_t>(fn(a != 0, b != 0)); });
  };
}

// Sum/Max/Min/Mean: fold the inputs into the output one broadcast at a time.
template <typename Fn>
CpuKernelFn VariadicKernel(Fn fn, bool mean = false) {
  return WithFloat32Compute([fn, mean](KernelContext& ctx) {
    Tensor& out = ctx.output(0);
    DispatchNumeric(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      BroadcastCopy<T>(ctx.input(0), out);
      for (int k = 1; k < ctx.num_inputs(); ++k) {
        const Tensor& in = ctx.input(k);
        BinaryLoop<T, T, T>(out, out.dims(), in, in.dims(), out,
                            [&fn](T a, T b) { return static_cast<T>(fn(a, b)); });
      }
      if constexpr (std::is_floating_point_v<T>) {
        if (mean) {
          const T scale = T(1) / static_cast<T>(ctx.num_inputs());
          T* y = out.data<T>();
          for (int64_t i = 0; i < out.numel(); ++i) y[i] *= scale;
        }
      }
    });
  });
}

// ---- Individual kernels ----

void ClipKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  DispatchNumeric(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T lo = std::numeric_limits<T>::lowest();
    T hi = std::numeric_limits<T>::max();
    if constexpr (std::is_floating_point_v<T>) {
      lo = -std::numeric_limits<T>::infinity();
      hi = std::numeric_limits<T>::infinity();
    }
    if (ctx.opset() < 11) {
      if (ctx.attrs().has("min")) lo = static_cast<T>(ctx.attrs().GetFloat("min"));
      if (ctx.attrs().has("max")) hi = static_cast<T>(ctx.attrs().GetFloat("max"));
    } else {
      for (int i = 1; i <= 2; ++i) {
        const Tensor* bound = ctx.optional_input(i);
        if (!bound) continue;
        KILN_CHECK(bound->numel() == 1, "Clip ", i == 1 ? "min" : "max", " must be a scalar, got ",
                   bound->TypeString());
        (i == 1 ? lo : hi) = bound->data<T>()[0];
      }
    }
    // Clamping to lo first and hi second makes every value hi when min > max,
    // as the spec requires; NaN passes through.
    UnaryLoop<T, T>(x, ctx.output(0), [lo, hi](T v) {
      v = v < lo ? lo : v;
      return v > hi ? hi : v;
    });
  });
}

void PReluKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor& slope = ctx.input(1);
  std::vector<int64_t> slope_dims = slope.dims();
  // Before opset 7 a 1-D slope applied per channel (axis 1), not numpy-style.
  if (ctx.opset() < 7 && slope.rank() == 1 && slope.numel() != 1 && x.rank() >= 2) {
    slope_dims.assign(static_cast<size_t>(x.rank() - 1), 1);
    slope_dims[0] = slope.numel();
  }
  DispatchNumeric(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    BinaryLoop<T, T, T>(x, x.dims(), slope, slope_dims, ctx.output(0),
                        [](T v, T s) { return v < T(0) ? static_cast<T>(s * v) : v; });
  });
}

void PowKernel(KernelContext& ctx) {
  const Tensor& base = ctx.input(0);
  const Tensor& exponent = ctx.input(1);
  const std::vector<int64_t> base_dims = OperandDims(ctx, 0);
  const std::vector<int64_t> exponent_dims = OperandDims(ctx, 1);
  Tensor& out = ctx.output(0);
  const DType base_type = base.dtype();
  if (IsFloatingPoint(base_type)) {
    // Mixed types (opset 12+): the exponent is converted to the base's type.
    Tensor e = exponent.dtype() == base_type ? exponent : exponent.CastTo(base_type);
    DispatchFloat(base_type, [&](auto tag) {
      using T = decltype(tag);
      BinaryLoop<T, T, T>(base, base_dims, e, exponent_dims, out,
                          [](T a, T b) { return static_cast<T>(std::pow(a, b)); });
    });
  } else if (IsInteger(exponent.dtype())) {
    Tensor e = exponent.dtype() == base_type ? exponent : exponent.CastTo(base_type);
    DispatchInteger(base_type, [&](auto tag) {
      using T = decltype(tag);
      BinaryLoop<T, T, T>(base, base_dims, e, exponent_dims, out, IntegerPow<T>);
    });
  } else {
    // Integer base, float exponent: computed in double, truncated like numpy's astype.
    Tensor e = exponent.dtype() == DType::kFloat64 ? exponent : exponent.CastTo(DType::kFloat64);
    DispatchInteger(base_type, [&](auto tag) {
      using T = decltype(tag);
      BinaryLoop<T, double, T>(base, base_dims, e, exponent_dims, out, [](T a, double b) {
        return FloatToInteger<T>(std::pow(static_cast<double>(a), b));
      });
    });
  }
}

void ModKernel(KernelContext& ctx) {
  const bool fmod = ctx.attrs().GetInt("fmod", 0) != 0;
  DType dtype = ctx.input(0).dtype();
  if (IsFloatingPoint(dtype)) {
    KILN_CHECK(fmod, "Mod of floating-point inputs requires fmod=1");
    DispatchFloat(dtype, [&](auto tag) {
      using T = decltype(tag);
      RunBinary<T, T>(ctx, [](T a, T b) { return static_cast<T>(std::fmod(a, b)); });
    });
    return;
  }
  DispatchInteger(dtype, [&](auto tag) {
    using T = decltype(tag);
    RunBinary<T, T>(ctx, [fmod](T a, T b) { return IntegerMod(a, b, fmod); });
  });
}

template <typename E>
void WhereLoop(const Tensor& cond, const Tensor& x, const Tensor& y, Tensor& out) {
  const uint8_t* c = cond.data<uint8_t>();
  const E* px = x.data<E>();
  const E* py = y.data<E>();
  E* po = out.data<E>();
  BroadcastRows<3> rows(out.dims(), {&cond.dims(), &x.dims(), &y.dims()});
  rows.ForEachRow([&](int64_t o, const std::array<int64_t, 3>& off,
                      const std::array<int64_t, 3>& step, int64_t n) {
    const uint8_t* ci = c + off[0];
    const E* xi = px + off[1];
    const E* yi = py + off[2];
    E* z = po + o;
    if (step[0] == 1 && step[1] == 1 && step[2] == 1) {
      for (int64_t i = 0; i < n; ++i) z[i] = ci[i] ? xi[i] : yi[i];
    } else {
      for (int64_t i = 0; i < n; ++i) z[i] = ci[i * step[0]] ? xi[i * step[1]] : yi[i * step[2]];
    }
  });
}

void WhereKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(1);
  DispatchBySize(x.dtype(), [&](auto tag) {
    using E = decltype(tag);
    WhereLoop<E>(ctx.input(0), x, ctx.input(2), ctx.output(0));
  });
}

// ---- Cast ----

// Calls write(i, v) for every element of `in`, with v the element widened
// losslessly to double (floats), int64 (signed ints, bool) or uint64.
template <typename Write>
void ReadWidened(const Tensor& in, Write&& write) {
  const int64_t n = in.numel();
  auto each = [&](auto tag, auto widen) {
    using S = decltype(tag);
    const S* src = in.data<S>();
    for (int64_t i = 0; i < n; ++i) write(i, widen(src[i]));
  };
  auto to_double = [](auto v) { return static_cast<double>(v); };
  auto to_int64 = [](auto v) { return static_cast<int64_t>(v); };
  auto to_uint64 = [](auto v) { return static_cast<uint64_t>(v); };
  switch (in.dtype()) {
    case DType::kFloat32: each(float{}, to_double); break;
    case DType::kFloat64: each(double{}, to_double); break;
    case DType::kFloat16:
      each(uint16_t{}, [](uint16_t h) { return static_cast<double>(HalfToFloat(h)); });
      break;
    case DType::kBFloat16:
      each(uint16_t{}, [](uint16_t h) { return static_cast<double>(BFloat16ToFloat(h)); });
      break;
    case DType::kInt8: each(int8_t{}, to_int64); break;
    case DType::kInt16: each(int16_t{}, to_int64); break;
    case DType::kInt32: each(int32_t{}, to_int64); break;
    case DType::kInt64: each(int64_t{}, to_int64); break;
    case DType::kUInt8: each(uint8_t{}, to_uint64); break;
    case DType::kUInt16: each(uint16_t{}, to_uint64); break;
    case DType::kUInt32: each(uint32_t{}, to_uint64); break;
    case DType::kUInt64: each(uint64_t{}, to_uint64); break;
    case DType::kBool:
      each(uint8_t{}, [](uint8_t b) { return static_cast<int64_t>(b != 0); });
      break;
    default: Fail("cannot cast from ", DTypeName(in.dtype()));
  }
}

// A widened value converted to element type D (an arithmetic C++ type).
template <typename D, typename V>
D ConvertWidened(V v) {
  if constexpr (std::is_integral_v<D> && std::is_floating_point_v<V>) {
    return FloatToInteger<D>(v);
  } else {
    return static_cast<D>(v);  // Integer narrowing wraps; int -> float rounds.
  }
}

void CastTensor(const Tensor& in, Tensor& out) {
  if (in.dtype() == out.dtype()) {
    std::memcpy(out.raw_data(), in.raw_data(), in.nbytes());
    return;
  }
  auto store = [&](auto tag) {
    using D = decltype(tag);
    D* dst = out.data<D>();
    ReadWidened(in, [dst](int64_t i, auto v) { dst[i] = ConvertWidened<D>(v); });
  };
  switch (out.dtype()) {
    case DType::kFloat32: store(float{}); break;
    case DType::kFloat64: store(double{}); break;
    case DType::kInt8: store(int8_t{}); break;
    case DType::kInt16: store(int16_t{}); break;
    case DType::kInt32: store(int32_t{}); break;
    case DType::kInt64: store(int64_t{}); break;
    case DType::kUInt8: store(uint8_t{}); break;
    case DType::kUInt16: store(uint16_t{}); break;
    case DType::kUInt32: store(uint32_t{}); break;
    case DType::kUInt64: store(uint64_t{}); break;
    case DType::kFloat16: {
      uint16_t* dst = out.data<uint16_t>();
      ReadWidened(in, [dst](int64_t i, auto v) { dst[i] = FloatToHalf(static_cast<float>(v)); });
      break;
    }
    case DType::kBFloat16: {
      uint16_t* dst = out.data<uint16_t>();
      ReadWidened(in,
                  [dst](int64_t i, auto v) { dst[i] = FloatToBFloat16(static_cast<float>(v)); });
      break;
    }
    case DType::kBool: {
      uint8_t* dst = out.data<uint8_t>();
      // NaN is "not zero", hence true, as in numpy.
      ReadWidened(in, [dst](int64_t i, auto v) { dst[i] = v != 0 ? 1 : 0; });
      break;
    }
    default: Fail("cannot cast to ", DTypeName(out.dtype()));
  }
}

void CastKernel(KernelContext& ctx) { CastTensor(ctx.input(0), ctx.output(0)); }

// ---- Linear (de)quantization ----

// How scale/zero point map onto X: X viewed as [outer, channels, inner] with
// one (scale, zero point) pair per channel. Per-tensor is channels == 1.
struct QuantLayout {
  int64_t outer = 1;
  int64_t channels = 1;
  int64_t inner = 1;
};

QuantLayout GetQuantLayout(const KernelContext& ctx, const Tensor& x, const Tensor& scale,
                           const Tensor* zero_point) {
  KILN_CHECK(!zero_point || zero_point->numel() == scale.numel(), "zero point ",
             zero_point ? zero_point->TypeString() : "", " and scale ", scale.TypeString(),
             " must have the same number of elements");
  QuantLayout layout;
  if (scale.numel() == 1 && scale.rank() <= 1) {
    layout.inner = x.numel();
    return layout;
  }
  KILN_CHECK(scale.rank() == 1, "scale must be a scalar or 1-D, got ", scale.TypeString());
  const int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 1), x.rank(), ctx.node());
  KILN_CHECK(scale.numel() == x.dim(axis), "per-axis scale ", scale.TypeString(),
             " does not match X ", x.TypeString(), " along axis ", axis);
  layout.outer = Product(x.dims(), 0, static_cast<size_t>(axis));
  layout.channels = x.dim(axis);
  layout.inner = Product(x.dims(), static_cast<size_t>(axis) + 1);
  return layout;
}

template <typename Fn>
void DispatchQuantized(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kInt8: fn(int8_t{}); break;
    case DType::kUInt8: fn(uint8_t{}); break;
    case DType::kInt16: fn(int16_t{}); break;
    case DType::kUInt16: fn(uint16_t{}); break;
    case DType::kInt32: fn(int32_t{}); break;
    default: Fail("quantized dtype ", DTypeName(dtype), " is not supported");
  }
}

Tensor AsFloat32(const Tensor& t) {
  return t.dtype() == DType::kFloat32 ? t : t.CastTo(DType::kFloat32);
}

void QuantizeLinearKernel(KernelContext& ctx) {
  const Tensor x = AsFloat32(ctx.input(0));
  const Tensor scale = AsFloat32(ctx.input(1));
  const Tensor* zero_point = ctx.optional_input(2);
  Tensor& y = ctx.output(0);
  const QuantLayout layout = GetQuantLayout(ctx, x, scale, zero_point);
  DispatchQuantized(y.dtype(), [&](auto tag) {
    using Q = decltype(tag);
    const float lo = static_cast<float>(std::numeric_limits<Q>::min());
    const float hi = static_cast<float>(std::numeric_limits<Q>::max());
    const float* in = x.data<float>();
    Q* out = y.data<Q>();
    for (int64_t o = 0; o < layout.outer; ++o) {
      for (int64_t c = 0; c < layout.channels; ++c) {
        const float s = scale.data<float>()[c];
        const float zp = zero_point ? static_cast<float>(zero_point->data<Q>()[c]) : 0.f;
        const int64_t base = (o * layout.channels + c) * layout.inner;
        for (int64_t i = 0; i < layout.inner; ++i) {
          // Round half to even (the default FP rounding mode), then saturate.
          float q = std::nearbyint(in[base + i] / s) + zp;
          q = std::isnan(q) ? 0.f : std::min(std::max(q, lo), hi);
          out[base + i] = static_cast<Q>(q);
        }
      }
    }
  });
}

void DequantizeLinearKernel(KernelContext& ctx) {
  const Tensor& x = ctx.input(0);
  const Tensor scale = AsFloat32(ctx.input(1));
  const Tensor* zero_point = ctx.optional_input(2);
  Tensor& y = ctx.output(0);
  KILN_CHECK(y.dtype() == DType::kFloat32, "DequantizeLinear to ", DTypeName(y.dtype()),
             " is not supported");
  const QuantLayout layout = GetQuantLayout(ctx, x, scale, zero_point);
  DispatchQuantized(x.dtype(), [&](auto tag) {
    using Q = decltype(tag);
    const Q* in = x.data<Q>();
    float* out = y.data<float>();
    for (int64_t o = 0; o < layout.outer; ++o) {
      for (int64_t c = 0; c < layout.channels; ++c) {
        const float s = scale.data<float>()[c];
        const float zp = zero_point ? static_cast<float>(zero_point->data<Q>()[c]) : 0.f;
        const int64_t base = (o * layout.channels + c) * layout.inner;
        for (int64_t i = 0; i < layout.inner; ++i)
          out[base + i] = (static_cast<float>(in[base + i]) - zp) * s;
      }
    }
  });
}

// ---- Activation functors ----

template <typename T>
T StableSoftplus(T x) {
  // log(1 + e^x) without overflow for large x.
  return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

template <typename T>
T StableSigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

void SetKernel(OpRegistry& registry, const char* op, CpuKernelFn kernel) {
  registry.Define(op).cpu_kernel = std::move(kernel);
}

}  // namespace

void RegisterElementwiseCpuKernels(OpRegistry& registry) {
  // Float-only unary math.
  SetKernel(registry, "Sigmoid", FloatUnaryKernelNoAttrs([](auto x) { return StableSigmoid(x); }));
  SetKernel(registry, "Tanh", FloatUnaryKernelNoAttrs([](auto x) { return std::tanh(x); }));
  SetKernel(registry, "Exp", FloatUnaryKernelNoAttrs([](auto x) { return std::exp(x); }));
  SetKernel(registry, "Log", FloatUnaryKernelNoAttrs([](auto x) { return std::log(x); }));
  SetKernel(registry, "Sqrt", FloatUnaryKernelNoAttrs([](auto x) { return std::sqrt(x); }));
  SetKernel(registry, "Reciprocal",
            FloatUnaryKernelNoAttrs([](auto x) { return decltype(x)(1) / x; }));
  SetKernel(registry, "Floor", FloatUnaryKernelNoAttrs([](auto x) { return std::floor(x); }));
  SetKernel(registry, "Ceil", FloatUnaryKernelNoAttrs([](auto x) { return std::ceil(x); }));
  // nearbyint rounds half to even in the default rounding mode.
  SetKernel(registry, "Round", FloatUnaryKernelNoAttrs([](auto x) { return std::nearbyint(x); }));
  SetKernel(registry, "Erf", FloatUnaryKernelNoAttrs([](auto x) { return std::erf(x); }));
  SetKernel(registry, "Sin", FloatUnaryKernelNoAttrs([](auto x) { return std::sin(x); }));
  SetKernel(registry, "Cos", FloatUnaryKernelNoAttrs([](auto x) { return std::cos(x); }));
  SetKernel(registry, "Softplus",
            FloatUnaryKernelNoAttrs([](auto x) { return StableSoftplus(x); }));
  SetKernel(registry, "Softsign",
            FloatUnaryKernelNoAttrs([](auto x) { return x / (decltype(x)(1) + std::fabs(x)); }));
  SetKernel(registry, "Mish",
            FloatUnaryKernelNoAttrs([](auto x) { return x * std::tanh(StableSoftplus(x)); }));
  SetKernel(registry, "HardSwish", FloatUnaryKernelNoAttrs([](auto x) {
              using T = decltype(x);
              return x * std::max(T(0), std::min(T(1), T(1.0 / 6.0) * x + T(0.5)));
            }));

  // Activations with attributes.
  SetKernel(registry, "Gelu", FloatUnaryKernel([](const ir::Attributes& attrs) {
              const bool tanh_approximation = attrs.GetString("approximate", "none") == "tanh";
              return [tanh_approximation](auto x) {
                using T = decltype(x);
                if (tanh_approximation) {
                  const T inner = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
                  return T(0.5) * x * (T(1) + std::tanh(inner));
                }
                return T(0.5) * x * (T(1) + std::erf(x * T(0.7071067811865476)));
              };
            }));
  SetKernel(registry, "Elu", FloatUnaryKernel([](const ir::Attributes& attrs) {
              const float alpha = attrs.GetFloat("alpha", 1.f);
              return [alpha](auto x) {
                using T = decltype(x);
                return x >= T(0) ? x : T(alpha) * (std::exp(x) - T(1));
              };
            }));
  SetKernel(registry, "Selu", FloatUnaryKernel([](const ir::Attributes& attrs) {
              const float alpha = attrs.GetFloat("alpha", 1.67326319217681884765625f);
              const float gamma = attrs.GetFloat("gamma", 1.05070102214813232421875f);
              return [alpha, gamma](auto x) {
                using T = decltype(x);
                return x > T(0) ? T(gamma) * x : T(gamma) * (T(alpha) * std::exp(x) - T(alpha));
              };
            }));
  SetKernel(registry, "Celu", FloatUnaryKernel([](const ir::Attributes& attrs) {
              const float alpha = attrs.GetFloat("alpha", 1.f);
              KILN_CHECK(alpha != 0.f, "Celu alpha must not be 0");
              return [alpha](auto x) {
                using T = decltype(x);
                return std::max(T(0), x) +
                       std::min(T(0), T(alpha) * (std::exp(x / T(alpha)) - T(1)));
              };
            }));
  SetKernel(registry, "LeakyRelu", FloatUnaryKernel([](const ir::Attributes& attrs) {
              const float alpha = attrs.GetFloat("alpha", 0.01f);
              return [alpha](auto x) {
                using T = decltype(x);
                return x < T(0) ? T(alpha) * x : x;
              };
            }));
  SetKernel(registry, "HardSigmoid", FloatUnaryKernel([](const ir::Attributes& attrs) {
              const float alpha = attrs.GetFloat("alpha", 0.2f);
              const float beta = attrs.GetFloat("beta", 0.5f);
              return [alpha, beta](auto x) {
                using T = decltype(x);
                return std::max(T(0), std::min(T(1), T(alpha) * x + T(beta)));
              };
            }));
  SetKernel(registry, "ThresholdedRelu", FloatUnaryKernel([](const ir::Attributes& attrs) {
              const float alpha = attrs.GetFloat("alpha", 1.f);
              return [alpha](auto x) {
                using T = decltype(x);
                return x > T(alpha) ? x : T(0);
              };
            }));
  SetKernel(registry, "IsNaN", FloatPredicateKernel([](const ir::Attributes&) {
              return [](auto x) { return std::isnan(x); };
            }));
  SetKernel(registry, "IsInf", FloatPredicateKernel([](const ir::Attributes& attrs) {
              const bool positive = attrs.GetInt("detect_positive", 1) != 0;
              const bool negative = attrs.GetInt("detect_negative", 1) != 0;
              return [positive, negative](auto x) {
                return std::isinf(x) && ((x > 0 && positive) || (x < 0 && negative));
              };
            }));

  // Unary ops over integers too.
  SetKernel(registry, "Relu", NumericUnaryKernel([](auto x) {
              using T = decltype(x);
              return x < T(0) ? T(0) : x;  // NaN stays NaN.
            }));
  SetKernel(registry, "Neg", NumericUnaryKernel([](auto x) { return WrapNeg(x); }));
  SetKernel(registry, "Abs", NumericUnaryKernel([](auto x) {
              using T = decltype(x);
              if constexpr (std::is_floating_point_v<T>) {
                return std::fabs(x);
              } else if constexpr (std::is_signed_v<T>) {
                return x < 0 ? WrapNeg(x) : x;
              } else {
                return x;
              }
            }));
  SetKernel(registry, "Sign", NumericUnaryKernel([](auto x) {
              using T = decltype(x);
              if constexpr (std::is_floating_point_v<T>) {
                if (std::isnan(x)) return x;
              }
              return static_cast<T>((T(0) < x) - (x < T(0)));
            }));
  SetKernel(registry, "Not", [](KernelContext& ctx) {
    UnaryLoop<uint8_t, uint8_t>(ctx.input(0), ctx.output(0),
                                [](uint8_t x) { return static_cast<uint8_t>(x == 0); });
  });
  SetKernel(registry, "BitwiseNot", [](KernelContext& ctx) {
    DispatchInteger(ctx.input(0).dtype(), [&](auto tag) {
      using T = decltype(tag);
      UnaryLoop<T, T>(ctx.input(0), ctx.output(0), [](T x) { return static_cast<T>(~x); });
    });
  });
  SetKernel(registry, "Clip", WithFloat32Compute(ClipKernel));
  SetKernel(registry, "PRelu", WithFloat32Compute(PReluKernel));

  // Binary arithmetic.
  SetKernel(registry, "Add",
            NumericBinaryKernel<false>([](auto a, auto b) { return WrapAdd(a, b); }));
  SetKernel(registry, "Sub",
            NumericBinaryKernel<false>([](auto a, auto b) { return WrapSub(a, b); }));
  SetKernel(registry, "Mul",
            NumericBinaryKernel<false>([](auto a, auto b) { return WrapMul(a, b); }));
  SetKernel(registry, "Div",
            NumericBinaryKernel<false>([](auto a, auto b) { return Divide(a, b); }));
  SetKernel(registry, "Pow", WithFloat32Compute(PowKernel));
  SetKernel(registry, "Mod", WithFloat32Compute(ModKernel));
  SetKernel(registry, "BitwiseAnd", IntegerBinaryKernel([](auto a, auto b) { return a & b; }));
  SetKernel(registry, "BitwiseOr", IntegerBinaryKernel([](auto a, auto b) { return a | b; }));
  SetKernel(registry, "BitwiseXor", IntegerBinaryKernel([](auto a, auto b) { return a ^ b; }));

  // Comparisons and logic.
  SetKernel(registry, "Equal", NumericBinaryKernel<true>([](auto a, auto b) { return a == b; }));
  SetKernel(registry, "Less", NumericBinaryKernel<true>([](auto a, auto b) { return a < b; }));
  SetKernel(registry, "Greater", NumericBinaryKernel<true>([](auto a, auto b) { return a > b; }));
  SetKernel(registry, "LessOrEqual",
            NumericBinaryKernel<true>([](auto a, auto b) { return a <= b; }));
  SetKernel(registry, "GreaterOrEqual",
            NumericBinaryKernel<true>([](auto a, auto b) { return a >= b; }));
  SetKernel(registry, "And", BoolBinaryKernel([](bool a, bool b) { return a && b; }));
  SetKernel(registry, "Or", BoolBinaryKernel([](bool a, bool b) { return a || b; }));
  SetKernel(registry, "Xor", BoolBinaryKernel([](bool a, bool b) { return a != b; }));

  // Variadic.
  SetKernel(registry, "Sum", VariadicKernel([](auto a, auto b) { return WrapAdd(a, b); }));
  SetKernel(registry, "Max", VariadicKernel([](auto a, auto b) { return MaxOf(a, b); }));
  SetKernel(registry, "Min", VariadicKernel([](auto a, auto b) { return MinOf(a, b); }));
  SetKernel(registry, "Mean",
            VariadicKernel([](auto a, auto b) { return WrapAdd(a, b); }, /*mean=*/true));

  SetKernel(registry, "Where", WhereKernel);
  SetKernel(registry, "Cast", CastKernel);
  SetKernel(registry, "CastLike", CastKernel);
  SetKernel(registry, "QuantizeLinear", WithFloat32Compute(QuantizeLinearKernel));
  SetKernel(registry, "DequantizeLinear", WithFloat32Compute(DequantizeLinearKernel));
}

}  // namespace kiln
