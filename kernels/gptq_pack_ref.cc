#include "kernels/gptq_pack.h"

#include <algorithm>
#include <string>
#include <vector>

#include "common/gptq_format.h"

namespace ptq::kernels {

absl::Status GptqPackRef(const GptqPackArgs& a) {
  if (const char* e = GptqPackArgsError(a)) {
    return absl::InvalidArgumentError(std::string("GptqPackRef: ") + e);
  }
  std::vector<uint8_t> values(a.codes, a.codes + a.rows * a.cols);
  auto packed = gptq::PackRows(values, a.rows, a.cols, a.bits);
  if (!packed.ok()) return packed.status();
  std::copy(packed->begin(), packed->end(), a.packed);
  return absl::OkStatus();
}

}  // namespace ptq::kernels
