// FuseElementwise (see fuse_elementwise.h): groups fusible elementwise nodes
// (walking the graph from its outputs up, a producer joins the group of its
// consumers when they all lie in one group), translates each group into a
// register program and replaces it with one KilnElementwise node.
#include "builder/fuse_elementwise.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cuda/kernels/elementwise.h"
#include "ops/registry.h"

namespace kiln::builder {
namespace {

using gpu::ew::Op;

bool IsFusedFloat(DType d) {
  return d == DType::kFloat32 || d == DType::kFloat16 || d == DType::kBFloat16;
}

bool IsConcrete(const ir::Value* v) {
  return v && v->type.has_rank() && ir::IsFullyKnown(*v->type.shape);
}

std::vector<int64_t> DimsOf(const ir::Value* v) { return ir::KnownDims(*v->type.shape); }

// A constant of one element: becomes an immediate.
bool IsImmediate(const ir::Value* v) {
  return v && v->is_constant() && v->constant.numel() == 1 &&
         (IsFloatingPoint(v->constant.dtype()) || IsInteger(v->constant.dtype()));
}

float ImmediateValue(const ir::Value* v) { return static_cast<float>(v->constant.GetAsDouble(0)); }

// Unary ops that translate to one instruction.
const std::map<std::string, Op>& UnaryOps() {
  static const std::map<std::string, Op> ops = {
      {"Relu", Op::kRelu},           {"LeakyRelu", Op::kLeakyRelu},
      {"Sigmoid", Op::kSigmoid},     {"HardSigmoid", Op::kHardSigmoid},
      {"HardSwish", Op::kHardSwish}, {"Tanh", Op::kTanh},
      {"Elu", Op::kElu},             {"Selu", Op::kSelu},
      {"Celu", Op::kCelu},           {"Gelu", Op::kGeluErf},
      {"Erf", Op::kErf},             {"Exp", Op::kExp},
      {"Log", Op::kLog},             {"Sqrt", Op::kSqrt},
      {"Reciprocal", Op::kReciprocal}, {"Neg", Op::kNeg},
      {"Abs", Op::kAbs},             {"Sin", Op::kSin},
      {"Cos", Op::kCos},             {"Floor", Op::kFloor},
      {"Ceil", Op::kCeil},           {"Round", Op::kRound},
      {"Sign", Op::kSign},           {"Softplus", Op::kSoftplus},
      {"Softsign", Op::kSoftsign},   {"Mish", Op::kMish},
      {"ThresholdedRelu", Op::kThresholdedRelu}};
  return ops;
}

// Binary / variadic ops folded left to right.
const std::map<std::string, Op>& FoldOps() {
  static const std::map<std::string, Op> ops = {
      {"Add", Op::kAdd}, {"Sub", Op::kSub}, {"Mul", Op::kMul},  {"Div", Op::kDiv},
      {"Pow", Op::kPow}, {"Mod", Op::kFmod}, {"Max", Op::kMax}, {"Min", Op::kMin},
      {"Sum", Op::kAdd}, {"Mean", Op::kAdd}, {"PRelu", Op::kPRelu}};
  return ops;
}

bool IsVariadic(const std::string& op) {
  return op == "Sum" || op == "Mean" || op == "Max" || op == "Min";
}

// What a fusible node contributes to its group.
struct NodeInfo {
  std::vector<ir::Value*> operands;  // Non-null inputs that are not immediates.
  int extra_inputs = 0;              // Inputs the translation creates (BatchNorm).
  int instructions = 1;
  int immediates = 0;
};

// The float32 per-channel affine form of a BatchNormalization with constant
// parameters, computed as the CPU backend does.
struct BatchNormAffine {
  std::vector<float> factor, shift;
};

std::optional<BatchNormAffine> BatchNormParams(const ir::Node& node) {
  if (node.inputs.size() != 5) return std::nullopt;
  for (int i = 1; i <= 4; ++i) {
    const ir::Value* v = node.inputs[static_cast<size_t>(i)];
    if (!v || !v->is_constant() || v->constant.dtype() != DType::kFloat32 ||
        v->constant.rank() != 1)
      return std::nullopt;
  }
  const int64_t channels = node.inputs[1]->constant.numel();
  for (int i = 2; i <= 4; ++i)
    if (node.inputs[static_cast<size_t>(i)]->constant.numel() != channels) return std::nullopt;
  const double epsilon = node.attrs.GetFloat("epsilon", 1e-5f);
  const float* scale = node.inputs[1]->constant.data<float>();
  const float* bias = node.inputs[2]->constant.data<float>();
  const float* mean = node.inputs[3]->constant.data<float>();
  const float* var = node.inputs[4]->constant.data<float>();
  BatchNormAffine affine;
  for (int64_t c = 0; c < channels; ++c) {
    const float f =
        static_cast<float>(static_cast<double>(scale[c]) / std::sqrt(static_cast<double>(var[c]) + epsilon));
    affine.factor.push_back(f);
    affine.shift.push_back(bias[c] - mean[c] * f);
  }
  return affine;
}

// Whether `node` can join a fused group, and what it needs.
std::optional<NodeInfo> Analyze(const ir::Graph& graph, const ir::Node& node) {
  if (!(node.domain.empty() || node.domain == "ai.onnx")) return std::nullopt;
  if (node.outputs.empty() || !node.outputs[0]) return std::nullopt;
  for (size_t i = 1; i < node.outputs.size(); ++i)
    if (node.outputs[i]) return std::nullopt;
  const ir::Value* out = node.outputs[0];
  if (!IsConcrete(out) || !IsFusedFloat(out->type.dtype)) return std::nullopt;
  const DType dtype = out->type.dtype;
  const int out_rank = out->type.rank();
  if (out_rank > gpu::ew::kMaxRank) return std::nullopt;
  const std::string& op = node.op_type;
  const bool unary = UnaryOps().count(op) != 0;
  const bool fold = FoldOps().count(op) != 0;
  if (!unary && !fold && op != "Clip" && op != "BatchNormalization") return std::nullopt;
  (void)graph;

  NodeInfo info;
  // Operand checks shared by all ops: same dtype, broadcastable rank.
  auto add_operand = [&](ir::Value* v, bool any_numeric_immediate) -> bool {
    if (!v) return false;
    if (IsImmediate(v) && (any_numeric_immediate || v->constant.dtype() == dtype)) {
      ++info.immediates;
      return true;
    }
    if (!IsConcrete(v) || v->type.dtype != dtype || v->type.rank() > out_rank) return false;
    info.operands.push_back(v);
    return true;
  };

  if (unary) {
    if (node.inputs.size() != 1 || !add_operand(node.inputs[0], false)) return std::nullopt;
    if (op == "Gelu") {
      const std::string approximate = node.attrs.GetString("approximate", "none");
      if (approximate != "none" && approximate != "tanh") return std::nullopt;
    }
    if (op == "Celu" && node.attrs.GetFloat("alpha", 1.f) == 0.f) return std::nullopt;
    return info;
  }
  if (op == "Clip") {
    if (node.inputs.empty() || !add_operand(node.inputs[0], false)) return std::nullopt;
    if (node.opset < 11) return info;
    for (size_t i = 1; i < node.inputs.size() && i <= 2; ++i) {
      ir::Value* bound = node.inputs[i];
      if (!bound) continue;
      if (!IsConcrete(bound) || Product(DimsOf(bound)) != 1) return std::nullopt;
      if (!add_operand(bound, false)) return std::nullopt;
    }
    if (node.inputs.size() > 3) return std::nullopt;
    return info;
  }
  if (op == "BatchNormalization") {
    if (dtype != DType::kFloat32 || node.inputs.size() != 5) return std::nullopt;
    if (node.attrs.GetInt("training_mode", 0) != 0) return std::nullopt;
    if (node.opset < 7 && node.attrs.GetInt("is_test", 0) == 0) return std::nullopt;
    if (node.opset < 9 && node.attrs.GetInt("spatial", 1) == 0) return std::nullopt;
    if (out_rank < 2 || !add_operand(node.inputs[0], false)) return std::nullopt;
    std::optional<BatchNormAffine> affine = BatchNormParams(node);
    if (!affine || static_cast<int64_t>(affine->factor.size()) != DimsOf(out)[1])
      return std::nullopt;
    if (affine->factor.size() == 1) {
      info.immediates += 2;
    } else {
      info.extra_inputs = 2;
    }
    return info;
  }
  // Binary and variadic ops.
  if (node.opset < 7 && node.attrs.GetInt("broadcast", 0) != 0) return std::nullopt;
  if (op == "PRelu" && node.opset < 7) return std::nullopt;
  if (op == "Mod" && node.attrs.GetInt("fmod", 0) != 1) return std::nullopt;
  const size_t n = node.inputs.size();
  if (IsVariadic(op) ? (n < 1 || n > static_cast<size_t>(gpu::ew::kMaxInstructions)) : n != 2)
    return std::nullopt;
  for (size_t i = 0; i < n; ++i)
    if (!add_operand(node.inputs[i], op == "Pow" && i == 1)) return std::nullopt;
  info.instructions = std::max<int>(1, static_cast<int>(n) - 1) + (op == "Mean" ? 1 : 0);
  if (op == "Mean") ++info.immediates;
  return info;
}

// ---- Translation to a program ----

struct Operand {
  enum Kind { kInput, kValue, kImmediate } kind = kValue;
  int index = 0;  // Input index, micro-op index or immediate index.
};

struct MicroOp {
  Op op = Op::kIdentity;
  Operand a, b, c;
  int arity = 1;
  float p0 = 0, p1 = 0;
};

class Translator {
 public:
  explicit Translator(ir::Graph& graph) : graph_(graph) {}

