#include "serve/http_frontend.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <string>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "kiln/error.h"
#include "serve/kserve_json.h"

namespace kiln::serve {

namespace {

using nlohmann::json;

constexpr const char* kJson = "application/json";
constexpr const char* kBinaryHeader = "Inference-Header-Content-Length";

constexpr size_t kMetricsThreads = 2;

// A reply other than 200, thrown inside a handler.
struct HttpError {
  int status;
  std::string message;
};

int HttpStatusOf(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return 200;
    case StatusCode::kBadRequest: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kTimeout: return 503;
    case StatusCode::kInternal: return 500;
  }
  return 500;
}

void ReplyJson(httplib::Response& res, int status, const json& doc) {
  res.status = status;
  res.body = doc.dump(-1, ' ', false, json::error_handler_t::replace);
  res.set_header("Content-Type", kJson);
}

void ReplyError(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.body = ErrorJson(message);
  res.set_header("Content-Type", kJson);
}

// Parses a request body that may be empty (repository API calls).
json OptionalJsonBody(const std::string& body) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    throw HttpError{400, "malformed JSON in the request body (expected an object)"};
  }
  return doc;
}

std::string Match(const httplib::Request& req, size_t i) {
  return i < req.matches.size() ? req.matches[i].str() : std::string();
}

}  // namespace

struct HttpFrontend::Impl {
  ServerCore& core;
  int requested_http_port, requested_metrics_port;
  size_t thread_count = HttpFrontend::kDefaultThreadCount;
  int http_port = 0, metrics_port = 0;
  httplib::Server http, metrics;
  std::thread http_thread, metrics_thread;
  std::atomic<bool> http_done{false}, metrics_done{false};
  std::atomic<int> http_listen_fd{-1}, metrics_listen_fd{-1};
  bool started = false;

  Impl(ServerCore& c, int hp, int mp) : core(c), requested_http_port(hp), requested_metrics_port(mp) {}

  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;

  // Every handler runs inside this: no exception ever reaches cpp-httplib.
  static httplib::Server::Handler Guard(Handler fn) {
    return [fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) {
      try {
        fn(req, res);
      } catch (const HttpError& e) {
        ReplyError(res, e.status, e.message);
      } catch (const std::bad_alloc&) {
        ReplyError(res, 500, "out of memory while handling " + req.method + " " + req.path);
      } catch (const std::exception& e) {
        ReplyError(res, 500, "internal error while handling " + req.method + " " + req.path +
                                 ": " + e.what());
      } catch (...) {
        ReplyError(res, 500, "internal error while handling " + req.method + " " + req.path);
      }
    };
  }

  using PostHandler =
      std::function<void(const httplib::Request&, const std::string& body, httplib::Response&)>;

  // POST handlers read the body themselves: cpp-httplib 0.11 would wait for
  // the connection to close on a POST without Content-Length (tritonclient
  // sends those for bodiless repository calls), so the body is read only when
  // a length or chunked encoding announces one, and never past the limit.
  httplib::Server::HandlerWithContentReader GuardPost(PostHandler fn) {
    return [this, fn = std::move(fn)](const httplib::Request& req, httplib::Response& res,
                                      const httplib::ContentReader& reader) {
      Guard([&](const httplib::Request& r, httplib::Response& out) {
        std::string body;
        bool chunked = r.get_header_value("Transfer-Encoding").find("chunked") != std::string::npos;
        if (r.has_header("Content-Length") || chunked) {
          size_t limit = core.options().max_request_bytes;
          bool too_large = false;
          bool ok = reader([&](const char* data, size_t n) {
            // Past the limit (only chunked bodies get here; cpp-httplib skips
            // a too long Content-Length itself): read on but keep nothing, so
            // the connection stays in step for its next request.
            if (too_large || (limit > 0 && body.size() + n > limit)) {
              too_large = true;
              body.clear();
              body.shrink_to_fit();
              return true;
            }
            body.append(data, n);
            return true;
          });
          if (too_large || out.status == 413) {
            std::string size = r.has_header("Content-Length")
                                   ? r.get_header_value("Content-Length") + " bytes"
                                   : "more than " + std::to_string(limit) + " bytes";
            throw HttpError{413, "request body of " + size + " exceeds the server's limit of " +
                                     std::to_string(limit) + " bytes"};
          }
          if (!ok) throw HttpError{400, "could not read the request body"};
        }
        out.status = -1;
        fn(r, body, out);
      })(req, res);
    };
  }

