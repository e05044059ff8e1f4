// libFuzzer target: the whole checkpoint reader - what `ptq eval` and the pipeline do with a model
// folder they are handed: config.json (with or without a GPTQ quantization_config), one
// model.safetensors or an index with shards, every tensor of the ends and of each block loaded and
// (for GPTQ) dequantized. Must never crash, read out of bounds or throw; whatever loads must have the
// shapes config.json promises.
//
// Input: a folder packed as sections, each a line "%%%% NAME" followed by the file's bytes. Only the
// names a model folder uses are written (others are ignored), into a fresh folder under /dev/shm.
#include <unistd.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/model/llama_model.h"

namespace {

constexpr std::string_view kMarker = "%%%% ";
constexpr std::string_view kNames[] = {
    "config.json", "model.safetensors", "model.safetensors.index.json",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};

std::filesystem::path FolderForThisProcess() {
  std::filesystem::path dir = std::filesystem::path(std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp") /
                              ("ptq-checkpoint-fuzz-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

void Unpack(std::string_view input, const std::filesystem::path& dir) {
  for (std::string_view name : kNames) std::filesystem::remove(dir / name);
  size_t at = input.find(kMarker);
  while (at != std::string_view::npos) {
    const size_t name_begin = at + kMarker.size();
    const size_t name_end = input.find('\n', name_begin);
    if (name_end == std::string_view::npos) return;
    const std::string_view name = input.substr(name_begin, name_end - name_begin);
    size_t next = input.find(std::string("\n").append(kMarker), name_end);
    const size_t body_end = next == std::string_view::npos ? input.size() : next;
    for (std::string_view allowed : kNames) {
      if (name == allowed) {
        std::ofstream(dir / std::string(name), std::ios::binary)
            .write(input.data() + name_end + 1, static_cast<std::streamsize>(body_end - name_end - 1));
      }
    }
    at = next == std::string_view::npos ? next : next + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path dir = FolderForThisProcess();
  Unpack(std::string_view(reinterpret_cast<const char*>(data), size), dir);
  auto model = ptq::LlamaModel::Open(dir.string());
  if (!model.ok()) return 0;
  const ptq::ModelConfig& c = (*model)->config();
  // The ends: an embedding lookup of token 0 and the head on its output.
  auto hidden = (*model)->Embed(at::zeros({1, 1}, at::kLong));
  if (hidden.ok()) {
    if (hidden->sizes() != at::IntArrayRef({1, 1, c.hidden_size})) __builtin_trap();
    auto logits = (*model)->Logits(*hidden);
    if (logits.ok() && logits->sizes() != at::IntArrayRef({1, 1, c.vocab_size})) __builtin_trap();
  }
  // A config may promise many layers; the first few show whatever a lying file can do.
  for (int64_t layer = 0; layer < std::min<int64_t>(c.num_hidden_layers, 4); ++layer) {
    auto block = (*model)->Block(layer);
    if (!block.ok()) continue;
    if (block->q.size(1) != c.hidden_size || block->down.size(0) != c.hidden_size) {
      __builtin_trap();
    }
  }
  return 0;
}
