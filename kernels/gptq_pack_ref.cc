#include "kernels/gptq_pack.h"

#include <algorithm>
#include <string>
#include <vector>

#include "common/gptq_format.h"

namespace ptq::kernels {

const char* GptqPackArgsError(const GptqPackArgs& a) {
  if (a.rows < 0 || a.cols < 0) return "negative size";
  if (!gptq::SupportedBits(a.bits)) return "bits must be 2, 3, 4 or 8";
  if ((a.rows * a.bits) % 32 != 0) return "rows * bits is not a multiple of 32";
  if (a.rows * a.cols > 0 && (a.codes == nullptr || a.packed == nullptr)) return "null pointer";
  return nullptr;
}

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