  // The loaded model's config, or an HttpError (404 unknown, 503 not loaded,
  // 404 for a version that is not ready).
  ModelConfig RequireModel(const std::string& model, const std::string& version) const {
    std::optional<ModelConfig> config = core.Config(model);
    if (!config) {
      for (const auto& e : core.Index()) {
        if (e.name == model) {
          throw HttpError{503, "model '" + model + "' is not loaded (state " + e.state +
                                   (e.reason.empty() ? "" : ": " + e.reason) + ")"};
        }
      }
      throw HttpError{404, "unknown model: '" + model + "'"};
    }
    if (!version.empty() && !core.ModelReady(model, version)) {
      throw HttpError{404, "model '" + model + "' has no ready version '" + version + "'"};
    }
    return *config;
  }

  std::vector<std::string> ReadyVersions(const std::string& model) const {
    std::vector<std::string> versions;
    for (const auto& e : core.Index()) {
      if (e.name == model && e.state == "READY" && !e.version.empty()) versions.push_back(e.version);
    }
    return versions;
  }

  json StatsFor(const std::string& model, const std::string& version) const {
    std::optional<ModelStats> stats = core.Stats(model);
    if (!stats) throw HttpError{404, "unknown model: '" + model + "' (or it is not loaded)"};
    std::string v = version;
    if (v.empty()) {
      auto versions = ReadyVersions(model);
      if (!versions.empty()) v = versions.back();
    }
    return ModelStatsJson(model, v, *stats);
  }

  void Infer(const httplib::Request& req, const std::string& body, httplib::Response& res) {
    const auto received = std::chrono::steady_clock::now();
    std::string model = Match(req, 1), version = Match(req, 2);
    size_t limit = core.options().max_request_bytes;
    if (limit > 0 && body.size() > limit) {
      throw HttpError{413, "request body of " + std::to_string(body.size()) +
                               " bytes exceeds the server's limit of " + std::to_string(limit) +
                               " bytes"};
    }
    std::optional<size_t> header_length;
    if (req.has_header(kBinaryHeader)) {
      std::string value = req.get_header_value(kBinaryHeader);
      size_t parsed = 0;
      bool ok = !value.empty() && value.size() <= 19 &&
                value.find_first_not_of("0123456789") == std::string::npos;
      if (ok) parsed = std::stoull(value);
      if (!ok) throw HttpError{400, std::string(kBinaryHeader) + " must be a byte count, got '" + value + "'"};
      header_length = parsed;
    }
    ParsedInferRequest parsed;
    try {
      parsed = ParseInferRequest(body, header_length, model, version);
    } catch (const Error& e) {
      throw HttpError{400, e.what()};
    }
    parsed.request.received = received;
    InferResponse response = core.Infer(std::move(parsed.request));
    if (!response.status.ok()) {
      throw HttpError{HttpStatusOf(response.status.code), response.status.message};
    }
    if (response.model.empty()) response.model = model;
    if (response.version.empty()) response.version = version;
    FormattedResponse formatted = FormatInferResponse(response, parsed.format);
    res.status = 200;
    res.body = std::move(formatted.body);
    if (formatted.binary) {
      res.set_header(kBinaryHeader, std::to_string(formatted.header_length));
      res.set_header("Content-Type", "application/octet-stream");
    } else {
      res.set_header("Content-Type", kJson);
    }
  }

  // POST .../register's body: {"key": string, "offset": uint, "byte_size": uint}.
  void RegisterSharedMemory(const std::string& name, const std::string& text) {
    json body = OptionalJsonBody(text);
    auto number = [&](const char* key, bool required) -> uint64_t {
      auto it = body.find(key);
      if (it == body.end() || it->is_null()) {
        if (required) throw HttpError{400, std::string("register needs \"") + key + "\""};
        return 0;
      }
      if (!it->is_number_unsigned() && !(it->is_number_integer() && it->template get<int64_t>() >= 0))
        throw HttpError{400, std::string("\"") + key + "\" must be a non-negative integer"};
      return it->template get<uint64_t>();
    };
    auto key = body.find("key");
    if (key == body.end() || !key->is_string())
      throw HttpError{400, "register needs a string \"key\" (the shm_open name)"};
    Status status = core.RegisterSystemSharedMemory(name, key->template get<std::string>(),
                                                    number("offset", false),
                                                    number("byte_size", true));
    if (!status.ok()) throw HttpError{HttpStatusOf(status.code), status.message};
  }

