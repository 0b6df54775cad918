#include <iostream>

#include "commands.hpp"
#include "zctl/core/config.hpp"

namespace zctl::cli {

Runner register_config(CLI::App& app) {
  auto file = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("config", "Work with configuration files");
  cmd->require_subcommand(1);
  auto* check = cmd->add_subcommand("check", "Validate a config file and report every error with line:column");
  check->add_option("FILE", *file, "YAML config file")->required();
  check->footer("Exit status 0 when valid, 1 when not.\n\nExample:\n  zctl config check /etc/zctl/zctl.yaml");
  return [file]() -> int {
    const auto parsed = load_config_file(*file);
    if (parsed.config) {
      const size_t sinks = parsed.config->sinks.size();
      std::cout << *file << ": valid ("
                << (parsed.config->sinks_given
                        ? std::to_string(sinks) + (sinks == 1 ? " sink" : " sinks")
                        : std::string("no sinks: the default file sink writes <data_dir>/events.jsonl"))
                << ")\n";
      return kExitOk;
    }
    for (const auto& e : parsed.errors) std::cerr << format_config_error(e, *file) << "\n";
    std::cerr << *file << ": invalid (" << parsed.errors.size() << " error" << (parsed.errors.size() == 1 ? "" : "s")
              << ")\n";
    return kExitCheckFailed;
  };
}

}  // namespace zctl::cli
