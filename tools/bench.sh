#!/bin/bash
# bench.sh — install and build (tools/setup.sh installs the reference tools
# fuse2fs and fio too), then run the side-by-side benchmark (tools/bench.py).
# Arguments go to bench.py: --quick, --json PATH, --size MIB, --files N, …
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh
exec /usr/bin/python3 tools/bench.py "$@"
