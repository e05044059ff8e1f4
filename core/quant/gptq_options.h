// GPTQ's settings (docs/algorithms.md, "GPTQ"): the grid, groups, column order and damping. No
// LibTorch: the job options (core/pipeline/quantize_options.h) hold them.
#pragma once

#include <cstdint>

#include "core/quant/quant_grid.h"

namespace ptq {

struct GptqOptions {
  GridOptions grid;
  int64_t group_size = 128;  // <= 0 or >= in: one grid per row
  bool act_order = false;    // quantize columns by decreasing H_ii
  bool static_groups = false;  // group grids from the original weights, fixed before the loop
  double damp = 0.01;        // lambda: H += lambda * mean(diag H) * I
  int64_t block_size = 128;  // lazy-update block (rounded to whole groups)
};

}  // namespace ptq
