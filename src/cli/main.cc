// The kiln command line: inspect, run, build, bench, serve, perf. Each
// subcommand lives in its own file and registers itself here.
#include <exception>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/cli_util.h"
#include "kiln/error.h"

int main(int argc, char** argv) {
  CLI::App app{"kiln: ONNX inference compiler, runtime, profiler and server"};
  app.require_subcommand(1);
  int exit_code = 0;
  kiln::cli::AddInspectCommand(app, exit_code);
  kiln::cli::AddRunCommand(app, exit_code);
  kiln::cli::AddBuildCommand(app, exit_code);
  kiln::cli::AddBenchCommand(app, exit_code);
  kiln::cli::AddServeCommand(app, exit_code);
  kiln::cli::AddPerfCommand(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Prints help (exit 0) or the usage error; every failure exits 1.
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    // kiln::Error carries a message meant for the user; anything else (a bad
    // allocation, a filesystem error) is reported the same way, never crashes.
    std::cerr << "kiln: error: " << e.what() << "\n";
    return 1;
  }
  return exit_code;
}
