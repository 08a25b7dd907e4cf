// Optimization profile parsing and selection (include/kiln/shape_profile.h).
#include "kiln/shape_profile.h"

#include <set>

#include "kiln/error.h"

namespace kiln {
namespace {

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    size_t end = s.find(sep, pos);
    parts.push_back(s.substr(pos, end == std::string::npos ? std::string::npos : end - pos));
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return parts;
}

// "1x3x224x224" -> {1, 3, 224, 224}; `where` prefixes errors.
std::vector<int64_t> ParseDims(const std::string& text, const std::string& where) {
  KILN_CHECK(!text.empty(), where, ": empty shape (expected dims like 1x3x224x224)");
  std::vector<int64_t> dims;
  for (const std::string& part : Split(text, 'x')) {
    KILN_CHECK(!part.empty() && part.size() < 19 &&
                   part.find_first_not_of("0123456789") == std::string::npos,
               where, ": '", part, "' is not a dimension (expected dims like 1x3x224x224)");
    dims.push_back(std::stoll(part));
  }
  return dims;
}

// "name:AxB,name2:CxD" -> {name: {A,B}, name2: {C,D}}.
InputShapes ParseNamedShapeList(const std::string& list, const char* flag) {
  InputShapes shapes;
  const std::string where = StrCat(flag, " '", list, "'");
  KILN_CHECK(!Trim(list).empty(), where, ": empty (expected name:AxB[,name2:CxD])");
  for (const std::string& raw : Split(list, ',')) {
    std::string item = Trim(raw);
    size_t colon = item.rfind(':');
    KILN_CHECK(colon != std::string::npos && colon > 0, where, ": '", item,
               "' is not name:dims (e.g. input:1x3x224x224)");
    std::string name = item.substr(0, colon);
    KILN_CHECK(!shapes.count(name), where, ": input '", name, "' is given twice");
    shapes[name] = ParseDims(item.substr(colon + 1), StrCat(where, ", input '", name, "'"));
  }
  return shapes;
}

}  // namespace

