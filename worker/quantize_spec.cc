#include "worker/quantize_spec.h"

#include <filesystem>
#include <type_traits>

#include <google/protobuf/descriptor.h>

#include "absl/strings/str_cat.h"
#include "common/model_config.h"

namespace ptq::worker {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Reflection;

absl::Status Invalid(const std::string& field, const absl::Status& status) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", status.message()));
}

absl::Status CheckReadableFile(const std::string& field, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", path, " is not a readable file"));
  }
  return absl::OkStatus();
}

// The JobSpec field an option row names. Its existence and type are checked for every row by
// tests/worker/quantize_spec_test.cc, so a mismatch cannot ship.
const FieldDescriptor* SpecField(const OptionField& f) {
  return v1::JobSpec::descriptor()->FindFieldByName(std::string(f.name));
}

template <typename T>
void SetField(v1::JobSpec& spec, const FieldDescriptor* field, const T& value) {
  const Reflection* r = spec.GetReflection();
  if constexpr (std::is_same_v<T, std::string>) r->SetString(&spec, field, value);
  else if constexpr (std::is_same_v<T, bool>) r->SetBool(&spec, field, value);
  else if constexpr (std::is_same_v<T, int>) r->SetInt32(&spec, field, value);
  else if constexpr (std::is_same_v<T, int64_t>) r->SetInt64(&spec, field, value);
  else if constexpr (std::is_same_v<T, uint64_t>) r->SetUInt64(&spec, field, value);
  else if constexpr (std::is_same_v<T, double>) r->SetDouble(&spec, field, value);
  else static_assert(sizeof(T) == 0, "an option type JobSpec cannot carry");
}

template <typename T>
T GetField(const v1::JobSpec& spec, const FieldDescriptor* field) {
  const Reflection* r = spec.GetReflection();
  if constexpr (std::is_same_v<T, std::string>) return r->GetString(spec, field);
  else if constexpr (std::is_same_v<T, bool>) return r->GetBool(spec, field);
  else if constexpr (std::is_same_v<T, int>) return r->GetInt32(spec, field);
  else if constexpr (std::is_same_v<T, int64_t>) return r->GetInt64(spec, field);
  else if constexpr (std::is_same_v<T, uint64_t>) return r->GetUInt64(spec, field);
  else if constexpr (std::is_same_v<T, double>) return r->GetDouble(spec, field);
  else static_assert(sizeof(T) == 0, "an option type JobSpec cannot carry");
}

}  // namespace

v1::JobSpec SpecFromQuantizeOptions(const QuantizeOptions& options) {
  v1::JobSpec spec;
  VisitQuantizeOptions(options, [&spec](const OptionField& f, const auto& value) {
    using T = std::decay_t<decltype(value)>;
    const FieldDescriptor* field = SpecField(f);
    if (field == nullptr) return;
    if constexpr (std::is_same_v<T, bool>) {
      SetField(spec, field, f.negated ? !value : value);
    } else {
      SetField(spec, field, value);
    }
  });
  return spec;
}

QuantizeOptions QuantizeOptionsFromSpec(const v1::JobSpec& spec) {
  QuantizeOptions options;  // its defaults are the API's defaults
  const Reflection* r = spec.GetReflection();
  VisitQuantizeOptions(options, [&](const OptionField& f, auto& member) {
    using T = std::decay_t<decltype(member)>;
    const FieldDescriptor* field = SpecField(f);
    if (field == nullptr) return;
    // Unset: an `optional` field not present, or an empty string.
    if (field->has_presence() && !r->HasField(spec, field)) return;
    const T value = GetField<T>(spec, field);
    if constexpr (std::is_same_v<T, std::string>) {
      if (!value.empty()) member = value;
    } else if constexpr (std::is_same_v<T, bool>) {
      member = f.negated ? !value : value;
    } else {
      member = value;
    }
  });
  return options;
}

absl::Status ValidateQuantizeSpec(const v1::JobSpec& spec) {
  if (spec.model_path().empty()) return absl::InvalidArgumentError("model_path is required");
  if (spec.calib_path().empty()) return absl::InvalidArgumentError("calib_path is required");
  if (spec.output_path().empty()) return absl::InvalidArgumentError("output_path is required");
  auto config = LoadModelConfig(spec.model_path());
  if (!config.ok()) return Invalid("model_path", config.status());
  if (auto s = CheckReadableFile("calib_path", spec.calib_path()); !s.ok()) return s;
  if (!spec.eval_path().empty()) {
    if (auto s = CheckReadableFile("eval_path", spec.eval_path()); !s.ok()) return s;
  }
  if (!spec.force()) {
    // The cheap half of the check OutputFolder makes when the job starts: refusing now saves a
    // wait in the queue.
    std::error_code ec;
    const std::filesystem::path out(spec.output_path());
    if (std::filesystem::exists(out / "config.json", ec)) {
      return absl::InvalidArgumentError(absl::StrCat("output_path ", spec.output_path(),
                                                     " already holds a model (use --force to replace it)"));
    }
  }
  if (auto s = ValidateQuantizeOptions(QuantizeOptionsFromSpec(spec), *config); !s.ok()) {
    return absl::InvalidArgumentError(s.message());
  }
  return absl::OkStatus();
}

}  // namespace ptq::worker
