#include "client/quantize_flags.h"

#include <string>
#include <type_traits>

namespace ptq::client {

void AddQuantizeFlags(CLI::App* command, QuantizeOptions* options) {
  VisitQuantizeOptions(*options, [command](const OptionField& f, auto& member) {
    if (f.flag.empty()) return;  // API only
    using T = std::decay_t<decltype(member)>;
    const std::string flag(f.flag);
    const std::string help(f.help);
    if constexpr (std::is_same_v<T, bool>) {
      if (f.negated) {
        command->add_flag_callback(flag, [&member] { member = false; }, help);
      } else {
        command->add_flag(flag, member, help);
      }
    } else {
      CLI::Option* option = command->add_option(flag, member, help);
      if (f.required) option->required();
      if (f.show_default && !f.required) option->capture_default_str();
    }
  });
  // The value block was on by default until the two-stage scales made the shared H_in the better
  // choice; command lines written then keep their meaning.
  CLI::Option* no_value_block = command->add_flag_callback(
      "--no-value-block", [options] { options->value_block = false; },
      "the default (the value block is off unless --value-block)");
  no_value_block->group("");  // hidden from --help
  if (CLI::Option* value_block = command->get_option_no_throw("--value-block")) {
    no_value_block->excludes(value_block);
  }
}

}  // namespace ptq::client
