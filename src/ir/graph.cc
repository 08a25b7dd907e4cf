#include "ir/graph.h"

#include <algorithm>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace kiln::ir {

std::string Dim::ToString() const {
  if (is_known()) return std::to_string(value);
  return symbol.empty() ? "?" : symbol;
}

Shape ShapeFromDims(const std::vector<int64_t>& dims) {
  Shape s;
  s.reserve(dims.size());
  for (int64_t d : dims) s.push_back(Dim::Known(d));
  return s;
}

bool IsFullyKnown(const Shape& shape) {
  return std::all_of(shape.begin(), shape.end(), [](const Dim& d) { return d.is_known(); });
}

std::vector<int64_t> KnownDims(const Shape& shape) {
  std::vector<int64_t> dims;
  dims.reserve(shape.size());
  for (const Dim& d : shape) {
    KILN_CHECK(d.is_known(), "shape ", ShapeToString(shape), " is not fully known");
    dims.push_back(d.value);
  }
  return dims;
}

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += shape[i].ToString();
  }
  return s + "]";
}

std::string TensorType::ToString() const {
  return StrCat(DTypeName(dtype), shape ? ShapeToString(*shape) : std::string("[rank ?]"));
}

// ---- Attributes ----

const AttrValue& Attributes::Get(const std::string& name) const {
  auto it = values_.find(name);
  KILN_CHECK(it != values_.end(), "missing required attribute '", name, "'");
  return it->second;
}

namespace {
template <typename T>
const T& As(const AttrValue& v, const std::string& name, const char* want) {
  const T* p = std::get_if<T>(&v);
  KILN_CHECK(p != nullptr, "attribute '", name, "' is not of type ", want);
  return *p;
}
}  // namespace

int64_t Attributes::GetInt(const std::string& name) const {
  return As<int64_t>(Get(name), name, "int");
}
int64_t Attributes::GetInt(const std::string& name, int64_t def) const {
  return has(name) ? GetInt(name) : def;
}
float Attributes::GetFloat(const std::string& name) const {
  const AttrValue& v = Get(name);
  // Some exporters write integral floats as ints; accept both.
  if (const int64_t* i = std::get_if<int64_t>(&v)) return static_cast<float>(*i);
  return As<float>(v, name, "float");
}
float Attributes::GetFloat(const std::string& name, float def) const {
  return has(name) ? GetFloat(name) : def;
}
std::string Attributes::GetString(const std::string& name) const {
  return As<std::string>(Get(name), name, "string");
}
std::string Attributes::GetString(const std::string& name, const std::string& def) const {
  return has(name) ? GetString(name) : def;
}
std::vector<int64_t> Attributes::GetInts(const std::string& name) const {
  return As<std::vector<int64_t>>(Get(name), name, "ints");
}
std::vector<int64_t> Attributes::GetInts(const std::string& name,
                                         std::vector<int64_t> def) const {
  return has(name) ? GetInts(name) : def;
}
std::vector<float> Attributes::GetFloats(const std::string& name) const {
  return As<std::vector<float>>(Get(name), name, "floats");
}
std::vector<float> Attributes::GetFloats(const std::string& name, std::vector<float> def) const {
  return has(name) ? GetFloats(name) : def;
}
std::vector<std::string> Attributes::GetStrings(const std::string& name) const {
  return As<std::vector<std::string>>(Get(name), name, "strings");
}
const Tensor& Attributes::GetTensor(const std::string& name) const {
  return As<Tensor>(Get(name), name, "tensor");
}

// ---- Node ----

std::string Node::Describe() const { return StrCat("node '", name, "' (", op_type, ")"); }

// ---- Graph ----

std::string Graph::UniqueName(const std::string& base) const {
  std::string stem = base.empty() ? "v" : base;
  if (!values_by_name_.count(stem)) return stem;
  for (int i = 1;; ++i) {
    std::string candidate = StrCat(stem, "_", i);
    if (!values_by_name_.count(candidate)) return candidate;
  }
}

Value* Graph::AddValue(const std::string& name, TensorType type) {
  std::string unique = name.empty() ? UniqueName("v") : name;
  KILN_CHECK(!values_by_name_.count(unique), "duplicate value name '", unique, "'");
  auto v = std::make_unique<Value>();
  v->name = unique;
  v->type = std::move(type);
  Value* raw = v.get();
  values_.push_back(std::move(v));
  values_by_name_[unique] = raw;
  return raw;
}

Value* Graph::AddConstant(const std::string& name, Tensor tensor) {
  Value* v = AddValue(name, TensorType::Of(tensor));
  v->constant = std::move(tensor);
  return v;
}

Node* Graph::AddNode(const std::string& op_type, const std::string& name,
                     std::vector<Value*> inputs, std::vector<Value*> outputs) {
  auto n = std::make_unique<Node>();
  n->op_type = op_type;
  n->name = name;
  n->opset = opset_version;
  n->inputs = std::move(inputs);
  n->outputs = std::move(outputs);
  for (Value* out : n->outputs) {
    if (!out) continue;
    KILN_CHECK(out->producer == nullptr && !out->is_constant() && !out->is_graph_input,
               "value '", out->name, "' is produced twice (second producer: node '", name,
               "')");
    out->producer = n.get();
  }
  Node* raw = n.get();
  nodes_.push_back(std::move(n));
  return raw;
}

