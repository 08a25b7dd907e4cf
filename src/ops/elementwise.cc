// Elementwise operator definitions: activations, unary math, numpy-broadcast
// binary/variadic arithmetic, comparisons and logic, Where, Cast/CastLike and
// linear (de)quantization. Every output has the (broadcast) shape of its inputs,
// so inference is mostly dtype checks plus a broadcast of the input shapes.
//
// Ops that exist since opset 1 and whose old versions differ only in legacy
// attributes kiln can ignore (consumed_inputs) or emulate (broadcast/axis of
// the pre-7 binary ops) accept opsets from 1, so old exporters' models load.
#include <algorithm>
#include <string>
#include <vector>

#include "ops/registry.h"

namespace kiln {
namespace {

// Which element types an op accepts; checked in inference so both import and
// run time reject a bad model with a message naming the dtype.
enum class Types {
  kFloat,    // float16, bfloat16, float32, float64
  kNumeric,  // floats and all integers
  kSignedNumeric,
  kInteger,  // integers only
  kBool,
  kNumericOrBool,
  kAny,  // any dtype kiln can store (Where's branches)
};

bool IsSignedInteger(DType d) {
  return d == DType::kInt8 || d == DType::kInt16 || d == DType::kInt32 || d == DType::kInt64;
}

bool Accepts(Types types, DType d) {
  switch (types) {
    case Types::kFloat: return IsFloatingPoint(d);
    case Types::kNumeric: return IsFloatingPoint(d) || IsInteger(d);
    case Types::kSignedNumeric: return IsFloatingPoint(d) || IsSignedInteger(d);
    case Types::kInteger: return IsInteger(d);
    case Types::kBool: return d == DType::kBool;
    case Types::kNumericOrBool: return IsFloatingPoint(d) || IsInteger(d) || d == DType::kBool;
    case Types::kAny: return d != DType::kString && d != DType::kUndefined;
  }
  return false;
}

const char* TypesName(Types types) {
  switch (types) {
    case Types::kFloat: return "a floating-point type";
    case Types::kNumeric: return "a numeric type";
    case Types::kSignedNumeric: return "a floating-point or signed integer type";
    case Types::kInteger: return "an integer type";
    case Types::kBool: return "bool";
    case Types::kNumericOrBool: return "a numeric type or bool";
    case Types::kAny: return "a numeric type or bool";
  }
  return "?";
}

// Checks input i's dtype; an undefined dtype (unknown at import) passes.
void CheckType(const InferContext& ctx, int i, Types types) {
  DType d = ctx.input_type(i).dtype;
  KILN_CHECK(d == DType::kUndefined || Accepts(types, d), ctx.node().op_type, " input ", i,
             " must be ", TypesName(types), ", got ", DTypeName(d));
}

void CheckSameType(const InferContext& ctx, int i, int j) {
  DType a = ctx.input_type(i).dtype;
  DType b = ctx.input_type(j).dtype;
  KILN_CHECK(a == DType::kUndefined || b == DType::kUndefined || a == b, ctx.node().op_type,
             " inputs ", i, " and ", j, " must have the same dtype, got ", DTypeName(a), " and ",
             DTypeName(b));
}

// Before opset 7, binary ops broadcast only with attribute broadcast=1, and
// then B is aligned inside A's shape (the result always has A's shape).
bool UsesLegacyBroadcast(const InferContext& ctx) {
  return ctx.opset() < 7 && ctx.attrs().GetInt("broadcast", 0) != 0;
}

// Numpy broadcast of the given inputs' shapes (unknown rank if any is unknown).
std::optional<ir::Shape> BroadcastInputs(const InferContext& ctx, const std::vector<int>& inputs) {
  ir::Shape shape;
  for (int i : inputs) {
    const ir::TensorType& t = ctx.input_type(i);
    if (!t.has_rank()) return std::nullopt;
    shape = BroadcastShapes(shape, *t.shape, ctx.node());
  }
  return shape;
}

void SetSameAsInput(InferContext& ctx, int i, DType dtype) {
  ctx.set_output(0, ir::TensorType{dtype, ctx.input_type(i).shape});
}

// ---- Inference functions ----

InferFn Unary(Types types, bool bool_output = false) {
  return [types, bool_output](InferContext& ctx) {
    CheckType(ctx, 0, types);
    const ir::TensorType& x = ctx.input_type(0);
    SetSameAsInput(ctx, 0, bool_output ? DType::kBool : x.dtype);
  };
}

// Binary ops with numpy broadcasting (legacy broadcast before opset 7). Both
// inputs share a dtype unless `mixed_types` (Pow).
InferFn Binary(Types types, bool bool_output = false, bool mixed_types = false) {
  return [types, bool_output, mixed_types](InferContext& ctx) {
    KILN_CHECK(ctx.num_inputs() == 2 && ctx.has_input(0) && ctx.has_input(1), ctx.node().op_type,
               " takes 2 inputs, got ", ctx.num_inputs());
    CheckType(ctx, 0, types);
    CheckType(ctx, 1, types);
    if (!mixed_types) CheckSameType(ctx, 0, 1);
    DType out_type = bool_output ? DType::kBool : ctx.input_type(0).dtype;
    if (UsesLegacyBroadcast(ctx)) {
      SetSameAsInput(ctx, 0, out_type);
      return;
    }
    ctx.set_output(0, ir::TensorType{out_type, BroadcastInputs(ctx, {0, 1})});
  };
}

// Sum/Max/Min/Mean: one or more inputs of one dtype, numpy broadcast.
InferFn Variadic(Types types) {
  return [types](InferContext& ctx) {
    KILN_CHECK(ctx.num_inputs() >= 1, ctx.node().op_type, " needs at least one input");
    std::vector<int> all;
    for (int i = 0; i < ctx.num_inputs(); ++i) {
      KILN_CHECK(ctx.has_input(i), ctx.node().op_type, " input ", i, " is missing");
      CheckType(ctx, i, types);
      CheckSameType(ctx, 0, i);
      all.push_back(i);
    }
    ctx.set_output(0, ir::TensorType{ctx.input_type(0).dtype, BroadcastInputs(ctx, all)});
  };
}

void InferPRelu(InferContext& ctx) {
  CheckType(ctx, 0, Types::kNumeric);
  CheckSameType(ctx, 0, 1);
  const ir::TensorType& x = ctx.input_type(0);
  const ir::TensorType& slope = ctx.input_type(1);
  // Slope broadcasts unidirectionally to X (opset < 7: per channel along axis 1).
  if (ctx.opset() >= 7 && x.has_rank() && slope.has_rank()) {
    ir::Shape out = BroadcastShapes(*x.shape, *slope.shape, ctx.node());
    KILN_CHECK(out.size() == x.shape->size(), "PRelu slope ", ir::ShapeToString(*slope.shape),
               " does not broadcast to X ", ir::ShapeToString(*x.shape));
    for (size_t i = 0; i < out.size(); ++i) {
      const ir::Dim& xd = (*x.shape)[i];
      KILN_CHECK(!(xd.is_known() && out[i].is_known()) || xd.value == out[i].value, "PRelu slope ",
                 ir::ShapeToString(*slope.shape), " does not broadcast to X ",
                 ir::ShapeToString(*x.shape));
    }
  }
  SetSameAsInput(ctx, 0, x.dtype);
}

void InferClip(InferContext& ctx) {
  CheckType(ctx, 0, Types::kNumeric);
  for (int i = 1; i <= 2; ++i) {
    if (!ctx.has_input(i)) continue;
    KILN_CHECK(ctx.opset() >= 11, "Clip takes min/max as inputs only from opset 11");
    CheckSameType(ctx, 0, i);
    const ir::TensorType& bound = ctx.input_type(i);
    if (bound.has_rank()) {
      int64_t n = 1;
      bool known = true;
      for (const ir::Dim& d : *bound.shape) {
        known &= d.is_known();
        if (d.is_known()) n *= d.value;
      }
      KILN_CHECK(!known || n == 1, "Clip ", i == 1 ? "min" : "max", " must be a scalar, got ",
                 bound.ToString());
    }
  }
  SetSameAsInput(ctx, 0, ctx.input_type(0).dtype);
}

void InferWhere(InferContext& ctx) {
  KILN_CHECK(ctx.num_inputs() == 3, "Where takes 3 inputs, got ", ctx.num_inputs());
  CheckType(ctx, 0, Types::kBool);
  CheckType(ctx, 1, Types::kAny);
  CheckSameType(ctx, 1, 2);
  ctx.set_output(0, ir::TensorType{ctx.input_type(1).dtype, BroadcastInputs(ctx, {0, 1, 2})});
}

void CheckCastable(DType from, DType to) {
  KILN_CHECK(from != DType::kString && to != DType::kString,
             "casts from or to string are not supported (", DTypeName(from), " -> ", DTypeName(to),
             ")");
  KILN_CHECK(to == DType::kUndefined || DTypeSize(to) > 0, "cannot cast to dtype ", DTypeName(to));
}

bool IsKnownDType(int64_t v) {
  switch (static_cast<DType>(v)) {
    case DType::kFloat32:
    case DType::kUInt8:
    case DType::kInt8:
    case DType::kUInt16:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64:
    case DType::kString:
    case DType::kBool:
    case DType::kFloat16:
    case DType::kFloat64:
    case DType::kUInt32:
    case DType::kUInt64:
    case DType::kBFloat16: return true;
    default: return false;
  }
}

void InferCast(InferContext& ctx) {
  int64_t to = ctx.attrs().GetInt("to");
  KILN_CHECK(IsKnownDType(to), "Cast to ONNX data type ", to,
             " is not supported (float8, int4 and complex types are not implemented)");
  CheckCastable(ctx.input_type(0).dtype, static_cast<DType>(to));
  SetSameAsInput(ctx, 0, static_cast<DType>(to));
}

void InferCastLike(InferContext& ctx) {
  DType to = ctx.input_type(1).dtype;
  CheckCastable(ctx.input_type(0).dtype, to);
  SetSameAsInput(ctx, 0, to);
}

// Checks the scale / zero point of (De)QuantizeLinear: a scalar (or one
// element) for per-tensor, a 1-D tensor of X's `axis` size for per-axis.
void CheckQuantParams(const InferContext& ctx) {
  KILN_CHECK(ctx.attrs().GetInt("block_size", 0) == 0, ctx.node().op_type,
             ": blocked quantization (block_size) is not supported");
  const ir::TensorType& x = ctx.input_type(0);
  const ir::TensorType& scale = ctx.input_type(1);
  if (ctx.has_input(2)) {
    const ir::TensorType& zp = ctx.input_type(2);
    if (zp.has_rank() && scale.has_rank()) {
      KILN_CHECK(zp.rank() == scale.rank(), ctx.node().op_type,
                 ": zero point and scale must have the same shape, got ", zp.ToString(), " and ",
                 scale.ToString());
    }
  }
  if (!scale.has_rank()) return;
  KILN_CHECK(scale.rank() <= 1, ctx.node().op_type,
             ": scale must be a scalar or 1-D (blocked quantization is not supported), got ",
             scale.ToString());
  if (scale.rank() == 1 && x.has_rank()) {
    const ir::Dim& n = (*scale.shape)[0];
    if (n.is_known() && n.value == 1) return;  // One element: per-tensor.
    KILN_CHECK(ctx.opset() >= 13, ctx.node().op_type,
               ": per-axis scales need opset 13 or later (got opset ", ctx.opset(), ")");
    int axis = NormalizeAxis(ctx.attrs().GetInt("axis", 1), x.rank(), ctx.node());
    const ir::Dim& xd = (*x.shape)[static_cast<size_t>(axis)];
    KILN_CHECK(!n.is_known() || !xd.is_known() || n.value == xd.value, ctx.node().op_type,
               ": per-axis scale has ", n.value, " elements but X has ", xd.value, " along axis ",
               axis);
  }
}

bool IsQuantizedType(DType d) {
  return d == DType::kInt8 || d == DType::kUInt8 || d == DType::kInt16 || d == DType::kUInt16;
}

void InferQuantizeLinear(InferContext& ctx) {
  CheckType(ctx, 0, Types::kFloat);
  CheckType(ctx, 1, Types::kFloat);
  CheckQuantParams(ctx);
  DType out = DType::kUInt8;
  if (ctx.has_input(2)) {
    out = ctx.input_type(2).dtype;
  } else if (int64_t dt = ctx.attrs().GetInt("output_dtype", 0); dt != 0) {
    KILN_CHECK(IsKnownDType(dt), "QuantizeLinear output_dtype ", dt, " is not supported");
    out = static_cast<DType>(dt);
  }
  KILN_CHECK(out == DType::kUndefined || IsQuantizedType(out), "QuantizeLinear to ", DTypeName(out),
             " is not supported (kiln implements int8, uint8, int16 and uint16)");
  SetSameAsInput(ctx, 0, out);
}

void InferDequantizeLinear(InferContext& ctx) {
  DType x = ctx.input_type(0).dtype;
  KILN_CHECK(x == DType::kUndefined || IsQuantizedType(x) || x == DType::kInt32,
             "DequantizeLinear of ", DTypeName(x),
             " is not supported (kiln implements int8, uint8, int16, uint16 and int32)");
  CheckType(ctx, 1, Types::kFloat);
  if (ctx.has_input(2)) CheckSameType(ctx, 0, 2);
  CheckQuantParams(ctx);
  DType out = ctx.input_type(1).dtype;
  if (int64_t dt = ctx.attrs().GetInt("output_dtype", 0); dt != 0) {
    KILN_CHECK(IsKnownDType(dt) && IsFloatingPoint(static_cast<DType>(dt)),
               "DequantizeLinear output_dtype ", dt, " is not supported");
    out = static_cast<DType>(dt);
  }
  SetSameAsInput(ctx, 0, out);
}

void InferMod(InferContext& ctx) {
  Binary(Types::kNumeric)(ctx);
  DType d = ctx.input_type(0).dtype;
  KILN_CHECK(!IsFloatingPoint(d) || ctx.attrs().GetInt("fmod", 0) == 1,
             "Mod of floating-point inputs requires attribute fmod=1 (got ", DTypeName(d), ")");
}

void InferGelu(InferContext& ctx) {
  std::string approximate = ctx.attrs().GetString("approximate", "none");
  KILN_CHECK(approximate == "none" || approximate == "tanh",
             "Gelu approximate must be \"none\" or \"tanh\", got \"", approximate, "\"");
  Unary(Types::kFloat)(ctx);
}

void Define(OpRegistry& registry, const char* name, int min_opset, InferFn infer) {
  OpDef& def = registry.Define(name);
  def.min_opset = min_opset;
  def.infer = std::move(infer);
}

}  // namespace

void RegisterElementwiseOps(OpRegistry& registry) {
  // Unary floating-point math and activations.
  for (const char* op : {"Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil",
                         "Elu", "Selu", "LeakyRelu", "HardSigmoid", "Softplus", "Softsign"})
    Define(registry, op, 1, Unary(Types::kFloat));
  Define(registry, "Sin", 7, Unary(Types::kFloat));
  Define(registry, "Cos", 7, Unary(Types::kFloat));
  Define(registry, "Erf", 9, Unary(Types::kFloat));
  Define(registry, "ThresholdedRelu", 10, Unary(Types::kFloat));
  Define(registry, "Round", 11, Unary(Types::kFloat));
  Define(registry, "Celu", 12, Unary(Types::kFloat));
  Define(registry, "HardSwish", 14, Unary(Types::kFloat));
  Define(registry, "Mish", 18, Unary(Types::kFloat));
  // Gelu is opset 20, but exporters targeting older opsets emit it too.
  Define(registry, "Gelu", 7, InferGelu);
  Define(registry, "IsNaN", 9, Unary(Types::kFloat, /*bool_output=*/true));
  Define(registry, "IsInf", 10, Unary(Types::kFloat, /*bool_output=*/true));

  // Unary ops that also take integers.
  Define(registry, "Relu", 1, Unary(Types::kSignedNumeric));
  Define(registry, "Neg", 1, Unary(Types::kSignedNumeric));
  Define(registry, "Abs", 1, Unary(Types::kNumeric));
  Define(registry, "Sign", 9, Unary(Types::kNumeric));
  Define(registry, "Not", 1, Unary(Types::kBool));
  Define(registry, "BitwiseNot", 18, Unary(Types::kInteger));
  Define(registry, "PRelu", 1, InferPRelu);
  Define(registry, "Clip", 1, InferClip);

  // Binary arithmetic with broadcasting.
  for (const char* op : {"Add", "Sub", "Mul", "Div"})
    Define(registry, op, 1, Binary(Types::kNumeric));
  Define(registry, "Pow", 1, Binary(Types::kNumeric, false, /*mixed_types=*/true));
  Define(registry, "Mod", 10, InferMod);
  for (const char* op : {"BitwiseAnd", "BitwiseOr", "BitwiseXor"})
    Define(registry, op, 18, Binary(Types::kInteger));

  // Comparisons and logic: bool outputs.
  Define(registry, "Equal", 1, Binary(Types::kNumericOrBool, /*bool_output=*/true));
  Define(registry, "Less", 1, Binary(Types::kNumeric, /*bool_output=*/true));
  Define(registry, "Greater", 1, Binary(Types::kNumeric, /*bool_output=*/true));
  Define(registry, "LessOrEqual", 12, Binary(Types::kNumeric, /*bool_output=*/true));
  Define(registry, "GreaterOrEqual", 12, Binary(Types::kNumeric, /*bool_output=*/true));
  for (const char* op : {"And", "Or", "Xor"})
    Define(registry, op, 1, Binary(Types::kBool, /*bool_output=*/true));

  // Variadic.
  Define(registry, "Sum", 1, Variadic(Types::kNumeric));
  Define(registry, "Max", 1, Variadic(Types::kNumeric));
  Define(registry, "Min", 1, Variadic(Types::kNumeric));
  Define(registry, "Mean", 1, Variadic(Types::kFloat));

  Define(registry, "Where", 9, InferWhere);
  // Cast-1 took `to` as a string; from 6 it is the dtype number.
  Define(registry, "Cast", 6, InferCast);
  Define(registry, "CastLike", 15, InferCastLike);
  Define(registry, "QuantizeLinear", 10, InferQuantizeLinear);
  Define(registry, "DequantizeLinear", 10, InferDequantizeLinear);
}

}  // namespace kiln
