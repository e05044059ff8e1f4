// libFuzzer target: config.json parsing on arbitrary text. Must never crash; an accepted config must
// satisfy the invariants the forward relies on.
#include <cstdint>
#include <string>

#include "common/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto c = ptq::ParseModelConfig(std::string(reinterpret_cast<const char*>(data), size));
  if (c.ok()) {
    if (c->hidden_size <= 0 || c->num_attention_heads <= 0 || c->num_key_value_heads <= 0) __builtin_trap();
    if (c->num_attention_heads % c->num_key_value_heads != 0) __builtin_trap();
    if (c->head_dim <= 0 || c->head_dim % 2 != 0) __builtin_trap();
  }
  return 0;
}
