#!/bin/bash
# setup.sh — install the Debian packages lunfs builds, tests and demos with,
# then build it into build/ (and build-asan/ with --asan).
# Run as root on Debian 12. Set LUNFS_NO_APT=1 to skip the package step.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(build-essential cmake pkg-config libfuse3-dev fuse3 liburing-dev libiscsi-dev
	libiscsi-bin libext2fs-dev e2fsprogs libjson-c-dev tgt python3
	python3-pytest util-linux clang libclang-rt-14-dev
	fuse2fs fio runc crun podman uidmap busybox-static python3-yaml dpkg-dev groff-base man-db mmdebstrap sqlite3)

if [ "${LUNFS_NO_APT:-0}" != 1 ]; then
	missing=()
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "setup: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
fi

jobs=$(nproc)
cmake -S . -B build -DLUNFS_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
if [ "${1:-}" = --asan ]; then
	cmake -S . -B build-asan -DLUNFS_WERROR=ON -DLUNFS_SANITIZE=ON \
		-DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-asan -j"$jobs"
fi
