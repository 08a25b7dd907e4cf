#include "ir/graph.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kiln::ir {
namespace {

TEST(GraphTest, SortTopologicallyOrdersProducersFirst) {
  Graph g;
  Value* x = g.AddValue("x", {DType::kFloat32, ShapeFromDims({2})});
  x->is_graph_input = true;
  g.inputs().push_back(x);
  Value* a = g.AddValue("a");
  Value* b = g.AddValue("b");
  g.AddNode("Relu", "second", {a}, {b});
  g.AddNode("Relu", "first", {x}, {a});
  g.outputs().push_back(b);
  g.SortTopologically();
  EXPECT_EQ(g.nodes()[0]->name, "first");
  EXPECT_EQ(g.nodes()[1]->name, "second");
  EXPECT_NO_THROW(g.Validate());
}

TEST(GraphTest, CycleIsReportedWithNodeName) {
  Graph g;
  Value* a = g.AddValue("a");
  Value* b = g.AddValue("b");
  g.AddNode("Relu", "n1", {a}, {b});
  g.AddNode("Relu", "n2", {b}, {a});
  g.outputs().push_back(b);
  try {
    g.SortTopologically();
    FAIL() << "expected a cycle error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cycle"), std::string::npos);
  }
}

TEST(TensorTest, HalfRoundTrip) {
  for (float f : {0.f, 1.f, -2.5f, 65504.f, 6.1035156e-05f, 5.9604645e-08f, 0.333333f}) {
    EXPECT_NEAR(HalfToFloat(FloatToHalf(f)), f, std::fabs(f) * 1e-3 + 1e-9) << f;
  }
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
}

}  // namespace
}  // namespace kiln::ir
