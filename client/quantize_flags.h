// The flags of a quantization job, shared by `ptq quantize` (runs it here) and `ptq submit` (sends it
// to a coordinator), so both accept exactly the same options with the same defaults. Derived from the
// option list in core/pipeline/quantize_options.h; no LibTorch.
#pragma once

#include <CLI/CLI.hpp>

#include "core/pipeline/quantize_options.h"

namespace ptq::client {

// Adds every job option that has a flag to `command`; values land in `*options` when the command
// line is parsed. REQUIRES: `options` outlives the parse.
void AddQuantizeFlags(CLI::App* command, QuantizeOptions* options);

}  // namespace ptq::client
