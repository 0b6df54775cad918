# zctl_add_sink_plugin: build one zctl sink plugin.
#
#   zctl_add_sink_plugin(TARGET <target> [NAME <name>] SOURCES <src>...
#                        [OUTPUT_DIRECTORY <dir>] [INSTALL_DIR <dir>] [COMPONENT <comp>]
#                        [NO_INSTALL])
#
# Naming convention: the plugin file is "<name>.so" (no "lib" prefix), where <name> is the
# plugin's descriptor name, i.e. what `plugin:` names in a zctl config. The host looks for
# "<plugin>.so" in each plugins.path directory. NAME defaults to TARGET; give both when the
# plugin name would collide with another CMake target (e.g. TARGET zctl_sink_file NAME file).
#
# The target is a MODULE library linked against zctl::sdk with
#   - hidden visibility for C and C++ (inline functions included),
#   - a linker version script that exports zctl_sink_plugin_entry and nothing else,
#   - -Wl,-z,defs, so a plugin that relies on a symbol of the host fails to link.
#     Set ZCTL_SINK_PLUGIN_NO_UNDEFINED=OFF to drop it (e.g. for clang's static sanitizer
#     runtimes, which only the executable carries).
#
# Output directory: OUTPUT_DIRECTORY, else ${ZCTL_PLUGIN_OUTPUT_DIR} when set, else CMake's
# default. Installed (unless NO_INSTALL) to INSTALL_DIR, else ${ZCTL_PLUGIN_INSTALL_DIR} when
# set, else ${CMAKE_INSTALL_LIBDIR}/zctl/plugins.
include_guard(GLOBAL)
include(GNUInstallDirs)

option(ZCTL_SINK_PLUGIN_NO_UNDEFINED "Link zctl sink plugins with -Wl,-z,defs" ON)

function(zctl_add_sink_plugin)
  cmake_parse_arguments(PARSE_ARGV 0 arg "NO_INSTALL"
                        "TARGET;NAME;OUTPUT_DIRECTORY;INSTALL_DIR;COMPONENT" "SOURCES")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "zctl_add_sink_plugin: unexpected arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT arg_TARGET)
    message(FATAL_ERROR "zctl_add_sink_plugin: TARGET is required")
  endif()
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "zctl_add_sink_plugin(${arg_TARGET}): SOURCES is required")
  endif()
  if(NOT arg_NAME)
    set(arg_NAME "${arg_TARGET}")
  endif()
  if(NOT arg_NAME MATCHES "^[a-z0-9_-]+$")
    message(FATAL_ERROR "zctl_add_sink_plugin: plugin name '${arg_NAME}' must match [a-z0-9_-]+")
  endif()
  if(NOT TARGET zctl::sdk)
    message(FATAL_ERROR "zctl_add_sink_plugin: target zctl::sdk not found; "
                        "call find_package(zctl-sdk) first")
  endif()

  add_library(${arg_TARGET} MODULE ${arg_SOURCES})
  target_link_libraries(${arg_TARGET} PRIVATE zctl::sdk)
  set_target_properties(${arg_TARGET} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "${arg_NAME}"
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)

  if(NOT APPLE AND NOT WIN32)
    set(map "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/zctl-sink-plugin.map")
    target_link_options(${arg_TARGET} PRIVATE "LINKER:--version-script=${map}")
    set_property(TARGET ${arg_TARGET} APPEND PROPERTY LINK_DEPENDS "${map}")
    if(ZCTL_SINK_PLUGIN_NO_UNDEFINED)
      target_link_options(${arg_TARGET} PRIVATE "LINKER:-z,defs")
    endif()
  endif()

  if(arg_OUTPUT_DIRECTORY)
    set_target_properties(${arg_TARGET} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${arg_OUTPUT_DIRECTORY}")
  elseif(DEFINED ZCTL_PLUGIN_OUTPUT_DIR AND NOT ZCTL_PLUGIN_OUTPUT_DIR STREQUAL "")
    set_target_properties(${arg_TARGET} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${ZCTL_PLUGIN_OUTPUT_DIR}")
  endif()

  if(NOT arg_NO_INSTALL)
    if(arg_INSTALL_DIR)
      set(dest "${arg_INSTALL_DIR}")
    elseif(DEFINED ZCTL_PLUGIN_INSTALL_DIR AND NOT ZCTL_PLUGIN_INSTALL_DIR STREQUAL "")
      set(dest "${ZCTL_PLUGIN_INSTALL_DIR}")
    else()
      set(dest "${CMAKE_INSTALL_LIBDIR}/zctl/plugins")
    endif()
    if(arg_COMPONENT)
      install(TARGETS ${arg_TARGET} LIBRARY DESTINATION "${dest}" COMPONENT "${arg_COMPONENT}")
    else()
      install(TARGETS ${arg_TARGET} LIBRARY DESTINATION "${dest}")
    endif()
  endif()
endfunction()
