// The graph IR every stage of kiln works on.
//
// A Graph owns Values (typed edges) and Nodes (operator applications). A Value
// has a dtype and a possibly symbolic shape; a constant Value (an ONNX
// initializer or a folded result) also carries its Tensor. Nodes refer to
// Values by pointer; a missing optional input is a nullptr entry. Graph keeps
// its nodes in topological order (the importer checks it; passes that insert
// nodes call SortTopologically()).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "kiln/error.h"
#include "kiln/tensor.h"

namespace kiln::ir {

// One dimension: a known size, a named symbolic size ("batch"), or unknown.
struct Dim {
  int64_t value = -1;  // >= 0 when known.
  std::string symbol;  // Set for named dynamic dims when value < 0.

  static Dim Known(int64_t v) { return Dim{v, {}}; }
  static Dim Symbol(std::string s) { return Dim{-1, std::move(s)}; }
  static Dim Unknown() { return Dim{}; }
  bool is_known() const { return value >= 0; }
  bool operator==(const Dim& o) const { return value == o.value && symbol == o.symbol; }
  std::string ToString() const;  // "32", "batch" or "?"
};

using Shape = std::vector<Dim>;

Shape ShapeFromDims(const std::vector<int64_t>& dims);
bool IsFullyKnown(const Shape& shape);
// Requires IsFullyKnown(shape).
std::vector<int64_t> KnownDims(const Shape& shape);
std::string ShapeToString(const Shape& shape);  // "[batch,3,224,224]"

// A value's static type: dtype plus shape, where the rank may be unknown.
struct TensorType {
  DType dtype = DType::kUndefined;
  std::optional<Shape> shape;  // nullopt: rank unknown.

  static TensorType Of(const Tensor& t) { return {t.dtype(), ShapeFromDims(t.dims())}; }
  bool has_rank() const { return shape.has_value(); }
  int rank() const { return static_cast<int>(shape->size()); }
  std::string ToString() const;  // "float32[batch,1000]"
};

// Attribute values, mirroring ONNX AttributeProto (graphs are rejected).
using AttrValue = std::variant<int64_t, float, std::string, Tensor, std::vector<int64_t>,
                               std::vector<float>, std::vector<std::string>>;

class Attributes {
 public:
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  void set(const std::string& name, AttrValue v) { values_[name] = std::move(v); }
  void erase(const std::string& name) { values_.erase(name); }
  const std::map<std::string, AttrValue>& all() const { return values_; }

  // Typed getters; the one-argument forms throw when the attribute is
  // missing, the two-argument forms return the default. All throw on a type
  // mismatch, naming the attribute.
  int64_t GetInt(const std::string& name) const;
  int64_t GetInt(const std::string& name, int64_t def) const;
  float GetFloat(const std::string& name) const;
  float GetFloat(const std::string& name, float def) const;
  std::string GetString(const std::string& name) const;
  std::string GetString(const std::string& name, const std::string& def) const;
  std::vector<int64_t> GetInts(const std::string& name) const;
  std::vector<int64_t> GetInts(const std::string& name, std::vector<int64_t> def) const;
  std::vector<float> GetFloats(const std::string& name) const;
  std::vector<float> GetFloats(const std::string& name, std::vector<float> def) const;
  std::vector<std::string> GetStrings(const std::string& name) const;
  const Tensor& GetTensor(const std::string& name) const;

 private:
  const AttrValue& Get(const std::string& name) const;
  std::map<std::string, AttrValue> values_;
};

struct Node;

struct Value {
  std::string name;
  TensorType type;
  Node* producer = nullptr;  // nullptr for graph inputs and constants.
  Tensor constant;           // defined() for initializers and folded values.
  bool is_graph_input = false;

  bool is_constant() const { return constant.defined(); }
};

struct Node {
  std::string name;     // Unique within the graph (the importer names unnamed nodes).
  std::string op_type;  // "Conv"
  std::string domain;   // "" for the default ONNX domain.
  int opset = 0;        // The model's opset version for this node's domain.
  std::vector<Value*> inputs;   // nullptr marks an omitted optional input.
  std::vector<Value*> outputs;  // nullptr marks an omitted optional output.
  Attributes attrs;

  bool has_input(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
  // "node 'conv1' (Conv)" for error messages.
  std::string Describe() const;
};

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // Creates a value; the name must be unique (empty names get a fresh one).
  Value* AddValue(const std::string& name, TensorType type = {});
  Value* AddConstant(const std::string& name, Tensor tensor);
  Node* AddNode(const std::string& op_type, const std::string& name,
                std::vector<Value*> inputs, std::vector<Value*> outputs);
  // Removes the node; its output values stay (they lose their producer).
  void RemoveNode(Node* node);
  // Makes every consumer of `from` (and the graph outputs) use `to` instead.
  void ReplaceAllUses(Value* from, Value* to);
  // Drops values that no node, graph input or graph output refers to.
  void RemoveUnusedValues();

  Value* FindValue(const std::string& name) const;
  std::vector<Node*> Consumers(const Value* v) const;
  bool IsGraphOutput(const Value* v) const;
  std::string UniqueName(const std::string& base) const;

  const std::vector<std::unique_ptr<Node>>& nodes() const { return nodes_; }
  const std::vector<std::unique_ptr<Value>>& values() const { return values_; }
  std::vector<Value*>& inputs() { return inputs_; }
  const std::vector<Value*>& inputs() const { return inputs_; }
  std::vector<Value*>& outputs() { return outputs_; }
  const std::vector<Value*>& outputs() const { return outputs_; }

  // Reorders nodes topologically; throws naming a node on a cycle or on an
  // input that nothing produces.
  void SortTopologically();
  // Structural checks: unique names, every non-constant, non-input value has
  // a producer, graph outputs exist. Throws kiln::Error naming the problem.
  void Validate() const;

  int opset_version = 0;  // Default-domain opset of the model.
  std::string name;

 private:
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<Value>> values_;
  std::map<std::string, Value*> values_by_name_;
  std::vector<Value*> inputs_;
  std::vector<Value*> outputs_;
};

}  // namespace kiln::ir