std::string ShapeText(const std::vector<int64_t>& dims) {
  if (dims.empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s;
}

OptimizationProfile ParseProfileSpec(const std::string& spec) {
  const std::string where = StrCat("--profile '", spec, "'");
  const char* example = "expected name:min=AxB,opt=AxB,max=AxB[;name2:...]";
  KILN_CHECK(!Trim(spec).empty(), where, ": empty (", example, ")");
  OptimizationProfile profile;
  for (const std::string& raw : Split(spec, ';')) {
    std::string item = Trim(raw);
    if (item.empty()) continue;  // Tolerate a trailing ';'.
    size_t colon = item.find(':');
    KILN_CHECK(colon != std::string::npos && colon > 0, where, ": '", item,
               "' has no input name (", example, ")");
    std::string name = item.substr(0, colon);
    KILN_CHECK(!profile.inputs.count(name), where, ": input '", name, "' is given twice");
    ShapeRange range;
    bool has_min = false, has_opt = false, has_max = false;
    for (const std::string& raw_field : Split(item.substr(colon + 1), ',')) {
      std::string field = Trim(raw_field);
      size_t eq = field.find('=');
      KILN_CHECK(eq != std::string::npos, where, ": '", field, "' for input '", name,
                 "' is not min=, opt= or max= (", example, ")");
      std::string key = field.substr(0, eq);
      std::string field_where = StrCat(where, ", input '", name, "' ", key);
      std::vector<int64_t> dims = ParseDims(field.substr(eq + 1), field_where);
      bool* seen = key == "min" ? &has_min : key == "opt" ? &has_opt : key == "max" ? &has_max : nullptr;
      KILN_CHECK(seen, where, ": unknown key '", key, "' for input '", name,
                 "' (use min=, opt=, max=)");
      KILN_CHECK(!*seen, where, ": ", key, " given twice for input '", name, "'");
      *seen = true;
      (key == "min" ? range.min : key == "opt" ? range.opt : range.max) = std::move(dims);
    }
    KILN_CHECK(has_min && has_opt && has_max, where, ": input '", name, "' needs min=, opt= and max= (missing ",
               !has_min ? "min" : !has_opt ? "opt" : "max", ")");
    profile.inputs[name] = std::move(range);
  }
  KILN_CHECK(!profile.inputs.empty(), where, ": no inputs (", example, ")");
  ValidateProfiles({profile});
  return profile;
}

OptimizationProfile ParseTrtexecShapes(const std::string& min_shapes, const std::string& opt_shapes,
                                       const std::string& max_shapes) {
  InputShapes min = ParseNamedShapeList(min_shapes, "--minShapes");
  InputShapes opt = ParseNamedShapeList(opt_shapes, "--optShapes");
  InputShapes max = ParseNamedShapeList(max_shapes, "--maxShapes");
  OptimizationProfile profile;
  for (const auto& [name, dims] : min) {
    KILN_CHECK(opt.count(name), "--minShapes gives input '", name, "' but --optShapes does not");
    KILN_CHECK(max.count(name), "--minShapes gives input '", name, "' but --maxShapes does not");
    profile.inputs[name] = {dims, opt.at(name), max.at(name)};
  }
  for (const InputShapes* other : {&opt, &max})
    for (const auto& [name, dims] : *other)
      KILN_CHECK(min.count(name), other == &opt ? "--optShapes" : "--maxShapes", " gives input '",
                 name, "' but --minShapes does not");
  ValidateProfiles({profile});
  return profile;
}

void ValidateProfiles(const std::vector<OptimizationProfile>& profiles) {
  for (size_t p = 0; p < profiles.size(); ++p) {
    const OptimizationProfile& profile = profiles[p];
    KILN_CHECK(!profile.inputs.empty(), "optimization profile ", p, " names no inputs");
    for (const auto& [name, r] : profile.inputs) {
      const std::string where = StrCat("optimization profile ", p, ", input '", name, "'");
      KILN_CHECK(r.min.size() == r.opt.size() && r.opt.size() == r.max.size(), where,
                 ": min, opt and max have different ranks (", ShapeText(r.min), ", ",
                 ShapeText(r.opt), ", ", ShapeText(r.max), ")");
      for (size_t d = 0; d < r.min.size(); ++d)
        KILN_CHECK(0 <= r.min[d] && r.min[d] <= r.opt[d] && r.opt[d] <= r.max[d], where, ": dim ", d,
                   " needs min <= opt <= max, got ", r.min[d], ", ", r.opt[d], ", ", r.max[d], " (",
                   ShapeText(r.min), " / ", ShapeText(r.opt), " / ", ShapeText(r.max), ")");
    }
    if (p == 0) continue;
    for (const auto& [name, r] : profile.inputs)
      KILN_CHECK(profiles[0].inputs.count(name), "optimization profile ", p, " names input '", name,
                 "', profile 0 does not (every profile must cover the same inputs)");
    for (const auto& [name, r] : profiles[0].inputs) {
      auto it = profile.inputs.find(name);
      KILN_CHECK(it != profile.inputs.end(), "optimization profile ", p, " lacks input '", name,
                 "', which profile 0 names (every profile must cover the same inputs)");
      KILN_CHECK(it->second.min.size() == r.min.size(), "optimization profile ", p, ", input '",
                 name, "': rank ", it->second.min.size(), ", but rank ", r.min.size(),
                 " in profile 0");
    }
  }
}

bool ProfileCovers(const OptimizationProfile& profile, const InputShapes& shapes) {
  for (const auto& [name, r] : profile.inputs) {
    auto it = shapes.find(name);
    if (it == shapes.end() || it->second.size() != r.min.size()) return false;
    for (size_t d = 0; d < r.min.size(); ++d)
      if (it->second[d] < r.min[d] || it->second[d] > r.max[d]) return false;
  }
  return true;
}

int SelectProfile(const std::vector<OptimizationProfile>& profiles, const InputShapes& shapes) {
  KILN_CHECK(!profiles.empty(), "the engine has no optimization profiles");
  for (const auto& [name, r] : profiles[0].inputs)
    KILN_CHECK(shapes.count(name), "no shape given for input '", name,
               "' (the engine's profiles cover it: ", DescribeProfile(profiles[0]), ")");
  for (size_t p = 0; p < profiles.size(); ++p)
    if (ProfileCovers(profiles[p], shapes)) return static_cast<int>(p);
  // Say, per profile, which input and dim falls outside it.
  std::string why;
  for (size_t p = 0; p < profiles.size(); ++p) {
    std::string reason;
    for (const auto& [name, r] : profiles[p].inputs) {
      const std::vector<int64_t>& dims = shapes.at(name);
      if (dims.size() != r.min.size()) {
        reason = StrCat("input '", name, "' has rank ", dims.size(), ", the profile rank ", r.min.size());
        break;
      }
      for (size_t d = 0; d < dims.size() && reason.empty(); ++d)
        if (dims[d] < r.min[d] || dims[d] > r.max[d])
          reason = StrCat("input '", name, "' dim ", d, " is ", dims[d], ", outside ", r.min[d], "..",
                          r.max[d]);
      if (!reason.empty()) break;
    }
    why += StrCat("\n  profile ", p, ": ", DescribeProfile(profiles[p]), " -- ", reason);
  }
  std::string given;
  for (const auto& [name, r] : profiles[0].inputs)
    given += StrCat(given.empty() ? "" : ", ", "'", name, "' ", ShapeText(shapes.at(name)));
  Fail("input shapes ", given, " are in no optimization profile of the engine:", why,
       "\n  (rebuild with a --profile covering them)");
}

std::string DescribeProfile(const OptimizationProfile& profile) {
  std::string s;
  for (const auto& [name, r] : profile.inputs)
    s += StrCat(s.empty() ? "" : "; ", name, ": ", ShapeText(r.min), "..", ShapeText(r.max), " (opt ",
                ShapeText(r.opt), ")");
  return s;
}

}  // namespace kiln
