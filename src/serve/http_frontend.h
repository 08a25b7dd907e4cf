// The KServe v2 HTTP/REST frontend of `kiln serve` (cpp-httplib), with the
// Triton extensions tritonclient.http uses: health, server/model metadata,
// model config, infer (JSON tensors, the binary tensor data extension and
// system shared memory), statistics and the repository API; plus the
// Prometheus metrics endpoint on its own port. It only parses and formats:
// everything it answers comes from ServerCore (batching, queueing,
// validation of names/shapes/dtypes, shared memory regions).
//
//   HttpFrontend http(core, 8000, 8002);  // port 0 disables that endpoint
//   http.Start();                         // throws kiln::Error if a port is taken
//   ...
//   http.Stop();                          // waits for in-flight requests
#pragma once

#include <memory>

#include "serve/server_core.h"

namespace kiln::serve {

class HttpFrontend {
 public:
  // Worker threads of the HTTP endpoint (`kiln serve --http-thread-count`).
  // cpp-httplib serves one connection per thread for as long as it stays
  // open (keep-alive included), and connections beyond the pool wait
  // unserved: the pool must exceed the number of concurrent clients. Idle
  // threads cost only their stacks' address space.
  static constexpr int kDefaultThreadCount = 1024;

  // http_port / metrics_port: TCP ports to listen on (all interfaces); 0
  // disables that endpoint.
  HttpFrontend(ServerCore& core, int http_port, int metrics_port,
               int thread_count = kDefaultThreadCount);
  ~HttpFrontend();  // Stops if still running.
  HttpFrontend(const HttpFrontend&) = delete;
  HttpFrontend& operator=(const HttpFrontend&) = delete;

  // Binds the ports and starts serving on background threads. Throws
  // kiln::Error naming the port when it cannot be bound.
  void Start();
  // Stops accepting connections and waits for the handlers in flight.
  // Idempotent.
  void Stop();

  int port() const;          // The HTTP port (0 when disabled).
  int metrics_port() const;  // The metrics port (0 when disabled).

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::serve
