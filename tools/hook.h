/* hook.h — `lunfs hook`: the OCI runtime hook.
 *
 * Reads the container state (runtime-spec "State": id, status, pid,
 * bundle, annotations) on stdin and the bundle's config.json, and mounts
 * (createRuntime, prestart; status "creating") or releases (poststop;
 * status "stopped") the volumes named by the annotation io.lunfs.volumes:
 * a JSON array of objects with "source" (iscsi:// URL) or "iscsi" (an
 * ISCSIVolumeSource object), "destination" (absolute path in the
 * container), and optionally "readOnly", "volumeMode", "fsGroup",
 * "uidMappings"/"gidMappings" (OCI form) and "chapSecretFile".
 *
 * A container with a user namespace and no explicit mappings gets its
 * mount's id mapping from config.json, so ids on the volume are the ids
 * the container sees.
 *
 * lunfsd mounts in the host's mount namespace. The hook checks that each
 * mount is visible in the container's namespace (the state's pid): it is
 * when the rootfs lies on a shared mount (runc makes the container's
 * mounts rslave); otherwise the hook attaches a clone of the mount there
 * (open_tree + setns + move_mount).
 *
 * A failed mount releases what the hook mounted before it and returns
 * non-zero with the reason on stderr; release is idempotent and succeeds
 * for volumes already gone.
 */
#ifndef LUNFS_HOOK_H
#define LUNFS_HOOK_H

#include <stddef.h>
#include <stdio.h>

#include "tools/client.h"

#define LF_HOOK_ANNOTATION "io.lunfs.volumes"
/* An annotation "@NAME" names the file NAME.json here instead. */
#define LF_HOOK_VOLUMES_DIR "/etc/lunfs/volumes.d"
/* The runtime's limit assumed when the hook's entry gives none. */
#define LF_HOOK_TIMEOUT_S 120

/* stage: "createRuntime", "prestart", "poststop" or NULL (from the
 * state's status). Returns the process exit status. */
int lf_hook_run(const struct lf_client *c, const char *stage, FILE *in);

/* Parses the annotation's value into mount requests for a container whose
 * root filesystem is rootfs (absolute) and whose config.json is config
 * (may be NULL). Exposed for the fuzz target and unit tests. On success
 * *reqs is a JSON array of mount requests (no secrets loaded yet, but
 * "chapSecretFile" kept as "secret_file"). */
struct json_object;
int lf_hook_parse_volumes(const char *annotation, const char *rootfs,
			  struct json_object *config, const char *container,
			  struct json_object **reqs, char *err, size_t errlen);

#endif
