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
 * An annotation "@NAME" names the file NAME.json in LF_HOOK_VOLUMES_DIR
 * ($LUNFS_VOLUMES_DIR) holding that array.
 *
 * lunfsd mounts in its own mount namespace, which need not be the hook's
 * (podman runs the runtime from conmon's). A container starts only if
 * each destination, as the container will resolve it after pivot_root
 * (through /proc/PID/root and the rootfs path), is lunfsd's mount, whose
 * identity the hook takes in lunfsd's namespace (the control socket's
 * SO_PEERCRED pid). A mount that did not propagate there is cloned in
 * lunfsd's namespace (open_tree) and attached in the container's
 * (move_mount); detached_tree() makes the tree to attach.
 *
 * Time: the hook reads its own entry's "timeout" in config.json (else
 * LF_HOOK_TIMEOUT_S), stops mounting a margin before it, and sends the
 * rest as "timeout_ms" (lunfsd undoes a mount completing later).
 *
 * A failed mount releases what the hook mounted before it and returns
 * non-zero with the reason on stderr (the runtime's stderr when crun has
 * sent ours to /dev/null); release is idempotent and succeeds for volumes
 * already gone.
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
