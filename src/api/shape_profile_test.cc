// Optimization profile parsing (--profile and trtexec's --minShapes/...) and
// the choice of profile for given input dims.
#include "kiln/shape_profile.h"

#include <gtest/gtest.h>

#include "kiln/error.h"

namespace kiln {
namespace {

// Runs `f`, expecting a kiln::Error whose message contains every needle.
template <typename F>
void ExpectError(F f, std::initializer_list<const char*> needles) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing '" << *needles.begin() << "'";
  } catch (const Error& e) {
    for (const char* needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
          << "'" << needle << "' not in: " << e.what();
  }
}

TEST(ShapeProfileTest, ParsesOneInput) {
  OptimizationProfile p = ParseProfileSpec("input:min=1x3x224x224,opt=16x3x224x224,max=32x3x224x224");
  ASSERT_EQ(p.inputs.size(), 1u);
  const ShapeRange& r = p.inputs.at("input");
  EXPECT_EQ(r.min, (std::vector<int64_t>{1, 3, 224, 224}));
  EXPECT_EQ(r.opt, (std::vector<int64_t>{16, 3, 224, 224}));
  EXPECT_EQ(r.max, (std::vector<int64_t>{32, 3, 224, 224}));
  EXPECT_EQ(DescribeProfile(p), "input: 1x3x224x224..32x3x224x224 (opt 16x3x224x224)");
}

TEST(ShapeProfileTest, ParsesSeveralInputsInAnyKeyOrder) {
  OptimizationProfile p =
      ParseProfileSpec("ids:max=8x128,min=1x8,opt=4x64; attention.mask:min=1x8,opt=4x64,max=8x128;");
  ASSERT_EQ(p.inputs.size(), 2u);
  EXPECT_EQ(p.inputs.at("ids").min, (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(p.inputs.at("ids").max, (std::vector<int64_t>{8, 128}));
  EXPECT_EQ(p.inputs.at("attention.mask").opt, (std::vector<int64_t>{4, 64}));
}

TEST(ShapeProfileTest, RejectsBadProfileSpecs) {
  ExpectError([] { ParseProfileSpec(""); }, {"empty"});
  ExpectError([] { ParseProfileSpec("min=1x3,opt=2x3,max=4x3"); }, {"no input name"});
  ExpectError([] { ParseProfileSpec("x:min=1x3,opt=2x3"); }, {"input 'x'", "missing max"});
  ExpectError([] { ParseProfileSpec("x:min=1x3,opt=2x3,max=4xa"); }, {"'a' is not a dimension"});
  ExpectError([] { ParseProfileSpec("x:min=1x3,opt=2x3,max=4x3,min=1x3"); }, {"min given twice"});
  ExpectError([] { ParseProfileSpec("x:low=1x3,opt=2x3,max=4x3"); }, {"unknown key 'low'"});
  ExpectError([] { ParseProfileSpec("x:min=1x3,opt=2x3,max=4x3;x:min=1x3,opt=2x3,max=4x3"); },
              {"'x' is given twice"});
  ExpectError([] { ParseProfileSpec("x:min=1x3,opt=8x3,max=4x3"); },
              {"profile 0", "input 'x'", "dim 0", "min <= opt <= max"});
  ExpectError([] { ParseProfileSpec("x:min=1x3,opt=2x3x1,max=4x3"); }, {"different ranks"});
  ExpectError([] { ParseProfileSpec("x:min=1x3,opt=2x3,max=4x3,"); }, {"not min=, opt= or max="});
  ExpectError([] { ParseProfileSpec("x:min=,opt=2x3,max=4x3"); }, {"empty shape"});
}

TEST(ShapeProfileTest, ParsesTrtexecShapes) {
  OptimizationProfile p = ParseTrtexecShapes("ids:1x8,mask:1x8", "ids:4x64,mask:4x64", "mask:8x128,ids:8x128");
  ASSERT_EQ(p.inputs.size(), 2u);
  EXPECT_EQ(p.inputs.at("mask").min, (std::vector<int64_t>{1, 8}));
  EXPECT_EQ(p.inputs.at("mask").opt, (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(p.inputs.at("ids").max, (std::vector<int64_t>{8, 128}));
  // Input names may contain ':' (only the last one separates the dims).
  OptimizationProfile colon = ParseTrtexecShapes("a:b:1", "a:b:2", "a:b:3");
  EXPECT_EQ(colon.inputs.at("a:b").opt, (std::vector<int64_t>{2}));
}

TEST(ShapeProfileTest, RejectsBadTrtexecShapes) {
  ExpectError([] { ParseTrtexecShapes("x:1x3", "x:2x3", ""); }, {"--maxShapes", "empty"});
  ExpectError([] { ParseTrtexecShapes("x:1x3", "y:2x3", "x:4x3"); }, {"--optShapes does not"});
  ExpectError([] { ParseTrtexecShapes("x:1x3", "x:2x3,y:2", "x:4x3"); }, {"--optShapes gives input 'y'"});
  ExpectError([] { ParseTrtexecShapes("x1x3", "x:2x3", "x:4x3"); }, {"--minShapes", "not name:dims"});
  ExpectError([] { ParseTrtexecShapes("x:1x3,x:1x3", "x:2x3", "x:4x3"); }, {"given twice"});
  ExpectError([] { ParseTrtexecShapes("x:5x3", "x:2x3", "x:4x3"); }, {"min <= opt <= max"});
}

TEST(ShapeProfileTest, ProfilesMustNameTheSameInputs) {
  OptimizationProfile a = ParseProfileSpec("x:min=1,opt=2,max=4");
  OptimizationProfile b = ParseProfileSpec("y:min=1,opt=2,max=4");
  ExpectError([&] { ValidateProfiles({a, b}); }, {"profile 1", "'y'"});
  OptimizationProfile c = ParseProfileSpec("x:min=1x1,opt=2x1,max=4x1");
  ExpectError([&] { ValidateProfiles({a, c}); }, {"profile 1", "rank 2"});
  ValidateProfiles({a, ParseProfileSpec("x:min=8,opt=16,max=32")});
}

TEST(ShapeProfileTest, SelectsTheFirstCoveringProfile) {
  std::vector<OptimizationProfile> profiles = {
      ParseProfileSpec("x:min=1x3x8x8,opt=2x3x8x8,max=4x3x8x8"),
      ParseProfileSpec("x:min=8x3x8x8,opt=16x3x8x8,max=32x3x8x8"),
      ParseProfileSpec("x:min=2x3x8x8,opt=16x3x8x8,max=16x3x8x8"),  // Overlaps both.
  };
  auto select = [&](int64_t batch) { return SelectProfile(profiles, {{"x", {batch, 3, 8, 8}}}); };
  EXPECT_EQ(select(1), 0);
  EXPECT_EQ(select(3), 0);  // First match wins over profile 2.
  EXPECT_EQ(select(4), 0);
  EXPECT_EQ(select(5), 2);
  EXPECT_EQ(select(8), 1);
  EXPECT_EQ(select(32), 1);
  EXPECT_TRUE(ProfileCovers(profiles[1], {{"x", {13, 3, 8, 8}}, {"other", {7}}}));
  EXPECT_FALSE(ProfileCovers(profiles[1], {{"x", {13, 3, 8, 9}}}));
  EXPECT_FALSE(ProfileCovers(profiles[1], {{"x", {13, 3, 8}}}));
  EXPECT_FALSE(ProfileCovers(profiles[1], {}));
}

TEST(ShapeProfileTest, UncoveredShapesNameTheInputDimsAndRanges) {
  std::vector<OptimizationProfile> profiles = {
      ParseProfileSpec("x:min=1x3x8x8,opt=2x3x8x8,max=4x3x8x8"),
      ParseProfileSpec("x:min=8x3x8x8,opt=16x3x8x8,max=32x3x8x8"),
  };
  ExpectError([&] { SelectProfile(profiles, {{"x", {5, 3, 8, 8}}}); },
              {"'x' 5x3x8x8", "no optimization profile", "profile 0: x: 1x3x8x8..4x3x8x8 (opt 2x3x8x8)",
               "profile 1: x: 8x3x8x8..32x3x8x8", "dim 0 is 5, outside 1..4", "dim 0 is 5, outside 8..32"});
  ExpectError([&] { SelectProfile(profiles, {{"x", {64, 3, 8, 8}}}); }, {"'x' 64x3x8x8", "outside 8..32"});
  ExpectError([&] { SelectProfile(profiles, {{"x", {2, 3, 8, 9}}}); }, {"dim 3 is 9, outside 8..8"});
  ExpectError([&] { SelectProfile(profiles, {{"x", {2, 3, 8}}}); }, {"has rank 3, the profile rank 4"});
  ExpectError([&] { SelectProfile(profiles, {{"y", {2}}}); }, {"no shape given for input 'x'"});
  ExpectError([&] { SelectProfile({}, {{"x", {2}}}); }, {"no optimization profiles"});
}

}  // namespace
}  // namespace kiln
