// Helpers shared by the serve tests (src/serve/*_test.cc).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kiln/error.h"
#include "kiln/tensor.h"

namespace kiln::testing {

// A loopback TCP port that was free a moment ago (0 if none was found).
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

// A client-side POSIX shared memory object, as tritonclient.utils.shared_memory
// creates one: shm_open(O_CREAT), ftruncate, mmap; unmapped and unlinked at the end.
class ClientRegion {
 public:
  ClientRegion(const std::string& key, size_t bytes) : key_(key), bytes_(bytes) {
    shm_unlink(key.c_str());  // Left over from a crashed run.
    const int fd = shm_open(key.c_str(), O_RDWR | O_CREAT | O_EXCL, S_IRUSR | S_IWUSR);
    KILN_CHECK(fd >= 0, "shm_open ", key, ": ", std::strerror(errno));
    KILN_CHECK(ftruncate(fd, static_cast<off_t>(bytes)) == 0, "ftruncate ", key);
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    KILN_CHECK(base != MAP_FAILED, "mmap ", key);
    base_ = static_cast<uint8_t*>(base);
  }
  ~ClientRegion() {
    munmap(base_, bytes_);
    shm_unlink(key_.c_str());
  }
  const std::string& key() const { return key_; }
  uint8_t* at(size_t offset) const { return base_ + offset; }
  void Write(size_t offset, const Tensor& t) const { std::memcpy(at(offset), t.raw_data(), t.nbytes()); }
  void FillNaN(size_t offset, size_t count) const {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 0; i < count; ++i) std::memcpy(at(offset + i * 4), &nan, 4);
  }
  std::vector<float> Floats(size_t offset, size_t count) const {
    std::vector<float> v(count);
    std::memcpy(v.data(), at(offset), count * 4);
    return v;
  }

 private:
  std::string key_;
  size_t bytes_;
  uint8_t* base_ = nullptr;
};

}  // namespace kiln::testing
