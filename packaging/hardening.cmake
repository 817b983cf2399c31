# The .deb is built with Debian's own compiler and linker flags, as
# debhelper would pass them: dpkg-buildflags with every hardening feature
# (stack protector, _FORTIFY_SOURCE, -z relro and -z now, PIE, stack clash and
# control-flow protection) and -g, whose debug information goes to the
# ucgw-dbgsym package (CPACK_DEBIAN_DEBUGINFO_PACKAGE) when the binaries are stripped.
find_program(DPKG_BUILDFLAGS dpkg-buildflags)
if(NOT DPKG_BUILDFLAGS)
  message(FATAL_ERROR "UCGW_PACKAGE needs dpkg-buildflags (Debian: apt install dpkg-dev)")
endif()
foreach(kind CFLAGS CPPFLAGS LDFLAGS)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env DEB_BUILD_MAINT_OPTIONS=hardening=+all
                          ${DPKG_BUILDFLAGS} --get ${kind}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR} OUTPUT_VARIABLE deb_${kind} OUTPUT_STRIP_TRAILING_WHITESPACE
    COMMAND_ERROR_IS_FATAL ANY)
endforeach()
message(STATUS "Debian build flags: ${deb_CPPFLAGS} ${deb_CFLAGS} | ${deb_LDFLAGS}")
string(APPEND CMAKE_C_FLAGS " ${deb_CPPFLAGS} ${deb_CFLAGS}")
string(APPEND CMAKE_EXE_LINKER_FLAGS " ${deb_LDFLAGS}")
string(APPEND CMAKE_SHARED_LINKER_FLAGS " ${deb_LDFLAGS}")
include(CheckPIESupported)
check_pie_supported()
