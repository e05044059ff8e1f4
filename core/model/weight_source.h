// Where a model's tensors come from, as float32 LibTorch tensors. The forward, the evaluator and the
// quantizer read weights only through this interface, so a plain Hugging Face folder, a GPTQ
// checkpoint (dequantized on load) and in-memory overrides look alike.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "common/model_files.h"

namespace ptq {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool Has(const std::string& name) const = 0;
  // A float32 copy of the tensor, on the CPU.
  virtual absl::StatusOr<at::Tensor> LoadFloat(const std::string& name) const = 0;
};

// Converts a safetensors view (F32, F16, BF16, F64, I32, I64, U8, I8) into a float32 tensor copy.
absl::StatusOr<at::Tensor> TensorFromView(const TensorView& view);
// A tensor that shares the view's memory without copying (keeps the view's dtype). The caller keeps
// the map alive for as long as the tensor is used.
absl::StatusOr<at::Tensor> BorrowTensor(const TensorView& view);

// Reads the safetensors files of a Hugging Face model folder.
class SafetensorsWeightSource final : public WeightSource {
 public:
  explicit SafetensorsWeightSource(std::shared_ptr<const ModelFiles> files)
      : files_(std::move(files)) {}
  bool Has(const std::string& name) const override { return files_->Has(name); }
  absl::StatusOr<at::Tensor> LoadFloat(const std::string& name) const override;

 private:
  std::shared_ptr<const ModelFiles> files_;
};

// Tensors set in memory take precedence over those of the base source.
class OverlayWeightSource final : public WeightSource {
 public:
  explicit OverlayWeightSource(const WeightSource* base) : base_(base) {}
  void Set(const std::string& name, at::Tensor value) { overrides_[name] = std::move(value); }
  bool Has(const std::string& name) const override;
  absl::StatusOr<at::Tensor> LoadFloat(const std::string& name) const override;

 private:
  const WeightSource* base_;
  std::map<std::string, at::Tensor> overrides_;
};

}  // namespace ptq
