#include "core/model/weight_source.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ptq {

absl::StatusOr<at::Tensor> BorrowTensor(const TensorView& view) {
  at::ScalarType type;
  switch (view.dtype) {
    case DType::kF32: type = at::kFloat; break;
    case DType::kF16: type = at::kHalf; break;
    case DType::kBF16: type = at::kBFloat16; break;
    case DType::kF64: type = at::kDouble; break;
    case DType::kI32: type = at::kInt; break;
    case DType::kI64: type = at::kLong; break;
    case DType::kI16: type = at::kShort; break;
    case DType::kI8: type = at::kChar; break;
    case DType::kU8: type = at::kByte; break;
    case DType::kBool: type = at::kBool; break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("tensor ", view.name, ": unsupported dtype"));
  }
  // The map is read-only; from_blob needs a non-const pointer but nothing here writes through it.
  return at::from_blob(const_cast<uint8_t*>(view.data), view.shape, at::TensorOptions().dtype(type));
}

absl::StatusOr<at::Tensor> TensorFromView(const TensorView& view) {
  PTQ_ASSIGN_OR_RETURN(at::Tensor borrowed, BorrowTensor(view));
  if (borrowed.scalar_type() == at::kFloat) return borrowed.clone();
  return borrowed.to(at::kFloat);
}

absl::StatusOr<at::Tensor> SafetensorsWeightSource::LoadFloat(const std::string& name) const {
  PTQ_ASSIGN_OR_RETURN(TensorView view, files_->Get(name));
  return TensorFromView(view);
}

bool OverlayWeightSource::Has(const std::string& name) const {
  return overrides_.count(name) > 0 || base_->Has(name);
}

absl::StatusOr<at::Tensor> OverlayWeightSource::LoadFloat(const std::string& name) const {
  auto it = overrides_.find(name);
  if (it != overrides_.end()) return it->second.clone();
  return base_->LoadFloat(name);
}

}  // namespace ptq
