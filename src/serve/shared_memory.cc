#include "serve/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#ifdef KILN_HAVE_CUDA
#include "cuda/buffers.h"
#include "cuda/device.h"
#endif

namespace kiln::serve {

namespace {

// Closes a file descriptor on every path out of the constructor.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Status SharedMemoryRegion::Map(const std::string& name, const std::string& key,
                               uint64_t offset, uint64_t byte_size,
                               std::shared_ptr<SharedMemoryRegion>* out) {
  const std::string what = "shared memory region '" + name + "' (key '" + key + "')";
  if (byte_size == 0) return {StatusCode::kBadRequest, what + ": byte_size must be positive"};
  if (offset > std::numeric_limits<uint64_t>::max() - byte_size ||
      offset + byte_size > static_cast<uint64_t>(std::numeric_limits<off_t>::max()))
    return {StatusCode::kBadRequest, what + ": offset " + std::to_string(offset) +
                                         " + byte_size " + std::to_string(byte_size) +
                                         " overflows"};
  FdCloser fd{::shm_open(key.c_str(), O_RDWR, 0)};
  if (fd.fd < 0) {
    const int error = errno;
    return {error == ENOENT ? StatusCode::kNotFound : StatusCode::kBadRequest,
            "unable to open " + what + ": " + std::strerror(error)};
  }
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0)
    return {StatusCode::kInternal, "cannot stat " + what + ": " + std::strerror(errno)};
  const uint64_t object_bytes = static_cast<uint64_t>(st.st_size);
  if (offset + byte_size > object_bytes)
    return {StatusCode::kBadRequest, what + ": offset " + std::to_string(offset) +
                                         " + byte_size " + std::to_string(byte_size) +
                                         " exceeds the shared memory object's " +
                                         std::to_string(object_bytes) + " bytes"};
  const size_t mapped_bytes = static_cast<size_t>(offset + byte_size);
  void* base = ::mmap(nullptr, mapped_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
  if (base == MAP_FAILED)
    return {StatusCode::kInternal, "cannot map " + what + " (" + std::to_string(mapped_bytes) +
                                       " bytes): " + std::strerror(errno)};
  *out = std::make_shared<SharedMemoryRegion>(name, key, offset, byte_size, base, mapped_bytes);
  return {};
}

SharedMemoryRegion::SharedMemoryRegion(std::string name, std::string key, uint64_t offset,
                                       uint64_t byte_size, void* base, size_t mapped_bytes)
    : name_(std::move(name)),
      key_(std::move(key)),
      offset_(offset),
      byte_size_(byte_size),
      base_(base),
      mapped_bytes_(mapped_bytes) {
#ifdef KILN_HAVE_CUDA
  // Page-locked, the region's inputs go to the GPU by DMA with no gather
  // copy through the backend's staging (perf_analyzer and Triton clients
  // reuse regions, so the one-time cost of pinning pays off). Refused pins
  // (no device, locked-memory limits) only cost that copy.
  if (base_ && mapped_bytes_ && cuda::DeviceAvailable())
    pin_ = cuda::HostPin::TryPin(base_, mapped_bytes_);
#endif
}

SharedMemoryRegion::~SharedMemoryRegion() {
  pin_.reset();
  if (base_) ::munmap(base_, mapped_bytes_);
}

Status SharedMemoryRegistry::Register(const std::string& name, const std::string& key,
                                      uint64_t offset, uint64_t byte_size) {
  if (name.empty()) return {StatusCode::kBadRequest, "a shared memory region needs a name"};
  if (key.empty() || key.find('/', 1) != std::string::npos || key.find('\0') != std::string::npos)
    return {StatusCode::kBadRequest, "shared memory region '" + name + "': key '" + key +
                                         "' is not a shm_open name (expected \"/name\")"};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (regions_.count(name))
      return {StatusCode::kBadRequest,
              "shared memory region '" + name + "' is already registered"};
  }
  std::shared_ptr<SharedMemoryRegion> region;
  Status mapped = SharedMemoryRegion::Map(name, key, offset, byte_size, &region);
  if (!mapped.ok()) return mapped;
  std::lock_guard<std::mutex> lock(mu_);
  if (!regions_.emplace(name, std::move(region)).second)  // Raced with another register.
    return {StatusCode::kBadRequest, "shared memory region '" + name + "' is already registered"};
  return {};
}

Status SharedMemoryRegistry::GetStatus(const std::string& name,
                                       std::vector<SharedMemoryRegionStatus>* out) const {
  out->clear();
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [region_name, r] : regions_) {
    if (!name.empty() && region_name != name) continue;
    out->push_back({r->name(), r->key(), r->offset(), r->byte_size()});
  }
  if (!name.empty() && out->empty())
    return {StatusCode::kNotFound, "unable to find system shared memory region: '" + name + "'"};
  return {};
}

Status SharedMemoryRegistry::Unregister(const std::string& name) {
  std::map<std::string, std::shared_ptr<SharedMemoryRegion>> dropped;  // Unmapped outside the lock.
  std::lock_guard<std::mutex> lock(mu_);
  if (name.empty()) {
    dropped.swap(regions_);
  } else if (auto it = regions_.find(name); it != regions_.end()) {
    dropped.emplace(it->first, std::move(it->second));
    regions_.erase(it);
  }
  return {};
}

Status SharedMemoryRegistry::Find(const std::string& name,
                                  std::shared_ptr<SharedMemoryRegion>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = regions_.find(name);
  if (it == regions_.end())
    return {StatusCode::kNotFound, "unable to find system shared memory region: '" + name + "'"};
  *out = it->second;
  return {};
}

Status SharedMemoryRegistry::Resolve(const SharedMemoryRef& ref, const std::string& what,
                                     std::shared_ptr<SharedMemoryRegion>* region,
                                     uint8_t** data) const {
  Status s = Find(ref.region, region);
  if (!s.ok()) return {s.code, what + ": " + s.message};
  const uint64_t size = (*region)->byte_size();
  if (ref.offset > size || ref.byte_size > size - ref.offset)
    return {StatusCode::kBadRequest,
            what + ": offset " + std::to_string(ref.offset) + " + byte size " +
                std::to_string(ref.byte_size) + " is outside shared memory region '" +
                ref.region + "' of " + std::to_string(size) + " bytes"};
  *data = (*region)->data() + ref.offset;
  return {};
}

}  // namespace kiln::serve
