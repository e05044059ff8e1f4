// LibTorch reports bad shapes, devices and allocations by throwing c10::Error; no entry point may
// let one escape (the process would abort with a backtrace instead of an error line).
#pragma once

#include <exception>
#include <type_traits>

#include <c10/util/Exception.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace ptq {

// fn() -> absl::Status or absl::StatusOr<T>; an exception becomes InternalError with its message.
template <typename Fn>
auto CatchTorchErrors(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

}  // namespace ptq
