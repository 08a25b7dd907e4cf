#include "cuda/layer.h"

#include "kiln/error.h"

namespace kiln::gpu {

const char* LayoutName(Layout layout) {
  return layout == Layout::kNHWC ? "nhwc" : "row-major";
}

int64_t TensorDesc::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

size_t TensorDesc::nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }

std::vector<int64_t> TensorDesc::PhysicalDims() const {
  if (layout == Layout::kRowMajor) return dims;
  KILN_CHECK(dims.size() == 4, "an nhwc tensor must have rank 4, got ", DimsToString(dims));
  return {dims[0], dims[2], dims[3], dims[1]};
}

std::string TensorDesc::ToString() const {
  std::string s = StrCat(DTypeName(dtype), DimsToString(dims));
  if (layout != Layout::kRowMajor) s += StrCat(" ", LayoutName(layout));
  return s;
}

int PhysicalAxis(Layout layout, int rank, int logical_axis) {
  if (layout == Layout::kRowMajor) return logical_axis;
  KILN_CHECK(rank == 4, "an nhwc tensor must have rank 4, got rank ", rank);
  static constexpr int kNchwToNhwc[4] = {0, 3, 1, 2};
  return kNchwToNhwc[logical_axis];
}

const GpuLayerRegistry& GpuLayerRegistry::Global() {
  static const GpuLayerRegistry* registry = [] {
    auto* r = new GpuLayerRegistry;
    RegisterAllGpuLayers(*r);
    return r;
  }();
  return *registry;
}

void GpuLayerRegistry::Register(GpuOpDef def) {
  KILN_CHECK(!defs_.count(def.op_type), "GPU layer for ", def.op_type, " registered twice");
  std::string name = def.op_type;
  defs_.emplace(std::move(name), std::move(def));
}

const GpuOpDef* GpuLayerRegistry::Find(const std::string& op_type) const {
  auto it = defs_.find(op_type);
  return it == defs_.end() ? nullptr : &it->second;
}

std::vector<std::string> GpuLayerRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, def] : defs_) names.push_back(name);
  return names;
}

std::vector<int64_t> RowMajorStrides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> strides(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i)
    strides[static_cast<size_t>(i)] = strides[static_cast<size_t>(i) + 1] * dims[static_cast<size_t>(i) + 1];
  return strides;
}

}  // namespace kiln::gpu