  // Emits the micro-ops of one node (its inputs already translated).
  void EmitNode(const ir::Node& node) {
    const std::string& op = node.op_type;
    const ir::Attributes& attrs = node.attrs;
    int result = -1;
    if (auto it = UnaryOps().find(op); it != UnaryOps().end()) {
      Op code = it->second;
      float p0 = 0, p1 = 0;
      if (op == "LeakyRelu") p0 = attrs.GetFloat("alpha", 0.01f);
      if (op == "Elu" || op == "Celu" || op == "ThresholdedRelu") p0 = attrs.GetFloat("alpha", 1.f);
      if (op == "HardSigmoid") {
        p0 = attrs.GetFloat("alpha", 0.2f);
        p1 = attrs.GetFloat("beta", 0.5f);
      }
      if (op == "Selu") {
        p0 = attrs.GetFloat("alpha", 1.67326319217681884765625f);
        p1 = attrs.GetFloat("gamma", 1.05070102214813232421875f);
      }
      if (op == "Gelu" && attrs.GetString("approximate", "none") == "tanh") code = Op::kGeluTanh;
      result = Emit1(code, Use(node.inputs[0]), p0, p1);
    } else if (op == "Clip") {
      if (node.opset < 11) {
        const float inf = std::numeric_limits<float>::infinity();
        result = Emit1(Op::kClipConst, Use(node.inputs[0]),
                      attrs.has("min") ? attrs.GetFloat("min") : -inf,
                      attrs.has("max") ? attrs.GetFloat("max") : inf);
      } else {
        ir::Value* lo = node.has_input(1) ? node.inputs[1] : nullptr;
        ir::Value* hi = node.has_input(2) ? node.inputs[2] : nullptr;
        const Operand x = Use(node.inputs[0]);
        if (lo && hi) result = Emit3(Op::kClip, x, Use(lo), Use(hi));
        else if (lo) result = Emit2(Op::kClipLow, x, Use(lo));
        else if (hi) result = Emit2(Op::kClipHigh, x, Use(hi));
        else result = Emit1(Op::kIdentity, x);
      }
    } else if (op == "BatchNormalization") {
      BatchNormAffine affine = *BatchNormParams(node);
      const int64_t channels = static_cast<int64_t>(affine.factor.size());
      std::vector<int64_t> dims(static_cast<size_t>(node.outputs[0]->type.rank() - 1), 1);
      dims[0] = channels;
      const std::string stem = node.name.empty() ? "bn" : node.name;
      Tensor factor = Tensor::FromFloats({channels}, affine.factor).Reshaped(dims);
      Tensor shift = Tensor::FromFloats({channels}, affine.shift).Reshaped(dims);
      ir::Value* fv = graph_.AddConstant(graph_.UniqueName(stem + "_ew_factor"), factor);
      ir::Value* sv = graph_.AddConstant(graph_.UniqueName(stem + "_ew_shift"), shift);
      result = Emit3(Op::kMulAdd, Use(node.inputs[0]), Use(fv), Use(sv));
    } else {
      const Op code = FoldOps().at(op);
      Operand acc = Use(node.inputs[0]);
      if (node.inputs.size() == 1) {
        result = Emit1(Op::kIdentity, acc);
        acc = Value(result);
      }
      for (size_t i = 1; i < node.inputs.size(); ++i) {
        result = Emit2(code, acc, Use(node.inputs[i]));
        acc = Value(result);
      }
      if (op == "Mean") {
        const float scale = 1.f / static_cast<float>(node.inputs.size());
        result = Emit2(Op::kMul, acc, Immediate(scale));
      }
    }
    values_[node.outputs[0]] = result;
  }

