#include "core/checkpoint/dense_export.h"

#include <ATen/ATen.h>


#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model_files.h"
#include "common/safetensors_writer.h"
#include "common/status_macros.h"
#include "core/checkpoint/output_folder.h"
#include "core/checkpoint/sharded_safetensors.h"
#include "core/checkpoint/tensor_bytes.h"
#include "core/model/llama_model.h"
#include "nlohmann/json.hpp"

namespace ptq {
namespace {

// The tensors of a quantized linear P, by the suffix after "P."; the first of each format names it.
constexpr const char* kPackedSuffixes[] = {".qweight", ".qzeros", ".scales", ".g_idx",
                                           ".weight_packed", ".weight_scale", ".weight_zero_point",
                                           ".weight_shape", ".weight_g_idx"};

}  // namespace

absl::Status WriteDenseCopy(const std::string& checkpoint_dir, const std::string& out_dir, bool force) {
  PTQ_ASSIGN_OR_RETURN(auto model, LlamaModel::Open(checkpoint_dir));
  PTQ_ASSIGN_OR_RETURN(auto files, ModelFiles::Open(checkpoint_dir));
  PTQ_ASSIGN_OR_RETURN(OutputFolder output, OutputFolder::Prepare(out_dir, force));
  SafetensorsWriter writer;
  for (const std::string& name : files->TensorNames()) {
    std::string dense = name;
    bool packed_part = false;
    for (const char* suffix : kPackedSuffixes) {
      if (absl::EndsWith(name, suffix)) {
        packed_part = true;
        const bool first = std::string(suffix) == ".qweight" || std::string(suffix) == ".weight_packed";
        dense = first ? name.substr(0, name.size() - std::string(suffix).size()) + ".weight" : "";
      }
    }
    if (!packed_part) {  // copied as it is
      PTQ_ASSIGN_OR_RETURN(TensorView view, files->Get(name));
      PTQ_RETURN_IF_ERROR(writer.AddTensor(name, view.dtype, view.shape,
                                           std::vector<uint8_t>(view.data, view.data + view.num_bytes)));
      continue;
    }
    if (dense.empty()) continue;
    PTQ_ASSIGN_OR_RETURN(at::Tensor w, model->weights().LoadFloat(dense));
    PTQ_RETURN_IF_ERROR(writer.AddTensor(dense, DType::kF32, w.sizes().vec(), TensorBytes(w)));
  }
  PTQ_RETURN_IF_ERROR(writer.Finish(output.staging_dir() + "/model.safetensors"));
  PTQ_ASSIGN_OR_RETURN(std::string text, ReadFileToString(checkpoint_dir + "/config.json"));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) return absl::InvalidArgumentError(checkpoint_dir + "/config.json is not an object");
  if (config.contains("quantization_config")) {
    config["ptq_dequantized_from"] = config["quantization_config"];
    config.erase("quantization_config");
  }
  config["torch_dtype"] = "float32";
  PTQ_RETURN_IF_ERROR(WriteFileAtomically(output.staging_dir() + "/config.json", config.dump(2) + "\n"));
  PTQ_RETURN_IF_ERROR(CopyTokenizerFiles(checkpoint_dir, output.staging_dir()));
  return output.Commit();
}

}  // namespace ptq