  void SharedMemoryRoutes() {
    auto& s = http;
    auto status = [this](const std::string& name, httplib::Response& res) {
      std::vector<SharedMemoryRegionStatus> regions;
      Status st = core.SystemSharedMemoryStatus(name, &regions);
      if (!st.ok()) throw HttpError{HttpStatusOf(st.code), st.message};
      ReplyJson(res, 200, SharedMemoryStatusJson(regions));
    };
    s.Get("/v2/systemsharedmemory/status",
          Guard([status](const auto&, auto& res) { status("", res); }));
    s.Get(R"(/v2/systemsharedmemory/region/([^/]+)/status)",
          Guard([status](const auto& req, auto& res) { status(Match(req, 1), res); }));
    s.Post(R"(/v2/systemsharedmemory/region/([^/]+)/register)",
           GuardPost([this](const auto& req, const auto& text, auto& res) {
             RegisterSharedMemory(Match(req, 1), text);
             res.status = 200;
           }));
    auto unregister = [this](const std::string& name, const std::string& text,
                             httplib::Response& res) {
      OptionalJsonBody(text);
      Status st = core.UnregisterSystemSharedMemory(name);
      if (!st.ok()) throw HttpError{HttpStatusOf(st.code), st.message};
      res.status = 200;
    };
    s.Post("/v2/systemsharedmemory/unregister",
           GuardPost([unregister](const auto&, const auto& text, auto& res) {
             unregister("", text, res);
           }));
    s.Post(R"(/v2/systemsharedmemory/region/([^/]+)/unregister)",
           GuardPost([unregister](const auto& req, const auto& text, auto& res) {
             unregister(Match(req, 1), text, res);
           }));

    // CUDA shared memory (cudaIPC handles) is not supported: no region can
    // exist, so status lists none and unregister has nothing to do (clients
    // such as perf_analyzer unregister everything at start); register fails.
    s.Get("/v2/cudasharedmemory/status",
          Guard([](const auto&, auto& res) { ReplyJson(res, 200, json::array()); }));
    s.Get(R"(/v2/cudasharedmemory/region/([^/]+)/status)", Guard([](const auto& req, auto&) {
      throw HttpError{404, "unable to find cuda shared memory region: '" + Match(req, 1) +
                               "' (kiln does not support CUDA shared memory)"};
    }));
    s.Post(R"(/v2/cudasharedmemory/region/([^/]+)/register)",
           GuardPost([](const auto& req, const auto&, auto&) {
             throw HttpError{400, "cannot register cuda shared memory region '" + Match(req, 1) +
                                      "': CUDA shared memory is not supported by kiln; use "
                                      "system shared memory (v2/systemsharedmemory)"};
           }));
    s.Post(R"(/v2/cudasharedmemory(?:/region/([^/]+))?/unregister)",
           GuardPost([](const auto&, const auto& text, auto& res) {
             OptionalJsonBody(text);
             res.status = 200;
           }));
  }

