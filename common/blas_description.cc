#include "common/blas_description.h"

#include <dlfcn.h>

namespace ptq {

std::string LoadedBlasDescription() {
  using CharFunction = char* (*)();
  const auto config = reinterpret_cast<CharFunction>(::dlsym(RTLD_DEFAULT, "openblas_get_config"));
  return config == nullptr ? "" : config();
}

}  // namespace ptq
