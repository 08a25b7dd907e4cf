// `kiln serve`: a Triton-compatible inference server (KServe v2 over HTTP and
// gRPC, Prometheus metrics) for a model repository. Runs until SIGINT or
// SIGTERM, then stops accepting and drains what is in flight.
#include <signal.h>

#include <iostream>
#include <memory>
#include <string>

#include "cli/cli_util.h"
#include "kiln/error.h"
#include "serve/grpc_frontend.h"
#include "serve/http_frontend.h"
#include "serve/server_core.h"

namespace kiln::cli {

// src/cli/perf.cc. Registered with serve (its client side) because main.cc
// lists one Add*Command per file it knows.

namespace {

struct ServeOptions {
  std::string model_repository;
  int http_port = 8000;
  int grpc_port = 8001;
  int metrics_port = 8002;
  int max_request_mb = 64;
  int max_queue_size = 1024;
  bool strict_model_config = false;
  int http_thread_count = serve::HttpFrontend::kDefaultThreadCount;
  int grpc_max_threads = serve::GrpcFrontend::kDefaultMaxThreads;
};

int RunServe(const ServeOptions& o) {
  // Block the stop signals in every thread (the servers' threads inherit
  // this mask), so that sigwait below is the one place that receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A process started in the background by a non-interactive shell inherits
  // SIGINT as ignored, and an ignored signal never reaches sigwait: install a
  // handler (never called while the signals are blocked) to undo that.
  struct sigaction action = {};
  action.sa_handler = [](int) {};
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  // A client that disconnects mid-reply must not kill the server.
  signal(SIGPIPE, SIG_IGN);

  serve::ServerOptions options;
  options.model_repository = o.model_repository;
  options.max_request_bytes = static_cast<size_t>(o.max_request_mb) << 20;
  options.default_max_queue_size = o.max_queue_size;
  options.strict_model_config = o.strict_model_config;
  options.log = [](const std::string& line) { std::cerr << "kiln serve: " << line << std::endl; };
  serve::ServerCore core(options);

  const auto index = core.Index();
  std::cout << "models in " << o.model_repository << ":" << (index.empty() ? " none" : "") << "\n";
  for (const auto& e : index) {
    std::cout << "  " << e.name << (e.version.empty() ? "" : " v" + e.version) << "  " << e.state
              << (e.reason.empty() ? "" : "  (" + e.reason + ")") << "\n";
  }

  std::unique_ptr<serve::HttpFrontend> http;
  std::unique_ptr<serve::GrpcFrontend> grpc;
  if (o.http_port != 0 || o.metrics_port != 0) {
    http = std::make_unique<serve::HttpFrontend>(core, o.http_port, o.metrics_port,
                                                  o.http_thread_count);
    http->Start();
    if (http->port() != 0)
      std::cout << "HTTP (KServe v2) listening on 0.0.0.0:" << http->port() << "\n";
    if (http->metrics_port() != 0)
      std::cout << "metrics listening on 0.0.0.0:" << http->metrics_port() << "/metrics\n";
  }
  if (o.grpc_port != 0) {
    grpc = std::make_unique<serve::GrpcFrontend>(core, o.grpc_port, o.grpc_max_threads);
    grpc->Start();
    std::cout << "gRPC (KServe v2) listening on 0.0.0.0:" << grpc->port() << "\n";
  }
  if (!http && !grpc) std::cout << "every endpoint is disabled (all ports 0)\n";
  std::cout << "ready; stop with Ctrl-C or SIGTERM" << std::endl;

  int received = 0;
  while (sigwait(&stop_signals, &received) != 0) {
  }
  std::cout << "received " << (received == SIGINT ? "SIGINT" : "SIGTERM")
            << ", shutting down: finishing requests in flight" << std::endl;
  core.BeginShutdown();  // New requests get "unavailable"; queued ones still run.
  if (http) http->Stop();
  if (grpc) grpc->Stop();
  http.reset();
  grpc.reset();
  // ~ServerCore drains the model queues and stops the workers.
  return 0;
}

}  // namespace

void AddServeCommand(CLI::App& app, int& exit_code) {
  auto options = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand(
      "serve", "Serve a model repository over KServe v2 (HTTP and gRPC), Triton-compatible");
  cmd->add_option("--model-repository", options->model_repository,
                  "Folder with one subfolder per model (config.json, <version>/model.onnx)")
      ->required();
  cmd->add_option("--http-port", options->http_port, "HTTP/REST port (0: off)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--grpc-port", options->grpc_port, "gRPC port (0: off)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--metrics-port", options->metrics_port,
                  "Prometheus metrics port, serving /metrics (0: off)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--max-request-mb", options->max_request_mb,
                  "Largest request payload accepted, in MiB")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-queue-size", options->max_queue_size,
                  "Queue bound for models whose config sets no max_queue_size")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--http-thread-count", options->http_thread_count,
                  "HTTP worker threads; each open client connection (keep-alive included) "
                  "holds one, so keep it above the number of concurrent HTTP clients "
                  "(default " + std::to_string(serve::HttpFrontend::kDefaultThreadCount) +
                      ": 512 clients and more; idle threads cost only address space)")
      ->check(CLI::Range(1, 65536));
  cmd->add_option("--grpc-max-threads", options->grpc_max_threads,
                  "Most threads of gRPC's synchronous handlers (ModelInfer is asynchronous "
                  "and holds none; each open ModelInferStream holds one, as does each other "
                  "call while it runs); calls beyond it fail with RESOURCE_EXHAUSTED (default " +
                      std::to_string(serve::GrpcFrontend::kDefaultMaxThreads) +
                      "; threads start on demand)")
      ->check(CLI::Range(2, 65536));
  cmd->add_flag("--strict-model-config", options->strict_model_config,
                "Require a config.json or config.pbtxt in every model folder");
  cmd->callback([options, &exit_code] { exit_code = RunServe(*options); });
}

}  // namespace kiln::cli
