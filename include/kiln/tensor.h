// Host tensors: a dtype, concrete dims and a reference-counted byte buffer.
//
// A Tensor is a cheap handle: copying it shares the storage (like a
// shared_ptr). Weights imported from an ONNX file alias the bytes of the
// loaded file instead of copying them (Tensor::Borrow). Use Clone() for a deep
// copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

// Element types. The numeric values equal ONNX's TensorProto.DataType so the
// importer can map them one to one.
enum class DType : int32_t {
  kUndefined = 0,
  kFloat32 = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kUInt16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,  // Recognised so errors can name it; no kernel supports it.
  kBool = 9,
  kFloat16 = 10,
  kFloat64 = 11,
  kUInt32 = 12,
  kUInt64 = 13,
  kBFloat16 = 16,
};

// Bytes per element (0 for kUndefined and kString).
size_t DTypeSize(DType dtype);
// Bytes of a dense tensor of `dims` (all >= 0; throws otherwise) and dtype.
size_t ByteSize(DType dtype, const std::vector<int64_t>& dims);
// "float32", "int64", ... as printed in reports and errors.
const char* DTypeName(DType dtype);
bool IsFloatingPoint(DType dtype);  // float16/bfloat16/float32/float64
bool IsInteger(DType dtype);        // signed and unsigned integers, not bool

// IEEE half and bfloat16 conversions (round to nearest even).
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

class Tensor {
 public:
  Tensor() = default;  // An undefined tensor: defined() is false.
  // Allocates uninitialised storage for dims.
  Tensor(DType dtype, std::vector<int64_t> dims);

  // Wraps memory owned by `owner` without copying. The bytes must stay valid
  // while any Tensor sharing `owner` lives.
  static Tensor Borrow(DType dtype, std::vector<int64_t> dims,
                       std::shared_ptr<const void> owner, const void* data);
  // A scalar (rank 0) or 1-D tensor built from values, for tests and folding.
  static Tensor Scalar(float value);
  static Tensor FromFloats(std::vector<int64_t> dims, const std::vector<float>& values);
  static Tensor FromInt64s(std::vector<int64_t> dims, const std::vector<int64_t>& values);

  bool defined() const { return dtype_ != DType::kUndefined; }
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& dims() const { return dims_; }
  int rank() const { return static_cast<int>(dims_.size()); }
  int64_t dim(int i) const { return dims_.at(static_cast<size_t>(i)); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }

  void* raw_data() { return data_; }
  const void* raw_data() const { return data_; }
  template <typename T>
  T* data() { return static_cast<T*>(data_); }
  template <typename T>
  const T* data() const { return static_cast<const T*>(data_); }

  // Same storage, new dims with the same element count.
  Tensor Reshaped(std::vector<int64_t> dims) const;
  // A deep copy with its own storage.
  Tensor Clone() const;
  // Element i converted to double / int64, whatever the dtype (for shape
  // tensors, scalars and comparisons in tests).
  double GetAsDouble(int64_t i) const;
  int64_t GetAsInt64(int64_t i) const;
  // All elements as int64 (shape and axes tensors).
  std::vector<int64_t> ToInt64Vector() const;
  // All elements converted to float (tests and reports).
  std::vector<float> ToFloatVector() const;
  // A copy converted to another dtype (numeric types only).
  Tensor CastTo(DType dtype) const;

  // "float32[2,3]".
  std::string TypeString() const;

 private:
  DType dtype_ = DType::kUndefined;
  std::vector<int64_t> dims_;
  std::shared_ptr<const void> storage_;
  void* data_ = nullptr;
};

// "[1,3,224,224]".
std::string DimsToString(const std::vector<int64_t>& dims);

}  // namespace kiln
