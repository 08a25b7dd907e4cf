#include "kiln/tensor.h"

#include <cstring>
#include <limits>

#include "kiln/error.h"

namespace kiln {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kUInt8: return 1;
    case DType::kInt8: return 1;
    case DType::kUInt16: return 2;
    case DType::kInt16: return 2;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kBool: return 1;
    case DType::kFloat16: return 2;
    case DType::kFloat64: return 8;
    case DType::kUInt32: return 4;
    case DType::kUInt64: return 8;
    case DType::kBFloat16: return 2;
    case DType::kString:
    case DType::kUndefined: return 0;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kUInt16: return "uint16";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kString: return "string";
    case DType::kBool: return "bool";
    case DType::kFloat16: return "float16";
    case DType::kFloat64: return "float64";
    case DType::kUInt32: return "uint32";
    case DType::kUInt64: return "uint64";
    case DType::kBFloat16: return "bfloat16";
    case DType::kUndefined: return "undefined";
  }
  return "unknown";
}

bool IsFloatingPoint(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16 ||
         d == DType::kFloat64;
}

bool IsInteger(DType d) {
  switch (d) {
    case DType::kUInt8: case DType::kInt8: case DType::kUInt16: case DType::kInt16:
    case DType::kInt32: case DType::kInt64: case DType::kUInt32: case DType::kUInt64:
      return true;
    default:
      return false;
  }
}

float HalfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // Subnormal: normalise.
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      mantissa &= 0x3ff;
      bits = sign | (exponent << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1f) {
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000) {  // Inf or NaN.
    return static_cast<uint16_t>(sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0));
  }
  if (abs >= 0x477ff000) return static_cast<uint16_t>(sign | 0x7c00);  // Overflow.
  if (abs < 0x38800000) {  // Result is subnormal or zero.
    if (abs < 0x33000000) return static_cast<uint16_t>(sign);
    // Half subnormals count units of 2^-24: value = mantissa * 2^(exponent - 126).
    uint32_t exponent = abs >> 23;
    uint32_t mantissa = (abs & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - exponent;  // 14..24 here.
    uint32_t value = mantissa >> shift;
    uint32_t remainder = mantissa & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (value & 1))) ++value;
    return static_cast<uint16_t>(sign | value);
  }
  uint32_t value = ((abs - 0x38000000) >> 13);
  uint32_t remainder = abs & 0x1fff;
  if (remainder > 0x1000 || (remainder == 0x1000 && (value & 1))) ++value;
  return static_cast<uint16_t>(sign | value);
}

float BFloat16ToFloat(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // NaN
  uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

Tensor::Tensor(DType dtype, std::vector<int64_t> dims) : dtype_(dtype), dims_(std::move(dims)) {
  KILN_CHECK(dtype != DType::kUndefined && dtype != DType::kString,
             "cannot allocate a tensor of dtype ", DTypeName(dtype));
  for (int64_t d : dims_) KILN_CHECK(d >= 0, "negative dimension in ", DimsToString(dims_));
  // Always allocate at least one byte so data() is non-null for empty tensors.
  size_t bytes = std::max<size_t>(nbytes(), 1);
  std::shared_ptr<uint8_t[]> buffer(new uint8_t[bytes]);
  data_ = buffer.get();
  storage_ = std::shared_ptr<const void>(buffer, buffer.get());
}

Tensor Tensor::Borrow(DType dtype, std::vector<int64_t> dims, std::shared_ptr<const void> owner,
                      const void* data) {
  Tensor t;
  t.dtype_ = dtype;
  t.dims_ = std::move(dims);
  t.storage_ = std::move(owner);
  t.data_ = const_cast<void*>(data);
  return t;
}

Tensor Tensor::Scalar(float value) { return FromFloats({}, {value}); }

Tensor Tensor::FromFloats(std::vector<int64_t> dims, const std::vector<float>& values) {
  Tensor t(DType::kFloat32, std::move(dims));
  KILN_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "FromFloats: ", values.size(),
             " values for shape ", DimsToString(t.dims()));
  std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::FromInt64s(std::vector<int64_t> dims, const std::vector<int64_t>& values) {
  Tensor t(DType::kInt64, std::move(dims));
  KILN_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "FromInt64s: ", values.size(),
             " values for shape ", DimsToString(t.dims()));
  std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

size_t ByteSize(DType dtype, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) {
    KILN_CHECK(d >= 0, "negative dimension in ", DimsToString(dims));
    n *= d;
  }
  return static_cast<size_t>(n) * DTypeSize(dtype);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims_) n *= d;
  return n;
}