  // Register allocation and encoding. Returns false when the program does
  // not fit the kernel's limits.
  bool Encode(const ir::Value* output, ir::Attributes* attrs) const {
    const int num_inputs = static_cast<int>(inputs_.size());
    const int count = static_cast<int>(ops_.size());
    if (num_inputs > gpu::ew::kMaxInputs || count > gpu::ew::kMaxInstructions ||
        static_cast<int>(immediates_.size()) > gpu::ew::kMaxImmediates || count == 0)
      return false;
    const int out_op = values_.at(output);
    // Last reader of every input / value (the output lives to the end).
    std::vector<int> input_last(static_cast<size_t>(num_inputs), -1);
    std::vector<int> value_last(static_cast<size_t>(count), -1);
    auto note = [&](const Operand& o, int at) {
      if (o.kind == Operand::kInput) input_last[static_cast<size_t>(o.index)] = at;
      if (o.kind == Operand::kValue) value_last[static_cast<size_t>(o.index)] = at;
    };
    for (int i = 0; i < count; ++i) {
      const MicroOp& m = ops_[static_cast<size_t>(i)];
      note(m.a, i);
      if (m.arity >= 2) note(m.b, i);
      if (m.arity >= 3) note(m.c, i);
    }
    value_last[static_cast<size_t>(out_op)] = count;

    std::vector<int> input_reg(static_cast<size_t>(num_inputs));
    std::vector<int> value_reg(static_cast<size_t>(count), -1);
    std::set<int> free_regs;
    for (int r = 0; r < gpu::ew::kMaxRegisters; ++r) {
      if (r < num_inputs) input_reg[static_cast<size_t>(r)] = r;
      else free_regs.insert(r);
    }
    std::vector<int64_t> program;
    std::vector<float> params;
    auto encode = [&](const Operand& o) -> int64_t {
      switch (o.kind) {
        case Operand::kInput: return input_reg[static_cast<size_t>(o.index)];
        case Operand::kValue: return value_reg[static_cast<size_t>(o.index)];
        case Operand::kImmediate: return -1 - o.index;
      }
      return 0;
    };
    for (int i = 0; i < count; ++i) {
      const MicroOp& m = ops_[static_cast<size_t>(i)];
      const int64_t a = encode(m.a);
      const int64_t b = m.arity >= 2 ? encode(m.b) : 0;
      const int64_t c = m.arity >= 3 ? encode(m.c) : 0;
      // Operands whose last use is this instruction free their registers
      // (the kernel reads every operand before writing dst).
      std::vector<const Operand*> used = {&m.a};
      if (m.arity >= 2) used.push_back(&m.b);
      if (m.arity >= 3) used.push_back(&m.c);
      for (const Operand* o : used) {
        if (o->kind == Operand::kInput && input_last[static_cast<size_t>(o->index)] == i)
          free_regs.insert(input_reg[static_cast<size_t>(o->index)]);
        if (o->kind == Operand::kValue && value_last[static_cast<size_t>(o->index)] == i)
          free_regs.insert(value_reg[static_cast<size_t>(o->index)]);
      }
      if (free_regs.empty()) return false;
      const int dst = *free_regs.begin();
      free_regs.erase(free_regs.begin());
      value_reg[static_cast<size_t>(i)] = dst;
      if (value_last[static_cast<size_t>(i)] < 0) free_regs.insert(dst);  // Never read.
      program.insert(program.end(), {static_cast<int64_t>(m.op), dst, a, b, c});
      params.push_back(m.p0);
      params.push_back(m.p1);
    }
    attrs->set("program", program);
    attrs->set("params", params);
    attrs->set("immediates", immediates_);
    attrs->set("output", static_cast<int64_t>(value_reg[static_cast<size_t>(out_op)]));
    return true;
  }

