// Loads sink plugins (shared libraries exporting the C ABI of
// <zctl/sink.h>) and checks them before anything is called.
//
// A LoadedPlugin keeps its library mapped; every sink instance holds a
// shared_ptr to it, so the code stays loaded as long as anything from it
// lives. Thread-safe: loading runs on the control thread; LoadedPlugin is
// immutable after load.
#pragma once

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <zctl/sink.h>

namespace zctl {

class LoadedPlugin {
 public:
  class Library;  // the dynamic-loading library's handle, hidden in the source
  LoadedPlugin(std::unique_ptr<Library> library, const zctl_sink_plugin& descriptor, std::string path);
  ~LoadedPlugin();
  // A plugin linked into this process (test fakes): no library to keep loaded.
  static std::shared_ptr<LoadedPlugin> in_process(const zctl_sink_plugin& descriptor, std::string label);
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  // The host's copy of the descriptor: fields the plugin's (older, smaller)
  // struct did not have are zero.
  const zctl_sink_plugin& descriptor() const { return descriptor_; }
  const std::string& path() const { return path_; }
  std::string name() const { return descriptor_.name; }

 private:
  std::unique_ptr<Library> library_;
  zctl_sink_plugin descriptor_;
  std::string path_;
};

struct PluginError {
  std::string path;
  std::string reason;  // e.g. "ABI major version 2 is not supported (host speaks 1.0)"
  std::string message() const { return path + ": " + reason; }
};

using PluginLoadResult = std::variant<std::shared_ptr<LoadedPlugin>, PluginError>;

struct PluginInfo {
  std::string path;
  bool valid = false;
  std::string error;  // set when !valid
  std::string name, version, description;
  int abi_major = 0, abi_minor = 0;
  uint32_t capabilities = 0;
};

class PluginHost {
 public:
  explicit PluginHost(std::vector<std::string> search_path);

  // Finds "<name>.so" in the search path (first match) and loads it.
  PluginLoadResult load_by_name(const std::string& name) const;
  // Loads one file, checking: regular file, not group/world writable, a
  // loadable shared library, the entry symbol, descriptor size, ABI major
  // and minor, required functions, a valid name.
  static PluginLoadResult load_file(const std::string& path);

  // Every *.so in the search path, valid or not, in search order.
  std::vector<PluginInfo> discover() const;
  static PluginInfo inspect(const std::string& path);

  const std::vector<std::string>& search_path() const { return search_path_; }

 private:
  std::vector<std::string> search_path_;
};

}  // namespace zctl
