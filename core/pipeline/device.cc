#include "core/pipeline/device.h"

#include <ATen/Context.h>

#include "absl/strings/str_cat.h"
#include "core/pipeline/quantize_options.h"

namespace ptq {

absl::StatusOr<c10::Device> ResolveDevice(const std::string& name) {
  absl::StatusOr<int> index = ParseDeviceName(name);
  if (!index.ok()) return index.status();
  if (*index < 0) return c10::Device(c10::kCPU);
  if (!at::hasCUDA()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device ", name, ": no CUDA device is usable here: this LibTorch was built without CUDA "
        "(Debian's libtorch is CPU-only; build against PyTorch's CUDA libtorch, docs/gpu.md) or no "
        "GPU is visible (driver, CUDA_VISIBLE_DEVICES)"));
  }
  const int count = static_cast<int>(at::getNumGPUs());
  if (*index >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device ", name, ": only ", count, " CUDA device(s) are visible"));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(*index));
}

}  // namespace ptq