void Graph::RemoveNode(Node* node) {
  for (Value* out : node->outputs)
    if (out && out->producer == node) out->producer = nullptr;
  auto it = std::find_if(nodes_.begin(), nodes_.end(),
                         [node](const std::unique_ptr<Node>& n) { return n.get() == node; });
  KILN_CHECK(it != nodes_.end(), "RemoveNode: node not in graph");
  nodes_.erase(it);
}

void Graph::ReplaceAllUses(Value* from, Value* to) {
  for (auto& n : nodes_)
    for (Value*& in : n->inputs)
      if (in == from) in = to;
  for (Value*& out : outputs_)
    if (out == from) out = to;
}

void Graph::RemoveUnusedValues() {
  std::unordered_set<const Value*> used(inputs_.begin(), inputs_.end());
  used.insert(outputs_.begin(), outputs_.end());
  for (auto& n : nodes_) {
    used.insert(n->inputs.begin(), n->inputs.end());
    used.insert(n->outputs.begin(), n->outputs.end());
  }
  std::vector<std::unique_ptr<Value>> kept;
  for (auto& v : values_) {
    if (used.count(v.get())) {
      kept.push_back(std::move(v));
    } else {
      values_by_name_.erase(v->name);
    }
  }
  values_ = std::move(kept);
}

Value* Graph::FindValue(const std::string& name) const {
  auto it = values_by_name_.find(name);
  return it == values_by_name_.end() ? nullptr : it->second;
}

std::vector<Node*> Graph::Consumers(const Value* v) const {
  std::vector<Node*> out;
  for (auto& n : nodes_)
    if (std::find(n->inputs.begin(), n->inputs.end(), v) != n->inputs.end())
      out.push_back(n.get());
  return out;
}

bool Graph::IsGraphOutput(const Value* v) const {
  return std::find(outputs_.begin(), outputs_.end(), v) != outputs_.end();
}

void Graph::SortTopologically() {
  std::unordered_map<const Node*, int> pending;  // Inputs not yet produced.
  std::unordered_map<const Value*, std::vector<Node*>> waiting;
  std::vector<Node*> ready;
  for (auto& n : nodes_) {
    int count = 0;
    std::unordered_set<const Value*> seen;
    for (Value* in : n->inputs) {
      if (!in || in->producer == nullptr || !seen.insert(in).second) continue;
      ++count;
      waiting[in].push_back(n.get());
    }
    pending[n.get()] = count;
    if (count == 0) ready.push_back(n.get());
  }
  std::vector<Node*> order;
  order.reserve(nodes_.size());
  // Stable: process in original order where dependencies allow.
  std::unordered_map<const Node*, size_t> position;
  for (size_t i = 0; i < nodes_.size(); ++i) position[nodes_[i].get()] = i;
  auto by_position = [&](Node* a, Node* b) { return position[a] > position[b]; };
  std::make_heap(ready.begin(), ready.end(), by_position);
  while (!ready.empty()) {
    std::pop_heap(ready.begin(), ready.end(), by_position);
    Node* n = ready.back();
    ready.pop_back();
    order.push_back(n);
    for (Value* out : n->outputs) {
      if (!out) continue;
      for (Node* consumer : waiting[out]) {
        if (--pending[consumer] == 0) {
          ready.push_back(consumer);
          std::push_heap(ready.begin(), ready.end(), by_position);
        }
      }
    }
  }
  if (order.size() != nodes_.size()) {
    for (auto& n : nodes_)
      if (pending[n.get()] > 0) Fail("graph has a cycle through ", n->Describe());
  }
  std::vector<std::unique_ptr<Node>> sorted;
  sorted.reserve(nodes_.size());
  for (Node* n : order) {
    size_t i = position[n];
    sorted.push_back(std::move(nodes_[i]));
  }
  nodes_ = std::move(sorted);
}

void Graph::Validate() const {
  std::set<std::string> node_names;
  std::unordered_set<const Value*> available;
  for (const Value* in : inputs_) available.insert(in);
  for (const auto& v : values_)
    if (v->is_constant()) available.insert(v.get());
  for (const auto& n : nodes_) {
    KILN_CHECK(node_names.insert(n->name).second, "duplicate node name '", n->name, "'");
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      const Value* in = n->inputs[i];
      if (!in) continue;
      KILN_CHECK(available.count(in), n->Describe(), " input ", i, " '", in->name,
                 "' is not a graph input, an initializer or the output of an earlier node");
    }
    for (const Value* out : n->outputs)
      if (out) available.insert(out);
  }
  for (const Value* out : outputs_)
    KILN_CHECK(available.count(out), "graph output '", out->name, "' is never produced");
}

}  // namespace kiln::ir