Tensor Tensor::Reshaped(std::vector<int64_t> dims) const {
  Tensor t = *this;
  t.dims_ = std::move(dims);
  KILN_CHECK(t.numel() == numel(), "cannot reshape ", TypeString(), " to ",
             DimsToString(t.dims_));
  return t;
}

Tensor Tensor::Clone() const {
  if (!defined()) return Tensor();
  Tensor t(dtype_, dims_);
  if (nbytes() > 0) std::memcpy(t.raw_data(), data_, nbytes());
  return t;
}

double Tensor::GetAsDouble(int64_t i) const {
  switch (dtype_) {
    case DType::kFloat32: return data<float>()[i];
    case DType::kFloat64: return data<double>()[i];
    case DType::kFloat16: return HalfToFloat(data<uint16_t>()[i]);
    case DType::kBFloat16: return BFloat16ToFloat(data<uint16_t>()[i]);
    case DType::kUInt8: return data<uint8_t>()[i];
    case DType::kInt8: return data<int8_t>()[i];
    case DType::kUInt16: return data<uint16_t>()[i];
    case DType::kInt16: return data<int16_t>()[i];
    case DType::kInt32: return data<int32_t>()[i];
    case DType::kInt64: return static_cast<double>(data<int64_t>()[i]);
    case DType::kUInt32: return data<uint32_t>()[i];
    case DType::kUInt64: return static_cast<double>(data<uint64_t>()[i]);
    case DType::kBool: return data<uint8_t>()[i] ? 1.0 : 0.0;
    default: Fail("cannot read elements of a ", DTypeName(dtype_), " tensor");
  }
}

int64_t Tensor::GetAsInt64(int64_t i) const {
  switch (dtype_) {
    case DType::kInt64: return data<int64_t>()[i];
    case DType::kInt32: return data<int32_t>()[i];
    case DType::kUInt64: return static_cast<int64_t>(data<uint64_t>()[i]);
    default: return static_cast<int64_t>(GetAsDouble(i));
  }
}

std::vector<int64_t> Tensor::ToInt64Vector() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[static_cast<size_t>(i)] = GetAsInt64(i);
  return out;
}

std::vector<float> Tensor::ToFloatVector() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) out[static_cast<size_t>(i)] = static_cast<float>(GetAsDouble(i));
  return out;
}

namespace {
template <typename T>
void StoreAll(const Tensor& src, T* dst) {
  int64_t n = src.numel();
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src.GetAsDouble(i));
}
}  // namespace

Tensor Tensor::CastTo(DType to) const {
  if (to == dtype_) return Clone();
  Tensor out(to, dims_);
  int64_t n = numel();
  switch (to) {
    case DType::kFloat32: StoreAll(*this, out.data<float>()); break;
    case DType::kFloat64: StoreAll(*this, out.data<double>()); break;
    case DType::kFloat16:
      for (int64_t i = 0; i < n; ++i)
        out.data<uint16_t>()[i] = FloatToHalf(static_cast<float>(GetAsDouble(i)));
      break;
    case DType::kBFloat16:
      for (int64_t i = 0; i < n; ++i)
        out.data<uint16_t>()[i] = FloatToBFloat16(static_cast<float>(GetAsDouble(i)));
      break;
    case DType::kInt64:
      for (int64_t i = 0; i < n; ++i) out.data<int64_t>()[i] = GetAsInt64(i);
      break;
    case DType::kInt32: StoreAll(*this, out.data<int32_t>()); break;
    case DType::kInt16: StoreAll(*this, out.data<int16_t>()); break;
    case DType::kInt8: StoreAll(*this, out.data<int8_t>()); break;
    case DType::kUInt8: StoreAll(*this, out.data<uint8_t>()); break;
    case DType::kUInt16: StoreAll(*this, out.data<uint16_t>()); break;
    case DType::kUInt32: StoreAll(*this, out.data<uint32_t>()); break;
    case DType::kUInt64: StoreAll(*this, out.data<uint64_t>()); break;
    case DType::kBool:
      for (int64_t i = 0; i < n; ++i) out.data<uint8_t>()[i] = GetAsDouble(i) != 0.0;
      break;
    default: Fail("cannot cast ", TypeString(), " to ", DTypeName(to));
  }
  return out;
}

std::string Tensor::TypeString() const { return StrCat(DTypeName(dtype_), DimsToString(dims_)); }

std::string DimsToString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

}  // namespace kiln
