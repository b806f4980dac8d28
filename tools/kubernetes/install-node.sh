#!/bin/sh
# install-node.sh HOSTROOT — run by the lunfs-node DaemonSet's init
# container: puts what the container runtime on the node needs in HOSTROOT
# (the node's directories, mounted from the host):
#
#   HOSTROOT/opt/lunfs/bin/lunfs          the OCI hook, run by CRI-O on the
#                                         node (a wrapper: the image's lunfs
#                                         with the image's libraries, so the
#                                         node needs none of them)
#   HOSTROOT/etc/containers/oci/hooks.d/lunfs.json   the hooks.d file naming it
#   HOSTROOT/etc/crio/crio.conf.d/50-lunfs-hooks.conf  (from $LUNFS_CRIO_CONF
#                                         if set) so that CRI-O reads that
#                                         hooks.d directory
#
# Each file is replaced atomically; running it again is harmless.
# LUNFS_BIN (default /usr/bin/lunfs) and LUNFS_HOOKS_JSON (default: the
# package's /etc/containers/oci/hooks.d/lunfs.json) name the sources.
set -eu
[ $# -eq 1 ] || { echo "usage: install-node.sh HOSTROOT" >&2; exit 2; }
host=$1
bin=${LUNFS_BIN:-/usr/bin/lunfs}
hooks=${LUNFS_HOOKS_JSON:-/etc/containers/oci/hooks.d/lunfs.json}
dest=$host/opt/lunfs

new=$dest/.new.$$
rm -rf "$new"
mkdir -p "$new/lib" "$new/libexec" "$new/bin"
cp "$bin" "$new/libexec/lunfs"
# The dynamic loader and every library lunfs links, as ldd resolves them.
loader=
for f in $(ldd "$bin" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p'); do
	cp -L "$f" "$new/lib/"
	case $f in */ld-linux*) loader=$(basename "$f") ;; esac
done
[ -n "$loader" ] || { echo "install-node.sh: no dynamic loader found for $bin" >&2; exit 1; }
cat >"$new/bin/lunfs" <<WRAP
#!/bin/sh
# lunfs from the lunfs-node image, with that image's libraries.
d=\$(dirname "\$(readlink -f "\$0")")/..
exec "\$d/lib/$loader" --library-path "\$d/lib" --argv0 lunfs "\$d/libexec/lunfs" "\$@"
WRAP
chmod 0755 "$new/bin/lunfs" "$new/libexec/lunfs"
# Swap the whole tree in: a hook starting now sees the old or the new one.
for d in bin lib libexec; do
	rm -rf "$dest/$d.old"
	[ -e "$dest/$d" ] && mv "$dest/$d" "$dest/$d.old"
	mv "$new/$d" "$dest/$d"
	rm -rf "$dest/$d.old"
done
rmdir "$new"

mkdir -p "$host/etc/containers/oci/hooks.d"
sed 's#"/usr/bin/lunfs"#"/opt/lunfs/bin/lunfs"#' "$hooks" \
	>"$host/etc/containers/oci/hooks.d/.lunfs.json.new"
grep -q '"/opt/lunfs/bin/lunfs"' "$host/etc/containers/oci/hooks.d/.lunfs.json.new" ||
	{ echo "install-node.sh: $hooks does not name /usr/bin/lunfs" >&2; exit 1; }
mv "$host/etc/containers/oci/hooks.d/.lunfs.json.new" \
	"$host/etc/containers/oci/hooks.d/lunfs.json"

if [ -n "${LUNFS_CRIO_CONF:-}" ]; then
	mkdir -p "$host/etc/crio/crio.conf.d"
	cp "$LUNFS_CRIO_CONF" "$host/etc/crio/crio.conf.d/.50-lunfs-hooks.conf.new"
	mv "$host/etc/crio/crio.conf.d/.50-lunfs-hooks.conf.new" \
		"$host/etc/crio/crio.conf.d/50-lunfs-hooks.conf"
fi
echo "install-node.sh: the lunfs hook is installed in $host"
