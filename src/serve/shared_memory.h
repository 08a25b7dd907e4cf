// Triton's system shared memory extension, server side: clients create a
// POSIX shared memory object (shm_open key), register a window of it
// (offset, byte_size) under a region name, and infer requests then reference
// (region, offset, byte_size) for their inputs and outputs instead of
// carrying the bytes over the socket.
//
//   SharedMemoryRegistry registry;
//   registry.Register("in0", "/my_key", 0, 4096);   // shm_open + mmap
//   std::shared_ptr<SharedMemoryRegion> r;
//   registry.Find("in0", &r);                       // stays mapped while r lives
//   registry.Unregister("in0");                     // "" = every region
//
// A region stays mapped until its last user lets go (requests in flight hold
// a shared_ptr), so unregistering never pulls memory from under a request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "serve/server_core.h"

namespace kiln::serve {

// One registered, mapped region. The mapping covers [0, offset + byte_size)
// of the object; data() points at `offset`.
class SharedMemoryRegion {
 public:
  // shm_open(key, O_RDWR) and mmap read/write. kNotFound: no object has
  // that key; kBadRequest: zero size, the object is smaller than offset +
  // byte_size; kInternal: mmap failed.
  static Status Map(const std::string& name, const std::string& key, uint64_t offset,
                    uint64_t byte_size, std::shared_ptr<SharedMemoryRegion>* out);
  // Takes over a mapping of `mapped_bytes` at `base`.
  SharedMemoryRegion(std::string name, std::string key, uint64_t offset, uint64_t byte_size,
                     void* base, size_t mapped_bytes);
  ~SharedMemoryRegion();  // Unpins, then munmap.
  SharedMemoryRegion(const SharedMemoryRegion&) = delete;
  SharedMemoryRegion& operator=(const SharedMemoryRegion&) = delete;

  const std::string& name() const { return name_; }
  const std::string& key() const { return key_; }
  uint64_t offset() const { return offset_; }
  uint64_t byte_size() const { return byte_size_; }
  uint8_t* data() const { return static_cast<uint8_t*>(base_) + offset_; }
  // Whether the mapping is page-locked for the GPU (kiln built with CUDA and
  // a device present): the GPU backend then copies inputs straight from it.
  bool pinned() const { return pin_ != nullptr; }

 private:
  std::string name_, key_;
  uint64_t offset_, byte_size_;
  void* base_ = nullptr;
  size_t mapped_bytes_ = 0;
  std::shared_ptr<void> pin_;  // A cuda::HostPin, released before munmap.
};

class SharedMemoryRegistry {
 public:
  // kBadRequest: a region of that name exists, bad arguments, the object is
  // smaller than offset + byte_size; kNotFound: no object has that key.
  Status Register(const std::string& name, const std::string& key, uint64_t offset,
                  uint64_t byte_size);
  // name "": every region (sorted by name). kNotFound for an unknown name.
  Status GetStatus(const std::string& name, std::vector<SharedMemoryRegionStatus>* out) const;
  // name "": every region. An unknown name is not an error (as in Triton).
  Status Unregister(const std::string& name);
  // kNotFound for an unknown region.
  Status Find(const std::string& name, std::shared_ptr<SharedMemoryRegion>* out) const;

  // The bytes [ref.offset, ref.offset + ref.byte_size) of ref.region, with
  // the region that keeps them mapped. kNotFound / kBadRequest (out of range).
  Status Resolve(const SharedMemoryRef& ref, const std::string& what,
                 std::shared_ptr<SharedMemoryRegion>* region, uint8_t** data) const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<SharedMemoryRegion>> regions_;
};

}  // namespace kiln::serve
