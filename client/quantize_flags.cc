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
}

}  // namespace ptq::client
