#include <iostream>

#include <zctl/sink.h>

#include "commands.hpp"

namespace zctl::cli {

Runner register_completion(CLI::App& app) {
  auto shell = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("completion", "Print the shell completion script");
  cmd->add_option("SHELL", *shell, "bash, zsh or fish")->required()->check(CLI::IsMember({"bash", "zsh", "fish"}));
  cmd->footer("Examples:\n  source <(zctl completion bash)\n  zctl completion fish > ~/.config/fish/completions/zctl.fish");
  return [shell] {
    std::cout << completion_script(*shell);
    return static_cast<int>(kExitOk);
  };
}

Runner register_version(CLI::App& app) {
  app.add_subcommand("version", "Print the version and the plugin ABI version");
  return [] {
    std::cout << "zctl " << ZCTL_VERSION << "\nsink plugin ABI " << ZCTL_SINK_ABI_MAJOR << "." << ZCTL_SINK_ABI_MINOR
              << "\n";
    return static_cast<int>(kExitOk);
  };
}

}  // namespace zctl::cli