  void Routes() {
    auto& s = http;
    SharedMemoryRoutes();
    s.Get("/v2/health/live", Guard([this](const auto&, auto& res) {
      bool live = core.Live();
      ReplyJson(res, live ? 200 : 503, {{"live", live}});
    }));
    s.Get("/v2/health/ready", Guard([this](const auto&, auto& res) {
      bool ready = core.Ready();
      ReplyJson(res, ready ? 200 : 503, {{"ready", ready}});
    }));
    s.Get("/v2", Guard([this](const auto&, auto& res) {
      ReplyJson(res, 200,
                ServerMetadataJson(core.ServerName(), core.ServerVersion(), core.Extensions()));
    }));

    // Statistics (before the metadata route, which would take "stats" for a model name).
    s.Get("/v2/models/stats", Guard([this](const auto&, auto& res) {
      json list = json::array();
      for (const auto& m : core.LoadedModels()) {
        if (core.Stats(m)) list.push_back(StatsFor(m, ""));
      }
      ReplyJson(res, 200, {{"model_stats", list}});
    }));
    s.Get(R"(/v2/models/([^/]+)(?:/versions/([^/]+))?/stats)",
          Guard([this](const auto& req, auto& res) {
            std::string model = Match(req, 1), version = Match(req, 2);
            RequireModel(model, version);
            ReplyJson(res, 200, {{"model_stats", json::array({StatsFor(model, version)})}});
          }));

    const std::string model_path = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
    s.Get(model_path, Guard([this](const auto& req, auto& res) {
      std::string model = Match(req, 1), version = Match(req, 2);
      ModelConfig config = RequireModel(model, version);
      ReplyJson(res, 200, ModelMetadataJson(config, ReadyVersions(model)));
    }));
    s.Get(model_path + "/ready", Guard([this](const auto& req, auto& res) {
      std::string model = Match(req, 1), version = Match(req, 2);
      bool ready = core.ModelReady(model, version);
      ReplyJson(res, ready ? 200 : 400, {{"name", model}, {"ready", ready}});
    }));
    s.Get(model_path + "/config", Guard([this](const auto& req, auto& res) {
      std::string model = Match(req, 1), version = Match(req, 2);
      ReplyJson(res, 200, ModelConfigJson(RequireModel(model, version)));
    }));
    s.Post(model_path + "/infer",
           GuardPost([this](const auto& req, const auto& body, auto& res) { Infer(req, body, res); }));

    // Repository extension.
    s.Post("/v2/repository/index", GuardPost([this](const auto&, const auto& text, auto& res) {
      json body = OptionalJsonBody(text);
      bool ready_only = false;
      if (auto it = body.find("ready"); it != body.end() && !it->is_null()) {
        if (!it->is_boolean()) throw HttpError{400, "\"ready\" must be a boolean"};
        ready_only = it->template get<bool>();
      }
      ReplyJson(res, 200, RepositoryIndexJson(core.Index(), ready_only));
    }));
    s.Post(R"(/v2/repository/models/([^/]+)/load)",
           GuardPost([this](const auto& req, const auto& text, auto& res) {
      json body = OptionalJsonBody(text);
      if (auto it = body.find("parameters"); it != body.end() && !it->is_null()) {
        if (!it->is_object()) throw HttpError{400, "\"parameters\" must be an object"};
        for (const auto& [key, value] : it->items()) {
          if (key == "config" || key.rfind("file:", 0) == 0) {
            throw HttpError{400, "load parameter '" + key +
                                     "' (overriding the model's config or files) is not "
                                     "supported by kiln; edit the model repository instead"};
          }
        }
      }
      Status status = core.Load(Match(req, 1));
      if (!status.ok()) throw HttpError{HttpStatusOf(status.code), status.message};
      res.status = 200;
    }));
    s.Post(R"(/v2/repository/models/([^/]+)/unload)",
           GuardPost([this](const auto& req, const auto& text, auto& res) {
      OptionalJsonBody(text);  // Rejects malformed JSON; unload_dependents has no meaning here.
      Status status = core.Unload(Match(req, 1));
      if (!status.ok()) throw HttpError{HttpStatusOf(status.code), status.message};
      res.status = 200;
    }));
  }