  const std::vector<ir::Value*>& inputs() const { return inputs_; }

 private:
  Operand Use(ir::Value* v) {
    if (auto it = values_.find(v); it != values_.end()) return Value(it->second);
    if (IsImmediate(v)) return Immediate(ImmediateValue(v));
    for (size_t i = 0; i < inputs_.size(); ++i)
      if (inputs_[i] == v) return Operand{Operand::kInput, static_cast<int>(i)};
    inputs_.push_back(v);
    return Operand{Operand::kInput, static_cast<int>(inputs_.size()) - 1};
  }

  static Operand Value(int index) { return Operand{Operand::kValue, index}; }

  Operand Immediate(float value) {
    for (size_t i = 0; i < immediates_.size(); ++i)
      if (std::memcmp(&immediates_[i], &value, sizeof(float)) == 0)
        return Operand{Operand::kImmediate, static_cast<int>(i)};
    immediates_.push_back(value);
    return Operand{Operand::kImmediate, static_cast<int>(immediates_.size()) - 1};
  }

  int Emit(Op op, int arity, Operand a, Operand b, Operand c, float p0, float p1) {
    MicroOp m;
    m.op = op;
    m.arity = arity;
    m.a = a;
    m.b = b;
    m.c = c;
    m.p0 = p0;
    m.p1 = p1;
    ops_.push_back(m);
    return static_cast<int>(ops_.size()) - 1;
  }
  int Emit1(Op op, Operand a, float p0 = 0, float p1 = 0) { return Emit(op, 1, a, {}, {}, p0, p1); }
  int Emit2(Op op, Operand a, Operand b) { return Emit(op, 2, a, b, {}, 0, 0); }
  int Emit3(Op op, Operand a, Operand b, Operand c) { return Emit(op, 3, a, b, c, 0, 0); }

