// The flags of a quantization job, shared by `ptq quantize` (runs it here) and `ptq submit` (sends it
// to a coordinator), so both accept exactly the same options with the same defaults.
#pragma once

#include <CLI/CLI.hpp>

#include "worker/quantize_pipeline.h"

namespace ptq::client {

struct QuantizeFlags {
  worker::QuantizeOptions options;
  bool skip_fp_eval = false;
  bool no_value_block = false;
  bool no_sequential = false;

  // The options as parsed. REQUIRES: the command line has been parsed.
  worker::QuantizeOptions Options() const {
    worker::QuantizeOptions o = options;
    o.eval_fp = !skip_fp_eval;
    o.value_block = !no_value_block;
    o.sequential = !no_sequential;
    return o;
  }
};

// Adds the job's options to `command`; values land in `*flags` when the command line is parsed.
// REQUIRES: `flags` outlives the parse.
void AddQuantizeFlags(CLI::App* command, QuantizeFlags* flags);

}  // namespace ptq::client
