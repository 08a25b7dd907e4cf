// The operator registry: one OpDef per ONNX operator, holding everything kiln
// knows about it — the opset range it accepts, type/shape inference, a FLOP
// count, and one kernel per backend.
//
// Operator families register themselves in two halves that share an entry:
//   ops/<family>.cc   definitions: opset range, inference, FLOPs  (RegisterXxxOps)
//   cpu/<family>.cc   CPU reference kernels                         (RegisterXxxCpuKernels)
// RegisterAllOps() (ops/register_all.cc) calls every family once.
//
// Inference runs both at import time (symbolic shapes, constant inputs known)
// and at run time (all shapes concrete, every input value known), so kernels
// never compute their own output shapes: the executor allocates outputs from
// the inferred types before calling the kernel.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ir/graph.h"

namespace kiln {

// Default-domain opsets the importer accepts for a model.
constexpr int kMinSupportedOpset = 1;
constexpr int kMaxSupportedOpset = 21;
// An operator's own range starts here unless its definition handles the
// older forms (pre-7 broadcast attributes, is_test, consumed_inputs, ...) and
// lowers min_opset; a node below its op's range gets a clear error.
constexpr int kDefaultMinOpset = 7;

class InferContext {
 public:
  InferContext(const ir::Node& node, std::vector<const ir::TensorType*> input_types,
               std::vector<const Tensor*> input_values);

  const ir::Node& node() const { return node_; }
  const ir::Attributes& attrs() const { return node_.attrs; }
  int opset() const { return node_.opset; }

  int num_inputs() const { return static_cast<int>(input_types_.size()); }
  // False for an omitted optional input or an index past the end.
  bool has_input(int i) const;
  // Throws (naming the node) when the input is absent.
  const ir::TensorType& input_type(int i) const;
  // The input's value when known (a constant at import time; always at run
  // time), else nullptr.
  const Tensor* input_value(int i) const;

  int num_outputs() const { return static_cast<int>(node_.outputs.size()); }
  void set_output(int i, ir::TensorType type);
  void set_output(int i, DType dtype, ir::Shape shape) { set_output(i, {dtype, std::move(shape)}); }
  std::vector<ir::TensorType>& outputs() { return outputs_; }

 private:
  const ir::Node& node_;
  std::vector<const ir::TensorType*> input_types_;
  std::vector<const Tensor*> input_values_;
  std::vector<ir::TensorType> outputs_;
};

class KernelContext {
 public:
  KernelContext(const ir::Node& node, std::vector<const Tensor*> inputs,
                std::vector<Tensor*> outputs)
      : node_(node), inputs_(std::move(inputs)), outputs_(std::move(outputs)) {}

  const ir::Node& node() const { return node_; }
  const ir::Attributes& attrs() const { return node_.attrs; }
  int opset() const { return node_.opset; }
  int num_inputs() const { return static_cast<int>(inputs_.size()); }
  bool has_input(int i) const {
    return i >= 0 && i < num_inputs() && inputs_[static_cast<size_t>(i)] != nullptr;
  }
  // Throws when absent.
  const Tensor& input(int i) const;
  // nullptr when absent.
  const Tensor* optional_input(int i) const { return has_input(i) ? inputs_[static_cast<size_t>(i)] : nullptr; }
  int num_outputs() const { return static_cast<int>(outputs_.size()); }
  bool has_output(int i) const {
    return i >= 0 && i < num_outputs() && outputs_[static_cast<size_t>(i)] != nullptr;
  }
  // Preallocated with the inferred dtype and dims.
  Tensor& output(int i) const;

 private:
  const ir::Node& node_;
  std::vector<const Tensor*> inputs_;
  std::vector<Tensor*> outputs_;
};

using InferFn = std::function<void(InferContext&)>;
using CpuKernelFn = std::function<void(KernelContext&)>;
// Floating-point operations of one execution, given concrete input/output types.
using FlopsFn = std::function<double(const ir::Node&, const std::vector<ir::TensorType>& inputs,
                                     const std::vector<ir::TensorType>& outputs)>;

struct OpDef {
  std::string name;
  int min_opset = kDefaultMinOpset;  // Opset versions whose semantics kiln implements.
  int max_opset = kMaxSupportedOpset;
  InferFn infer;
  FlopsFn flops;          // Optional; absent counts as one op per output element.
  CpuKernelFn cpu_kernel;  // Set by cpu/<family>.cc.
};

class OpRegistry {
 public:
  // The process-wide registry, filled by RegisterAllOps() on first use.
  static const OpRegistry& Global();

  // Returns the entry for `name`, creating it on first use.
  OpDef& Define(const std::string& name);
  // nullptr when kiln does not know the operator.
  const OpDef* Find(const std::string& name) const;
  // Like Find, but throws a clear error for an unknown operator or an opset
  // outside the supported range.
  const OpDef& Lookup(const ir::Node& node) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, OpDef> defs_;
};

// Fills a registry with every family (ops/register_all.cc).
void RegisterAllOps(OpRegistry& registry);

// Runs the node's inference and returns the output types; errors name the node.
std::vector<ir::TensorType> InferNode(const ir::Node& node,
                                      const std::vector<const ir::TensorType*>& input_types,
                                      const std::vector<const Tensor*>& input_values);

// ---- Helpers shared by op definitions and kernels ----

// Maps a possibly negative axis into [0, rank); throws naming the node.
int NormalizeAxis(int64_t axis, int rank, const ir::Node& node);
// Numpy-style broadcast of two static shapes; throws on incompatible dims.
ir::Shape BroadcastShapes(const ir::Shape& a, const ir::Shape& b, const ir::Node& node);
// Broadcast of concrete dims.
std::vector<int64_t> BroadcastDims(const std::vector<int64_t>& a, const std::vector<int64_t>& b);
// Product of dims[begin, end).
int64_t Product(const std::vector<int64_t>& dims, size_t begin = 0, size_t end = SIZE_MAX);

}  // namespace kiln
