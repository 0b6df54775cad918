#include "zctl/core/plugin_host.hpp"

#include <sys/stat.h>

#include <boost/dll/shared_library.hpp>
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <filesystem>

namespace zctl {

class LoadedPlugin::Library {
 public:
  boost::dll::shared_library library;
};

LoadedPlugin::LoadedPlugin(std::unique_ptr<Library> library, const zctl_sink_plugin& descriptor,
                           std::string path)
    : library_(std::move(library)), descriptor_(descriptor), path_(std::move(path)) {}

LoadedPlugin::~LoadedPlugin() = default;

std::shared_ptr<LoadedPlugin> LoadedPlugin::in_process(const zctl_sink_plugin& descriptor, std::string label) {
  return std::make_shared<LoadedPlugin>(nullptr, descriptor, std::move(label));
}

namespace {

// Every field through `destroy` exists since ABI 1.0; a descriptor smaller
// than that cannot be a 1.x plugin.
constexpr size_t kMinDescriptorSize = offsetof(zctl_sink_plugin, destroy) + sizeof(void*);

PluginError refuse(const std::string& path, std::string reason) { return PluginError{path, std::move(reason)}; }

bool valid_plugin_name(const char* name) {
  if (name == nullptr || *name == '\0' || std::strlen(name) > 64) return false;
  for (const char* p = name; *p; ++p) {
    const char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

std::string abi_text(int major, int minor) { return std::to_string(major) + "." + std::to_string(minor); }

}  // namespace

PluginHost::PluginHost(std::vector<std::string> search_path) : search_path_(std::move(search_path)) {}

PluginLoadResult PluginHost::load_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return refuse(path, std::string("cannot access: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return refuse(path, "not a regular file");
  // A plugin runs inside the node; one that others may rewrite is a way in.
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return refuse(path, "refusing a group- or world-writable plugin file (chmod go-w it)");
  }

  auto library = std::make_unique<LoadedPlugin::Library>();
  boost::system::error_code ec;
  // rtld_local keeps one plugin's symbols from resolving another's;
  // rtld_now surfaces missing symbols at load, not at first call.
  library->library.load(boost::dll::fs::path(path),
                        boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, ec);
  if (ec || !library->library.is_loaded()) {
    const char* detail = ::dlerror();
    return refuse(path, std::string("not a loadable shared library: ") + (detail ? detail : ec.message()));
  }
  if (!library->library.has(ZCTL_SINK_ENTRY_SYMBOL)) {
    return refuse(path, std::string("missing entry symbol '") + ZCTL_SINK_ENTRY_SYMBOL +
                            "' (is it a zctl sink plugin, built with ZCTL_SINK_PLUGIN or exporting the symbol with default visibility?)");
  }
  auto entry = library->library.get<const zctl_sink_plugin*()>(ZCTL_SINK_ENTRY_SYMBOL);
  const zctl_sink_plugin* theirs = entry();
  if (theirs == nullptr) return refuse(path, "entry symbol returned no descriptor");
  // struct_size and the ABI version come first in every version; read
  // nothing else before knowing how much there is.
  constexpr size_t kVersionPrefix = offsetof(zctl_sink_plugin, abi_minor) + sizeof(uint16_t);
  if (theirs->struct_size < kVersionPrefix) {
    return refuse(path, "descriptor is " + std::to_string(theirs->struct_size) + " bytes, too small to hold an ABI version");
  }
  if (theirs->abi_major != ZCTL_SINK_ABI_MAJOR) {
    return refuse(path, "plugin ABI " + abi_text(theirs->abi_major, theirs->abi_minor) +
                            " has a different major version than this host (" +
                            abi_text(ZCTL_SINK_ABI_MAJOR, ZCTL_SINK_ABI_MINOR) + ")");
  }
  if (theirs->abi_minor > ZCTL_SINK_ABI_MINOR) {
    return refuse(path, "plugin ABI " + abi_text(theirs->abi_major, theirs->abi_minor) +
                            " is newer than this host's " + abi_text(ZCTL_SINK_ABI_MAJOR, ZCTL_SINK_ABI_MINOR) +
                            " (upgrade zctl or rebuild the plugin against this SDK)");
  }
  if (theirs->struct_size < kMinDescriptorSize) {
    return refuse(path, "descriptor is " + std::to_string(theirs->struct_size) + " bytes, ABI 1.0 needs at least " +
                            std::to_string(kMinDescriptorSize));
  }
  // Copy only what the plugin's struct has; fields from later minors stay 0.
  zctl_sink_plugin descriptor{};
  std::memcpy(&descriptor, theirs, std::min<size_t>(theirs->struct_size, sizeof descriptor));
  if (!valid_plugin_name(descriptor.name)) return refuse(path, "descriptor has no valid name ([a-z0-9_-]+, at most 64)");
  std::string missing;
  if (!descriptor.validate_config) missing += " validate_config";
  if (!descriptor.create) missing += " create";
  if (!descriptor.emit) missing += " emit";
  if (!descriptor.destroy) missing += " destroy";
  if (!missing.empty()) return refuse(path, "descriptor lacks required function(s):" + missing);
  if (!descriptor.version) descriptor.version = "";
  if (!descriptor.description) descriptor.description = "";
  return std::make_shared<LoadedPlugin>(std::move(library), descriptor, path);
}

PluginLoadResult PluginHost::load_by_name(const std::string& name) const {
  for (const auto& dir : search_path_) {
    const auto candidate = std::filesystem::path(dir) / (name + ".so");
    std::error_code ec;
    if (std::filesystem::exists(candidate, ec)) return load_file(candidate.string());
  }
  std::string where;
  for (const auto& dir : search_path_) where += (where.empty() ? "" : ", ") + dir;
  return refuse(name + ".so", "plugin '" + name + "' not found in plugins.path [" + where + "]");
}

PluginInfo PluginHost::inspect(const std::string& path) {
  PluginInfo info;
  info.path = path;
  auto result = load_file(path);
  if (auto* error = std::get_if<PluginError>(&result)) {
    info.error = error->reason;
    return info;
  }
  const auto& d = std::get<std::shared_ptr<LoadedPlugin>>(result)->descriptor();
  info.valid = true;
  info.name = d.name;
  info.version = d.version;
  info.description = d.description;
  info.abi_major = d.abi_major;
  info.abi_minor = d.abi_minor;
  info.capabilities = d.capabilities;
  return info;
}

std::vector<PluginInfo> PluginHost::discover() const {
  std::vector<PluginInfo> out;
  for (const auto& dir : search_path_) {
    std::error_code ec;
    std::vector<std::string> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".so") files.push_back(entry.path().string());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) out.push_back(inspect(file));
  }
  return out;
}

}  // namespace zctl
