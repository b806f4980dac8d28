# Run by `cmake --install`: writes the systemd unit and the hooks.d file with
# the binaries' installed paths into LF_OUT. The shipped files name the
# default install (/usr/local); the prefix is known only now, since
# `cmake --install --prefix P` may change it after the build.
foreach(v BINDIR SBINDIR)
	set(d "${LF_${v}}")
	if(NOT IS_ABSOLUTE "${d}")
		set(d "${CMAKE_INSTALL_PREFIX}/${d}")
	endif()
	set(full_${v} "${d}")
endforeach()
file(READ "${LF_SRC}/lunfsd.service" s)
string(REPLACE "/usr/local/sbin/lunfsd" "${full_SBINDIR}/lunfsd" s "${s}")
file(WRITE "${LF_OUT}/lunfsd.service" "${s}")
file(READ "${LF_SRC}/hooks.d/lunfs.json" s)
string(REPLACE "/usr/local/bin/lunfs" "${full_BINDIR}/lunfs" s "${s}")
file(WRITE "${LF_OUT}/lunfs.json" "${s}")

if(NOT LF_HOOKS_DIR)
	if(CMAKE_INSTALL_PREFIX MATCHES "^/usr(/local)?/?$")
		set(LF_HOOKS_DIR /etc/containers/oci/hooks.d)
	else()
		set(LF_HOOKS_DIR etc/containers/oci/hooks.d)
	endif()
endif()
if(NOT IS_ABSOLUTE "${LF_HOOKS_DIR}")
	set(LF_HOOKS_DIR "${CMAKE_INSTALL_PREFIX}/${LF_HOOKS_DIR}")
endif()
# file(INSTALL) adds DESTDIR and records the file in install_manifest.txt.
file(INSTALL "${LF_OUT}/lunfs.json" DESTINATION "${LF_HOOKS_DIR}"
	PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
