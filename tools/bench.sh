#!/bin/bash
# bench.sh — build lunfs (tools/setup.sh), make sure the reference tools
# are there, then run the side-by-side benchmark (tools/bench.py).
# Arguments go to bench.py: --quick, --json PATH, --size MIB, --files N, …
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
if [ "${LUNFS_NO_APT:-0}" != 1 ]; then
	missing=()
	for p in fuse2fs fio; do
		command -v "$p" >/dev/null || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "bench: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
fi
exec /usr/bin/python3 tools/bench.py "$@"
