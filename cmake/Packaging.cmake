# `cpack -G DEB` in the build tree makes zctl_<version>_<arch>.deb for
# Debian 12: everything `cmake --install` lays out, under /usr, with runtime
# dependencies computed by dpkg-shlibdeps from the binaries themselves.
install(FILES examples/zctl.yaml examples/minimal.yaml examples/production.yaml DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/zctl/examples)
install(FILES examples/sinks/webhook.yaml examples/sinks/syslog.yaml examples/sinks/kafka.yaml DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/zctl/examples/sinks)
# The service: unit, and the default config postinst copies to /etc/zctl when
# there is none (so `cmake --install` into a prefix never writes /etc).
install(FILES packaging/zctl.service DESTINATION lib/systemd/system)
install(FILES packaging/zctl.yaml DESTINATION ${CMAKE_INSTALL_DATADIR}/zctl)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME zctl)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "zctl")
set(CPACK_PACKAGE_CONTACT "zctl maintainers <maintainers@zctl.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "run and observe a cluster of control-plane controller nodes")
set(CPACK_PACKAGE_DESCRIPTION
    "zctl serve runs a controller node whose events go to a journal, to zctl watch clients\n"
    "and to sink plugins loaded through a versioned C ABI. Includes the file, webhook, syslog and kafka\n"
    "sink plugins, the plugin SDK headers and CMake package, man pages and shell completions.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")  # merged with the shared-library dependencies
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_SOURCE_DIR}/packaging/postinst)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)
include(CPack)
