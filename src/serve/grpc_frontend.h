// kiln serve's gRPC frontend: KServe v2 / Triton's inference.GRPCInferenceService
// (third_party/kserve/grpc_service.proto), wire-compatible with tritonclient.grpc.
//
//   GrpcFrontend grpc(core, 8001);
//   grpc.Start();   // throws kiln::Error when the port cannot be bound
//   ...
//   grpc.Stop();    // in-flight calls finish (bounded wait), then the port closes
//
// Every RPC only translates: requests become ServerCore calls and ServerCore
// results become replies. ServerCore status codes map onto gRPC codes
// (kBadRequest → INVALID_ARGUMENT, kNotFound → NOT_FOUND, kUnavailable →
// UNAVAILABLE, kTimeout → DEADLINE_EXCEEDED, kInternal → INTERNAL).
// Requests bigger than ServerOptions::max_request_bytes are refused by gRPC
// itself (RESOURCE_EXHAUSTED).
#pragma once

#include <memory>

#include "serve/server_core.h"

namespace kiln::serve {

class GrpcFrontend {
 public:
  // Upper bound on the threads of gRPC's synchronous handlers (`kiln serve
  // --grpc-max-threads`); beyond it those calls fail with RESOURCE_EXHAUSTED
  // ("Server Threadpool Exhausted") instead of the process running out of
  // threads. ModelInfer runs on gRPC's callback API and holds no thread while
  // its request waits in the batcher or runs; a stream (ModelStreamInfer)
  // holds one for as long as it is open, the other calls one while they run.
  // gRPC starts threads on demand: an unused bound costs nothing.
  static constexpr int kDefaultMaxThreads = 1024;

  // port 0 picks a free port (see port() after Start()).
  GrpcFrontend(ServerCore& core, int port, int max_threads = kDefaultMaxThreads);
  ~GrpcFrontend();  // Stop()s.
  GrpcFrontend(const GrpcFrontend&) = delete;
  GrpcFrontend& operator=(const GrpcFrontend&) = delete;

  // Binds 0.0.0.0:port and starts serving on gRPC's own threads.
  void Start();
  // Idempotent. Waits up to a few seconds for in-flight calls, then cancels
  // what is left (open streams included); infer calls whose requests are
  // still in ServerCore are answered when it completes them (their batch, or
  // their queue timeout), and Stop() returns only after every one.
  void Stop();
  // The bound port once started, else the requested one.
  int port() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::serve
