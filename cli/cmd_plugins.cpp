#include <iostream>
#include <optional>

#include "commands.hpp"
#include "zctl/core/config.hpp"
#include "zctl/core/plugin_host.hpp"

namespace zctl::cli {

namespace {

struct PluginsOptions {
  std::string config_file;
  std::string path;
  bool json = false;
};

void print_info(const PluginInfo& p) {
  if (!p.valid) {
    std::cout << p.path << "\n  INVALID: " << p.error << "\n";
    return;
  }
  std::cout << p.name << " " << p.version << "  (ABI " << p.abi_major << "." << p.abi_minor << ")\n"
            << "  path         " << p.path << "\n"
            << "  description  " << p.description << "\n"
            << "  capabilities" << ((p.capabilities & ZCTL_SINK_CAP_ASYNC_COMPLETION) ? " async-completion" : "")
            << ((p.capabilities & ZCTL_SINK_CAP_REOPEN) ? " reopen" : "") << (p.capabilities == 0 ? " -" : "")
            << "\n";
}

// The search path from the config (or the defaults); nullopt when the config is invalid.
std::optional<std::vector<std::string>> search_path(const PluginsOptions& o) {
  Config config;
  if (!o.config_file.empty()) {
    auto parsed = load_config_file(o.config_file);
    if (!parsed.config) {
      for (const auto& e : parsed.errors) std::cerr << format_config_error(e, o.config_file) << "\n";
      return std::nullopt;
    }
    config = *parsed.config;
  }
  resolve_defaults(config, executable_dir());
  return config.plugins.path;
}

}  // namespace

Runner register_plugins(CLI::App& app) {
  auto o = std::make_shared<PluginsOptions>();
  auto* cmd = app.add_subcommand("plugins", "List and inspect sink plugins");
  cmd->require_subcommand(1);
  cmd->footer("Examples:\n  zctl plugins list\n  zctl plugins info /usr/lib/zctl/plugins/file.so");
  auto* list = cmd->add_subcommand("list", "List the plugins found in plugins.path, valid or not");
  list->add_option("-c,--config", o->config_file, "Take plugins.path from this config")->check(CLI::ExistingFile);
  auto* info = cmd->add_subcommand("info", "Load one plugin file and show its descriptor or why it is refused");
  info->add_option("PATH", o->path, "Plugin file (.so)")->required();
  return [o, list, info]() -> int {
    if (info->parsed()) {
      const PluginInfo p = PluginHost::inspect(o->path);
      print_info(p);
      return p.valid ? kExitOk : kExitCheckFailed;
    }
    (void)list;
    const auto path = search_path(*o);
    if (!path) return kExitCheckFailed;
    const auto found = PluginHost(*path).discover();
    std::cout << "plugins.path:";
    for (const auto& dir : *path) std::cout << " " << dir;
    std::cout << "\n\n";
    if (found.empty()) std::cout << "no plugins found\n";
    bool all_valid = true;
    for (const auto& p : found) {
      print_info(p);
      all_valid = all_valid && p.valid;
    }
    return all_valid ? kExitOk : kExitCheckFailed;
  };
}

}  // namespace zctl::cli
