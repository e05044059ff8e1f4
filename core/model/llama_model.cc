#include "core/model/llama_model.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "common/model_files.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "core/checkpoint/compressed_tensors_weight_source.h"
#include "core/checkpoint/gptq_weight_source.h"
#include "core/model/llama_block.h"

namespace ptq {

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Open(const std::string& model_dir) {
  PTQ_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(model_dir));
  PTQ_ASSIGN_OR_RETURN(std::unique_ptr<ModelFiles> files, ModelFiles::Open(model_dir));
  std::shared_ptr<const ModelFiles> shared(std::move(files));
  if (absl::Status names = CheckBlockTensorNames(config, shared->TensorNames()); !names.ok()) {
    return absl::Status(names.code(), absl::StrCat(model_dir, ": ", names.message()));
  }
  // A quantized checkpoint says so in config.json; its weights are dequantized as they load.
  PTQ_ASSIGN_OR_RETURN(std::string text, ReadFileToString(model_dir + "/config.json"));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("quantization_config")) {
    const nlohmann::json& qc = j["quantization_config"];
    if (qc.is_object() && qc.contains("quant_method") && qc["quant_method"] == "compressed-tensors") {
      auto ct = ParseCompressedTensorsConfig(qc.dump());
      if (!ct.ok()) {
        return absl::Status(ct.status().code(), absl::StrCat(model_dir, ": ", ct.status().message()));
      }
      return std::make_unique<LlamaModel>(std::move(config),
                                          std::make_unique<CompressedTensorsWeightSource>(shared, *ct));
    }
    auto gptq = ParseGptqConfig(qc.dump());
    if (!gptq.ok()) {
      return absl::Status(gptq.status().code(),
                          absl::StrCat(model_dir, ": ", gptq.status().message()));
    }
    return std::make_unique<LlamaModel>(std::move(config),
                                        std::make_unique<GptqWeightSource>(shared, *gptq));
  }
  return std::make_unique<LlamaModel>(std::move(config),
                                      std::make_unique<SafetensorsWeightSource>(shared));
}

absl::Status LlamaModel::LoadEnds() {
  if (embed_.defined()) {
    if (embed_.device() != device_) {  // moved since the first use
      embed_ = embed_.to(device_);
      norm_ = norm_.to(device_);
      head_ = head_.to(device_);
    }
    return absl::OkStatus();
  }
  PTQ_ASSIGN_OR_RETURN(embed_, weights_->LoadFloat("model.embed_tokens.weight"));
  if (embed_.dim() != 2 || embed_.size(0) != config_.vocab_size ||
      embed_.size(1) != config_.hidden_size) {
    return absl::InvalidArgumentError("model.embed_tokens.weight does not match config.json");
  }
  PTQ_ASSIGN_OR_RETURN(norm_, weights_->LoadFloat("model.norm.weight"));
  if (config_.tie_word_embeddings || !weights_->Has("lm_head.weight")) {
    if (!config_.tie_word_embeddings) {
      return absl::NotFoundError("model has no lm_head.weight and tie_word_embeddings is false");
    }
    head_ = embed_;
  } else {
    PTQ_ASSIGN_OR_RETURN(head_, weights_->LoadFloat("lm_head.weight"));
    if (head_.sizes() != embed_.sizes()) {
      return absl::InvalidArgumentError("lm_head.weight does not match config.json");
    }
  }
  const bool tied = head_.is_same(embed_);
  embed_ = embed_.to(device_);
  norm_ = norm_.to(device_);
  head_ = tied ? embed_ : head_.to(device_);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> LlamaModel::Embed(const at::Tensor& ids) {
  PTQ_RETURN_IF_ERROR(LoadEnds());
  return at::embedding(embed_, ids.to(device_));
}

absl::StatusOr<BlockWeights> LlamaModel::Block(int64_t layer) const {
  PTQ_ASSIGN_OR_RETURN(BlockWeights w, LoadBlockWeights(*weights_, config_, layer));
  return w.To(device_);
}

absl::StatusOr<at::Tensor> LlamaModel::Logits(const at::Tensor& hidden) {
  PTQ_RETURN_IF_ERROR(LoadEnds());
  return at::linear(RmsNorm(hidden, norm_, config_.rms_norm_eps), head_);
}

}  // namespace ptq
