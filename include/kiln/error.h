// kiln::Error is the one exception type kiln throws. Every message names what
// failed and where (file, tensor, node), so a user can act on it without a
// debugger. The CLI and the server catch it at their boundary and turn it into
// a non-zero exit or an error reply.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace kiln {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Concatenates any streamable values into one string: StrCat("dim ", 3, " of x").
template <typename... Args>
std::string StrCat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

// Throws kiln::Error built from the arguments.
template <typename... Args>
[[noreturn]] void Fail(Args&&... args) {
  throw Error(StrCat(std::forward<Args>(args)...));
}

}  // namespace kiln

// KILN_CHECK(cond, "message parts", ...) throws kiln::Error when cond is false.
#define KILN_CHECK(cond, ...)                   \
  do {                                          \
    if (!(cond)) ::kiln::Fail(__VA_ARGS__);     \
  } while (0)
