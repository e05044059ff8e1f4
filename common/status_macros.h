// Status propagation macros. Abseil 20220623 (Debian 12) has no public RETURN_IF_ERROR, so the
// project keeps its own two here.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PTQ_STATUS_CONCAT_INNER(a, b) a##b
#define PTQ_STATUS_CONCAT(a, b) PTQ_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define PTQ_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    ::absl::Status ptq_status_ = (expr);          \
    if (!ptq_status_.ok()) return ptq_status_;    \
  } while (0)

// `lhs = value of expr` (an absl::StatusOr<T>), or returns its error.
#define PTQ_ASSIGN_OR_RETURN(lhs, expr) \
  PTQ_ASSIGN_OR_RETURN_IMPL(PTQ_STATUS_CONCAT(ptq_statusor_, __LINE__), lhs, expr)
#define PTQ_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                              \
  if (!tmp.ok()) return tmp.status();             \
  lhs = std::move(tmp).value()
