# cmake/packaging.cmake — install rules and CPack: .deb and .rpm packages of Cortex.
#
# Two packages, one per CPack component:
#   cortex-control-plane  cortex-gateway, cortex-scheduler, the cortex CLI, the SQL migrations
#                         with ops/migrate, their systemd units (and the daily retention timer)
#                         and sample env files
#   cortex-neuron         neuron, neuron-run (and neuron-bench when built), its unit and env file
# Layout: programs in /usr/bin; the CLI's real file in /usr/lib/cortex next to ops/migrate and
# sql/ (the CLI finds `ops/migrate` and `sql/` above its own path) with /usr/bin/cortex a
# symbolic link to it; units in /usr/lib/systemd/system (Debian 12 and RPM systems both read it);
# env files in /etc/cortex (conffiles: upgrades keep the operator's edits); the deploy guide and
# the HAProxy, Prometheus and Grafana files under /usr/share/doc/<package>.
# The maintainer scripts (cmake/packaging/*.in) create the system user cortex and give it read
# access to /etc/cortex; nothing is enabled or started (the env files need editing first).
#
#   cmake --build build && (cd build && cpack -G "DEB;RPM")
# Build packages from a Release build: dpkg-shlibdeps adds what the binaries link (an ASan
# build would pull in libasan). RPM needs rpmbuild (Debian package rpm).

set(_cp controlplane)
set(_nr neuron)
set(_doc_cp share/doc/cortex-control-plane)
set(_doc_nr share/doc/cortex-neuron)
set(_units lib/systemd/system)

# ---- control plane -------------------------------------------------------------------------
foreach(t cortex-gateway cortex-scheduler)
  if(TARGET ${t})
    install(TARGETS ${t} RUNTIME DESTINATION bin COMPONENT ${_cp})
  endif()
endforeach()
if(TARGET cortex)
  install(TARGETS cortex RUNTIME DESTINATION lib/cortex COMPONENT ${_cp})
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/packaging)
  file(CREATE_LINK ../lib/cortex/cortex ${CMAKE_CURRENT_BINARY_DIR}/packaging/cortex SYMBOLIC)
  install(FILES ${CMAKE_CURRENT_BINARY_DIR}/packaging/cortex DESTINATION bin COMPONENT ${_cp})
endif()
install(PROGRAMS ops/migrate DESTINATION lib/cortex/ops COMPONENT ${_cp})
install(DIRECTORY sql/ DESTINATION lib/cortex/sql COMPONENT ${_cp} FILES_MATCHING PATTERN "*.sql")
install(FILES ops/systemd/cortex-gateway.service ops/systemd/cortex-scheduler.service
        ops/systemd/cortex-retention.service ops/systemd/cortex-retention.timer
        DESTINATION ${_units} COMPONENT ${_cp})
install(FILES ops/systemd/gateway.env ops/systemd/scheduler.env
        DESTINATION /etc/cortex COMPONENT ${_cp})
install(FILES docs/deploy.md docs/admin.md docs/scheduler.md DESTINATION ${_doc_cp} COMPONENT ${_cp})
install(FILES ops/haproxy/cortex.cfg DESTINATION ${_doc_cp}/examples/haproxy COMPONENT ${_cp})
install(FILES ops/prometheus/prometheus.yml ops/prometheus/alerts.yml
        DESTINATION ${_doc_cp}/examples/prometheus COMPONENT ${_cp})
install(FILES ops/grafana/cortex.json DESTINATION ${_doc_cp}/examples/grafana COMPONENT ${_cp})

# ---- neuron ----------------------------------------------------------------------------------
foreach(t neuron neuron-run neuron-bench)
  if(TARGET ${t})
    install(TARGETS ${t} RUNTIME DESTINATION bin COMPONENT ${_nr})
  endif()
endforeach()
install(FILES ops/systemd/neuron.service DESTINATION ${_units} COMPONENT ${_nr})
install(FILES ops/systemd/neuron.env DESTINATION /etc/cortex COMPONENT ${_nr})
install(FILES docs/deploy.md docs/neuron.md DESTINATION ${_doc_nr} COMPONENT ${_nr})

