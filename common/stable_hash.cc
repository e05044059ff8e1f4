#include "common/stable_hash.h"

// Header-only use of Debian's libxxhash-dev: nothing to link, on GPU machines too.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace ptq {

uint64_t StableHash64(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

struct StableHasher::State {
  XXH3_state_t xxh;
};

StableHasher::StableHasher() : state_(std::make_unique<State>()) { XXH3_64bits_reset(&state_->xxh); }
StableHasher::~StableHasher() = default;

void StableHasher::Add(const void* data, size_t n) { XXH3_64bits_update(&state_->xxh, data, n); }

uint64_t StableHasher::value() const { return XXH3_64bits_digest(&state_->xxh); }

}  // namespace ptq
