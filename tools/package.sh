#!/bin/bash
# package.sh OUTDIR — build the Debian package lunfs_VERSION_ARCH.deb into
# OUTDIR with Debian's own tools: `cmake --install` into a staging root
# (prefix /usr), dpkg-shlibdeps for Depends, dpkg-deb to build. The
# packaging files are in tools/debian/. Needs no root.
#
# The build directory is $LUNFS_BUILD_DIR, else build/ (configured and
# built here if it is not yet). Prints the package's path.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: tools/package.sh OUTDIR" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
build=${LUNFS_BUILD_DIR:-$repo/build}
if [ ! -f "$build/CMakeCache.txt" ]; then
	cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" -j"$(nproc)" --target lunfs lunfsd manpages >/dev/null

stage=$(mktemp -d /tmp/lunfs-package.XXXXXX)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
DESTDIR=$root cmake --install "$build" --prefix /usr --strip >/dev/null
gzip -9n "$root"/usr/share/man/man8/*.8
install -d "$root/usr/share/doc/lunfs"
gzip -9nc "$repo/README.md" >"$root/usr/share/doc/lunfs/README.md.gz"

version=$(sed -n 's/^project(lunfs VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
arch=$(dpkg --print-architecture)
# dpkg-shlibdeps wants a source package's debian/control around it.
mkdir -p "$stage/src/debian"
printf 'Source: lunfs\n\nPackage: lunfs\nArchitecture: any\n' \
	>"$stage/src/debian/control"
shlibs=$(cd "$stage/src" && dpkg-shlibdeps -O \
	"$root/usr/bin/lunfs" "$root/usr/sbin/lunfsd" 2>/dev/null |
	sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	-e "s/@SHLIBS@/$shlibs/" "$repo/tools/debian/control.in" >"$root/DEBIAN/control"
install -m 0644 "$repo/tools/debian/conffiles" "$root/DEBIAN/conffiles"
install -m 0755 "$repo/tools/debian/postinst" "$repo/tools/debian/prerm" \
	"$repo/tools/debian/postrm" "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' |
	sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

deb=$out/lunfs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