# ---- maintainer scripts ----------------------------------------------------------------------
# One set per package, from the same templates: CORTEX_PKG_ENV_FILES are the env files whose
# group becomes cortex, CORTEX_PKG_UNITS the units stopped before removal, CORTEX_PKG_DIRS the
# folders created for the cortex user.
function(cortex_package_scripts comp env_files units dirs conffiles)
  set(CORTEX_PKG_ENV_FILES "${env_files}")
  set(CORTEX_PKG_UNITS "${units}")
  set(CORTEX_PKG_DIRS "${dirs}")
  set(out ${CMAKE_CURRENT_BINARY_DIR}/packaging/${comp})
  foreach(script postinst prerm postrm)
    configure_file(${CMAKE_CURRENT_SOURCE_DIR}/cmake/packaging/${script}.in ${out}/${script}
                   @ONLY FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ
                   GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
  string(REPLACE " " "\n" _conf "${conffiles}")
  file(WRITE ${out}/conffiles "${_conf}\n")
endfunction()
cortex_package_scripts(${_cp} "/etc/cortex/gateway.env /etc/cortex/scheduler.env"
                       "cortex-gateway.service cortex-scheduler.service cortex-retention.timer" ""
                       "/etc/cortex/gateway.env /etc/cortex/scheduler.env")
cortex_package_scripts(${_nr} "/etc/cortex/neuron.env" "neuron.service"
                       "/var/lib/cortex /var/lib/cortex/models" "/etc/cortex/neuron.env")
set(_pkg ${CMAKE_CURRENT_BINARY_DIR}/packaging)

# ---- CPack -----------------------------------------------------------------------------------
set(CPACK_PACKAGE_NAME cortex)
set(CPACK_PACKAGE_VENDOR "Cortex")
set(CPACK_PACKAGE_CONTACT "Cortex operators <cortex@localhost>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_COMPONENTS_ALL ${_cp} ${_nr})
set(CPACK_COMPONENTS_GROUPING IGNORE)
set(CPACK_STRIP_FILES OFF)

# Debian
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
# The lists below name the libraries the programs link and what no binary links (psql for
# migrations, useradd); dpkg-shlibdeps adds versioned entries for everything linked.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
if(CORTEX_HAVE_CUDA)
  # The CUDA runtime and cuBLAS usually come from NVIDIA's repository or installer, which
  # dpkg-shlibdeps cannot map to Debian packages (it stops with an error): CUDA builds rely on
  # the explicit lists, and the GPU hosts get the CUDA runtime with their driver (docs/deploy.md).
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_CONTROLPLANE_PACKAGE_NAME cortex-control-plane)
set(CPACK_DEBIAN_CONTROLPLANE_PACKAGE_DEPENDS
    "libpq5, libmicrohttpd12, libjansson4, libcurl4, postgresql-client, passwd, bash")
set(CPACK_DEBIAN_CONTROLPLANE_DESCRIPTION
    "Cortex control plane: gateway, scheduler, CLI and schema\n The stateless API gateways, the scheduler that places models on GPU hosts, the cortex\n admin CLI and the PostgreSQL migrations, with systemd units and sample settings.")
set(CPACK_DEBIAN_CONTROLPLANE_PACKAGE_CONTROL_EXTRA
    "${_pkg}/${_cp}/postinst;${_pkg}/${_cp}/prerm;${_pkg}/${_cp}/postrm;${_pkg}/${_cp}/conffiles")
set(CPACK_DEBIAN_NEURON_PACKAGE_NAME cortex-neuron)
set(CPACK_DEBIAN_NEURON_PACKAGE_DEPENDS
    "libpq5, libmicrohttpd12, libjansson4, libpcre2-8-0, passwd")
set(CPACK_DEBIAN_NEURON_DESCRIPTION
    "Cortex neuron: serves the LLMs of one GPU host\n The per-host inference daemon of Cortex (CPU and, where built, CUDA backends), neuron-run\n for one-off prompts, with a systemd unit and sample settings.")
set(CPACK_DEBIAN_NEURON_PACKAGE_CONTROL_EXTRA
    "${_pkg}/${_nr}/postinst;${_pkg}/${_nr}/prerm;${_pkg}/${_nr}/postrm;${_pkg}/${_nr}/conffiles")

# RPM (names as on RHEL/Fedora)
set(CPACK_RPM_COMPONENT_INSTALL ON)
set(CPACK_RPM_FILE_NAME RPM-DEFAULT)
set(CPACK_RPM_PACKAGE_LICENSE "See LICENSE")
set(CPACK_RPM_PACKAGE_GROUP "System Environment/Daemons")
set(CPACK_RPM_PACKAGE_AUTOREQ OFF)
set(CPACK_RPM_PACKAGE_RELOCATABLE OFF)
set(CPACK_RPM_SPEC_MORE_DEFINE "%define _build_id_links none")
set(CPACK_RPM_EXCLUDE_FROM_AUTO_FILELIST_ADDITION
    /etc /etc/cortex /usr/lib/systemd /usr/lib/systemd/system /usr/share/doc /var /var/lib)
set(CPACK_RPM_CONTROLPLANE_PACKAGE_NAME cortex-control-plane)
set(CPACK_RPM_CONTROLPLANE_PACKAGE_SUMMARY "Cortex control plane: gateway, scheduler, CLI and schema")
set(CPACK_RPM_CONTROLPLANE_PACKAGE_REQUIRES
    "libpq, libmicrohttpd, jansson, libcurl, postgresql, shadow-utils, bash")
set(CPACK_RPM_CONTROLPLANE_USER_FILELIST
    "%config(noreplace) /etc/cortex/gateway.env" "%config(noreplace) /etc/cortex/scheduler.env")
set(CPACK_RPM_CONTROLPLANE_POST_INSTALL_SCRIPT_FILE ${_pkg}/${_cp}/postinst)
set(CPACK_RPM_CONTROLPLANE_PRE_UNINSTALL_SCRIPT_FILE ${_pkg}/${_cp}/prerm)
set(CPACK_RPM_NEURON_PACKAGE_NAME cortex-neuron)
set(CPACK_RPM_NEURON_PACKAGE_SUMMARY "Cortex neuron: serves the LLMs of one GPU host")
set(CPACK_RPM_NEURON_PACKAGE_REQUIRES "libpq, libmicrohttpd, jansson, pcre2, shadow-utils")
set(CPACK_RPM_NEURON_USER_FILELIST "%config(noreplace) /etc/cortex/neuron.env")
set(CPACK_RPM_NEURON_POST_INSTALL_SCRIPT_FILE ${_pkg}/${_nr}/postinst)
set(CPACK_RPM_NEURON_PRE_UNINSTALL_SCRIPT_FILE ${_pkg}/${_nr}/prerm)

include(CPack)
cpack_add_component(${_cp} DISPLAY_NAME "Cortex control plane")
cpack_add_component(${_nr} DISPLAY_NAME "Cortex neuron")
