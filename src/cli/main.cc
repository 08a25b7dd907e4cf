// The kiln command line: inspect, run (and later build, bench, serve).
#include <iostream>

#include <CLI/CLI.hpp>

#include "kiln/kiln.h"

int main(int argc, char** argv) {
  CLI::App app{"kiln: ONNX inference compiler, runtime, profiler and server"};
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