  // JSON error bodies for the replies cpp-httplib produces itself (unknown
  // route, payload too large, malformed HTTP).
  void ErrorBodies(httplib::Server& s) {
    s.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string message;
          switch (res.status) {
            case 404: message = "no such endpoint: " + req.method + " " + req.path; break;
            case 413:
              message = "request body of " +
                        (req.has_header("Content-Length") ? req.get_header_value("Content-Length")
                                                          : std::string("unknown size")) +
                        " bytes exceeds the server's limit of " +
                        std::to_string(core.options().max_request_bytes) + " bytes";
              break;
            case 414: message = "request URI too long"; break;
            case 400: message = "malformed HTTP request"; break;
            default: message = "HTTP error " + std::to_string(res.status); break;
          }
          res.body = ErrorJson(message);
          res.set_header("Content-Type", kJson);
          return httplib::Server::HandlerResponse::Handled;
        }));
    s.set_exception_handler([](const httplib::Request& req, httplib::Response& res,
                               std::exception_ptr) {
      ReplyError(res, 500, "internal error while handling " + req.method + " " + req.path);
    });
  }

  // cpp-httplib's default sets SO_REUSEPORT, which lets a second server bind
  // a port already in use and silently share its traffic: only reuse
  // TIME_WAIT addresses, so a taken port is a clear error.
  // Also records the listening socket in `listen_fd` (see Listen).
  static void SocketOptions(httplib::Server& s, std::atomic<int>* listen_fd) {
    s.set_socket_options([listen_fd](auto sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      *listen_fd = static_cast<int>(sock);
    });
  }

  void Configure() {
    SocketOptions(http, &http_listen_fd);
    SocketOptions(metrics, &metrics_listen_fd);
    http.new_task_queue = [n = thread_count] { return new httplib::ThreadPool(n); };
    if (core.options().max_request_bytes > 0) {
      http.set_payload_max_length(core.options().max_request_bytes);
    }
    http.set_keep_alive_max_count(1000);
    http.set_read_timeout(30, 0);
    http.set_write_timeout(30, 0);
    http.set_tcp_nodelay(true);
    ErrorBodies(http);
    Routes();

    metrics.new_task_queue = [] { return new httplib::ThreadPool(kMetricsThreads); };
    metrics.set_payload_max_length(1 << 20);
    ErrorBodies(metrics);
    metrics.Get("/metrics", Guard([this](const auto&, auto& res) {
      res.status = 200;
      res.body = core.MetricsText();
      res.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    }));
  }

  static void Listen(httplib::Server& server, int requested, const char* what, int& bound,
                     std::thread& thread, std::atomic<bool>& done,
                     const std::atomic<int>& listen_fd) {
    if (requested <= 0) return;
    KILN_CHECK(requested <= 65535, "invalid ", what, " port ", requested);
    if (!server.bind_to_port("0.0.0.0", requested)) {
      Fail("cannot listen for ", what, " on port ", requested,
           " (is another server using it?): ", std::strerror(errno));
    }
    // Debian's libcpp-httplib listens with a backlog of 5 (its compiled-in
    // CPPHTTPLIB_LISTEN_BACKLOG): hundreds of clients connecting at once
    // overflow it and some connections fail. listen() again raises it.
    if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
    bound = requested;
    done = false;
    thread = std::thread([&server, &done] {
      server.listen_after_bind();
      done = true;
    });
    // Stop() must not race the accept loop's start (stop() before it runs is a no-op).
    while (!server.is_running() && !done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    KILN_CHECK(!done, "the ", what, " server on port ", requested, " stopped right after starting");
  }
};

HttpFrontend::HttpFrontend(ServerCore& core, int http_port, int metrics_port, int thread_count)
    : impl_(std::make_unique<Impl>(core, http_port, metrics_port)) {
  KILN_CHECK(thread_count >= 1, "the HTTP frontend needs at least one thread, not ", thread_count);
  impl_->thread_count = static_cast<size_t>(thread_count);
  impl_->Configure();
}

HttpFrontend::~HttpFrontend() { Stop(); }

void HttpFrontend::Start() {
  Impl& i = *impl_;
  KILN_CHECK(!i.started, "the HTTP frontend was already started");
  i.started = true;
  try {
    Impl::Listen(i.http, i.requested_http_port, "HTTP", i.http_port, i.http_thread, i.http_done,
                 i.http_listen_fd);
    Impl::Listen(i.metrics, i.requested_metrics_port, "metrics", i.metrics_port, i.metrics_thread,
                 i.metrics_done, i.metrics_listen_fd);
  } catch (...) {
    Stop();
    throw;
  }
}

void HttpFrontend::Stop() {
  Impl& i = *impl_;
  for (auto* pair : {&i.http, &i.metrics}) pair->stop();
  if (i.http_thread.joinable()) i.http_thread.join();
  if (i.metrics_thread.joinable()) i.metrics_thread.join();
}

int HttpFrontend::port() const { return impl_->http_port; }
int HttpFrontend::metrics_port() const { return impl_->metrics_port; }

}  // namespace kiln::serve
