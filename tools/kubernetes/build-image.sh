#!/bin/bash
# build-image.sh [TAG] — build the lunfs-node image with podman from
# Debian packages: tools/package.sh makes lunfs's .deb from the build in
# $LUNFS_BUILD_DIR (default build/), the Containerfile installs it on
# Debian 12. The base image is $LUNFS_BASE_IMAGE if set, else
# docker.io/library/debian:bookworm-slim if podman has or can pull it, else
# one made here with mmdebstrap from the Debian mirror apt uses
# (localhost/lunfs-debian-base:bookworm). Prints the image's name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=$(sed -n 's/^project(lunfs VERSION \([0-9.]*\).*/\1/p' "$repo/CMakeLists.txt")
tag=${1:-localhost/lunfs-node:$version}

ctx=$(mktemp -d /tmp/lunfs-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
"$repo/tools/package.sh" "$ctx" >/dev/null
cp "$here/Containerfile" "$here/install-node.sh" "$ctx/"

base=${LUNFS_BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
if [ -z "${LUNFS_BASE_IMAGE:-}" ] && ! podman image exists "$base" &&
	! podman pull -q "$base" >/dev/null 2>&1; then
	base=localhost/lunfs-debian-base:bookworm
	if ! podman image exists "$base"; then
		echo "build-image.sh: no registry: making $base with mmdebstrap" >&2
		command -v mmdebstrap >/dev/null ||
			{ echo "build-image.sh: needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
		# The mirror and suite this machine's apt uses.
		mmdebstrap --variant=minbase --format=tar \
			--include=ca-certificates bookworm "$ctx/base.tar" >&2
		podman import -q "$ctx/base.tar" "$base" >/dev/null
		rm -f "$ctx/base.tar"
	fi
fi
# chroot isolation: the RUN step needs no OCI runtime or cgroups, so the
# image builds also where crun cannot create containers (cgroup v1 hosts,
# nested containers); LUNFS_BUILD_ISOLATION=oci for podman's default.
podman build -q --isolation "${LUNFS_BUILD_ISOLATION:-chroot}" \
	--build-arg BASE="$base" -t "$tag" "$ctx" >/dev/null
echo "$tag"
