// Optimization profiles: the ranges of input shapes a GPU engine accepts
// (TensorRT's optimization profiles). This header has no CUDA dependency, so
// the parsing and selection rules are usable (and tested) in CPU-only builds;
// include/kiln/engine.h uses it for BuildConfig::profiles.
//
// Command-line syntax (kiln build --profile, repeatable, one profile each):
//
//   --profile 'input:min=1x3x224x224,opt=16x3x224x224,max=32x3x224x224'
//   --profile 'ids:min=1x8,opt=4x64,max=8x128;mask:min=1x8,opt=4x64,max=8x128'
//
// (inputs of one profile separated by ';'), or trtexec's one-profile form:
//
//   --minShapes ids:1x8,mask:1x8 --optShapes ids:4x64,mask:4x64 --maxShapes ids:8x128,mask:8x128
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kiln {

// Inclusive per-dim bounds of one input; the engine is tuned for `opt`.
struct ShapeRange {
  std::vector<int64_t> min, opt, max;
};

struct OptimizationProfile {
  std::map<std::string, ShapeRange> inputs;  // Input name -> range.
};

using InputShapes = std::map<std::string, std::vector<int64_t>>;

// Parses one --profile value (syntax above). Throws kiln::Error quoting the
// spec and saying what is wrong.
OptimizationProfile ParseProfileSpec(const std::string& spec);

// Parses trtexec's --minShapes/--optShapes/--maxShapes values
// ("name:AxBxC,name2:DxE") into one profile; all three must name the same
// inputs.
OptimizationProfile ParseTrtexecShapes(const std::string& min_shapes, const std::string& opt_shapes,
                                       const std::string& max_shapes);

// Checks every profile: non-empty, equal ranks, 0 <= min <= opt <= max per
// dim, and that all profiles name the same inputs. Throws naming the profile
// index, input and dim.
void ValidateProfiles(const std::vector<OptimizationProfile>& profiles);

// True when every input the profile names has dims in `shapes` inside its
// range. Inputs `shapes` names that the profile does not are ignored.
bool ProfileCovers(const OptimizationProfile& profile, const InputShapes& shapes);

// The first profile covering `shapes`. Throws kiln::Error naming the input,
// its dims and each profile's ranges when none does (or when `shapes` lacks
// an input the profiles name).
int SelectProfile(const std::vector<OptimizationProfile>& profiles, const InputShapes& shapes);

// "input: 1x3x224x224..32x3x224x224 (opt 16x3x224x224)", inputs joined by "; ".
std::string DescribeProfile(const OptimizationProfile& profile);
// "1x3x224x224".
std::string ShapeText(const std::vector<int64_t>& dims);

}  // namespace kiln
