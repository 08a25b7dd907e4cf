// `kiln build`: compile an ONNX model into a GPU engine file, with a report
// of what was fused, which tactic each layer got and the memory it needs.
#include <algorithm>
#include <iomanip>
#include <iostream>

#include "cli/cli_util.h"
#include "kiln/shape_profile.h"

#ifdef KILN_HAVE_CUDA
#include "kiln/engine.h"
#endif

namespace kiln::cli {

namespace {
// --profile (repeatable) and trtexec's --minShapes/--optShapes/--maxShapes.
std::vector<OptimizationProfile> ParseProfileFlags(const std::vector<std::string>& profiles,
                                                   const std::string& min_shapes,
                                                   const std::string& opt_shapes,
                                                   const std::string& max_shapes) {
  std::vector<OptimizationProfile> result;
  for (const std::string& spec : profiles) result.push_back(ParseProfileSpec(spec));
  int trtexec = !min_shapes.empty() + !opt_shapes.empty() + !max_shapes.empty();
  KILN_CHECK(trtexec == 0 || trtexec == 3, "--minShapes, --optShapes and --maxShapes go together");
  if (trtexec == 3) result.push_back(ParseTrtexecShapes(min_shapes, opt_shapes, max_shapes));
  ValidateProfiles(result);
  return result;
}
}  // namespace

ImageInput ParseImageInputSpec(const std::string& spec) {
  ImageInput image;
  if (spec.empty()) return image;
  // NAME[:mean=a,b,c][:std=x,y,z]; the name may hold ':' itself ("input:0").
  size_t options = std::string::npos;
  for (const char* key : {":mean=", ":std="}) options = std::min(options, spec.find(key));
  image.name = spec.substr(0, options);
  KILN_CHECK(!image.name.empty(), "--image-input '", spec,
             "': expected NAME[:mean=a,b,c][:std=x,y,z]");
  bool mean_given = false, std_given = false;
  for (size_t pos = options; pos < spec.size();) {
    size_t end = spec.find(':', pos + 1);
    if (end == std::string::npos) end = spec.size();
    const std::string part = spec.substr(pos + 1, end - pos - 1);  // key=v1,v2,...
    const size_t eq = part.find('=');
    const std::string key = part.substr(0, eq);
    KILN_CHECK(eq != std::string::npos && (key == "mean" || key == "std"), "--image-input '", spec,
               "': '", part, "' is not mean=... or std=...");
    bool& given = key == "mean" ? mean_given : std_given;
    KILN_CHECK(!given, "--image-input '", spec, "' gives ", key, " twice");
    given = true;
    std::vector<float>& values = key == "mean" ? image.mean : image.std;
    values.clear();
    const std::string list = part.substr(eq + 1);
    for (size_t at = 0; at <= list.size();) {
      size_t comma = list.find(',', at);
      if (comma == std::string::npos) comma = list.size();
      const std::string number = list.substr(at, comma - at);
      size_t used = 0;
      float v = 0;
      try {
        v = std::stof(number, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      KILN_CHECK(!number.empty() && used == number.size(), "--image-input '", spec, "': '", number,
                 "' in ", key, " is not a number");
      values.push_back(v);
      at = comma + 1;
    }
    pos = end;
  }
  return image;
}

std::vector<int64_t> ImageBindingDims(const std::vector<int64_t>& nchw) {
  if (nchw.size() != 4) return nchw;
  return {nchw[0], nchw[2], nchw[3], nchw[1]};
}

#ifdef KILN_HAVE_CUDA
BuildConfig MakeBuildConfig(const EngineFlags& flags) {
  BuildConfig config;
  int chosen = flags.fp16 + flags.bf16 + flags.tf32;
  KILN_CHECK(chosen <= 1, "choose at most one of --fp16, --bf16, --tf32");
  if (flags.fp16) config.precision = Precision::kFP16;
  if (flags.bf16) config.precision = Precision::kBF16;
  if (flags.tf32) config.precision = Precision::kTF32;
  for (const std::string& spec : flags.shapes) {
    auto [name, dims] = ParseShapeSpec(spec);
    KILN_CHECK(!config.shapes.count(name), "--shapes gives '", name, "' twice");
    config.shapes[name] = dims;
  }
  config.timing_cache_path = flags.timing_cache;
  config.conv_layout = flags.conv_layout;
  config.image_input = ParseImageInputSpec(flags.image_input);
  config.verbose = flags.verbose;
  config.log = [](const std::string& line) { std::cerr << "[build] " << line << "\n"; };
  return config;
}

void PrintEngineSummary(const Engine& engine) {
  const EngineInfo& info = engine.info();
  std::cout << "engine: " << PrecisionName(info.precision) << " on " << info.gpu_name << " (sm_"
            << info.sm << ")\n";
  for (const TensorDesc& d : engine.inputs())
    std::cout << "  input  " << d.name << ": " << DTypeName(d.dtype) << DimsToString(d.dims) << "\n";
  for (const TensorDesc& d : engine.outputs())
    std::cout << "  output " << d.name << ": " << DTypeName(d.dtype) << DimsToString(d.dims) << "\n";
  int layers = 0, aliases = 0;
  for (const LayerInfo& l : info.layers) (l.alias ? aliases : layers)++;
  std::cout << "  layers: " << layers << " (+" << aliases << " zero-copy views), kernel launches: "
            << info.kernel_launches << "\n"
            << "  weights: " << HumanBytes(static_cast<double>(info.weight_bytes))
            << ", activations (peak, shared): " << HumanBytes(static_cast<double>(info.activation_bytes))
            << ", workspace: " << HumanBytes(static_cast<double>(info.workspace_bytes)) << "\n"
            << std::fixed << std::setprecision(2) << "  build: " << info.build_seconds << " s ("
            << info.tactics_timed << " tactics timed, " << info.tactics_cached
            << " layers from the timing cache)\n";
  if (!engine.profiles().empty()) {
    std::cout << "  optimization profiles: " << engine.profiles().size() << " ("
              << info.num_plans << " shape-specialized plans built; other shapes in a profile are "
              << "specialized on first use)\n";
    for (size_t p = 0; p < engine.profiles().size(); ++p)
      std::cout << "    profile " << p << ": " << DescribeProfile(engine.profiles()[p]) << "\n";
    std::cout << "  weights shared by the plans: " << HumanBytes(static_cast<double>(info.weight_bytes))
              << " on the device (" << HumanBytes(static_cast<double>(info.weight_bytes_unshared))
              << " without sharing); activations sized for the largest plan\n";
  }
}

#endif

void AddEngineFlags(CLI::App* cmd, EngineFlags& flags) {
  cmd->add_flag("--fp16", flags.fp16, "FP16 storage and tensor-core math (FP32 accumulation)");
  cmd->add_flag("--bf16", flags.bf16, "BF16 storage and tensor-core math (FP32 accumulation)");
  cmd->add_flag("--tf32", flags.tf32, "FP32 storage, TF32 tensor-core convolutions and GEMMs");
  cmd->add_option("--shapes", flags.shapes, "Input shapes, e.g. input=32x3x224x224 (repeatable)");
  cmd->add_option("--timing-cache", flags.timing_cache, "Tactic timing cache file (read and updated)");
  cmd->add_option("--conv-layout", flags.conv_layout, "Convolution layout: auto, nhwc or nchw")
      ->check(CLI::IsMember({"auto", "nhwc", "nchw"}))
      ->capture_default_str();
  cmd->add_option("--image-input", flags.image_input,
                  "Take uint8 images [N,H,W,C] for the float [N,C,H,W] input NAME and normalize them "
                  "in the engine, (x/255 - mean[c]) / std[c] (default: ImageNet's), fused into the first "
                  "layer where possible: NAME[:mean=a,b,c][:std=x,y,z]. --shapes/profiles then give "
                  "NAME's dims as NxHxWxC");
  cmd->add_flag("--verbose,-v", flags.verbose, "Print each layer's tactic choice");
}

void AddBuildCommand(CLI::App& app, int& exit_code) {
  struct BuildOptions {
    EngineFlags flags;
    std::string model, output;
    std::vector<std::string> profiles;
    std::string min_shapes, opt_shapes, max_shapes;
  };
  // Options live in a shared object the callback holds, so the references
  // CLI11 keeps stay valid whatever the callback uses.
  auto o = std::make_shared<BuildOptions>();
  CLI::App* cmd = app.add_subcommand("build", "Compile an ONNX model into a GPU engine file");
  cmd->add_option("model", o->model, "ONNX model file")->required();
  cmd->add_option("-o,--output", o->output, "Engine file to write (default: MODEL.kiln)");
  AddEngineFlags(cmd, o->flags);
  cmd->add_option("--profile", o->profiles,
                  "Optimization profile for dynamic shapes (repeatable, one profile each): "
                  "NAME:min=1x3x224x224,opt=16x3x224x224,max=32x3x224x224[;NAME2:...]");
  cmd->add_option("--minShapes", o->min_shapes, "trtexec-style profile: NAME:1x3x224x224[,NAME2:...]");
  cmd->add_option("--optShapes", o->opt_shapes, "trtexec-style profile: opt shapes (with --minShapes)");
  cmd->add_option("--maxShapes", o->max_shapes, "trtexec-style profile: max shapes (with --minShapes)");
  cmd->callback([o, &exit_code] {
#ifdef KILN_HAVE_CUDA
    BuildConfig config = MakeBuildConfig(o->flags);
    config.profiles = ParseProfileFlags(o->profiles, o->min_shapes, o->opt_shapes, o->max_shapes);
    std::unique_ptr<Engine> engine = Engine::Build(o->model, config);
    std::string path = o->output;
    if (path.empty()) {
      const std::string& m = o->model;
      bool onnx = m.size() > 5 && m.compare(m.size() - 5, 5, ".onnx") == 0;
      path = (onnx ? m.substr(0, m.size() - 5) : m) + ".kiln";
    }
    engine->Save(path);
    PrintEngineSummary(*engine);
    std::cout << "wrote " << path << "\n";
    exit_code = 0;
#else
    (void)exit_code;
    // Flag mistakes are reported here too.
    ParseProfileFlags(o->profiles, o->min_shapes, o->opt_shapes, o->max_shapes);
    Fail("this kiln was built without CUDA; `kiln build` needs the CUDA backend (model: ", o->model, ")");
#endif
  });
}

}  // namespace kiln::cli