  ir::Graph& graph_;
  std::vector<MicroOp> ops_;
  std::vector<ir::Value*> inputs_;
  std::vector<float> immediates_;
  std::unordered_map<const ir::Value*, int> values_;  // Node output -> micro-op.
};

struct Group {
  std::vector<ir::Node*> members;  // In reverse topological order while built.
};

// Whether a group of `members` stays within the kernel's limits.
bool WithinLimits(const std::vector<ir::Node*>& members,
                  const std::unordered_map<const ir::Node*, NodeInfo>& infos) {
  std::unordered_set<const ir::Value*> produced;
  for (const ir::Node* m : members) produced.insert(m->outputs[0]);
  std::unordered_set<const ir::Value*> external;
  int extra = 0, instructions = 0, immediates = 0;
  for (const ir::Node* m : members) {
    const NodeInfo& info = infos.at(m);
    for (const ir::Value* v : info.operands)
      if (!produced.count(v)) external.insert(v);
    extra += info.extra_inputs;
    instructions += info.instructions;
    immediates += info.immediates;
  }
  return static_cast<int>(external.size()) + extra <= gpu::ew::kMaxInputs &&
         instructions <= gpu::ew::kMaxInstructions && immediates <= gpu::ew::kMaxImmediates;
}

}  // namespace

int FuseElementwise(ir::Graph& graph) {
  std::vector<ir::Node*> nodes;
  for (const auto& n : graph.nodes()) nodes.push_back(n.get());
  std::unordered_map<const ir::Value*, std::vector<ir::Node*>> consumers;
  for (ir::Node* n : nodes)
    for (const ir::Value* v : n->inputs)
      if (v) {
        std::vector<ir::Node*>& list = consumers[v];
        if (list.empty() || list.back() != n) list.push_back(n);
      }
  std::unordered_map<const ir::Node*, NodeInfo> infos;
  for (ir::Node* n : nodes)
    if (std::optional<NodeInfo> info = Analyze(graph, *n)) infos.emplace(n, std::move(*info));

  // Group from the outputs up.
  std::vector<Group> groups;
  std::unordered_map<const ir::Node*, int> group_of;
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {
    ir::Node* node = *it;
    if (!infos.count(node)) continue;
    const ir::Value* out = node->outputs[0];
    int target = -1;
    auto users = consumers.find(out);
    if (!graph.IsGraphOutput(out) && users != consumers.end() && !users->second.empty()) {
      for (const ir::Node* user : users->second) {
        auto g = group_of.find(user);
        const ir::Value* user_out = user->outputs[0];
        if (g == group_of.end() || (target >= 0 && g->second != target) ||
            user_out->type.dtype != out->type.dtype || DimsOf(user_out) != DimsOf(out)) {
          target = -1;
          break;
        }
        target = g->second;
      }
    }
    if (target >= 0) {
      std::vector<ir::Node*> members = groups[static_cast<size_t>(target)].members;
      members.push_back(node);
      if (!WithinLimits(members, infos)) target = -1;
    }
    if (target < 0) {
      target = static_cast<int>(groups.size());
      groups.emplace_back();
    }
    groups[static_cast<size_t>(target)].members.push_back(node);
    group_of[node] = target;
  }

  int removed = 0;
  bool attempted = false;
  for (Group& group : groups) {
    if (group.members.size() < 2) continue;
    attempted = true;
    std::vector<ir::Node*> members(group.members.rbegin(), group.members.rend());  // Topological.
    ir::Node* sink = members.back();
    Translator translator(graph);
    for (const ir::Node* m : members) translator.EmitNode(*m);
    ir::Value* out = sink->outputs[0];
    ir::Attributes attrs;
    if (!translator.Encode(out, &attrs)) continue;
    const std::string name = sink->name;
    const int opset = sink->opset;
    std::vector<ir::Value*> inputs = translator.inputs();
    for (ir::Node* m : members) graph.RemoveNode(m);
    ir::Node* fused = graph.AddNode("KilnElementwise", name, inputs, {out});
    fused->opset = opset;
    fused->attrs = std::move(attrs);
    removed += static_cast<int>(members.size()) - 1;
  }
  if (removed > 0) graph.SortTopologically();
  if (attempted) graph.RemoveUnusedValues();
  return removed;
}

}  // namespace kiln::builder
