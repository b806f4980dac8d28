#!/bin/bash
# check.sh — the whole test suite: installs what is missing, builds (normal
# and ASan/UBSan), runs the C unit tests under both builds and the pytest
# scenarios against a private tgtd, with the ASan/UBSan binaries.
# Extra arguments go to pytest (e.g. -k block -x).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh --asan

echo "== C unit tests"
ctest --test-dir build --output-on-failure -j2
echo "== C unit tests (ASan/UBSan)"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j2

echo "== scenarios against a private tgtd (ASan/UBSan binaries)"
export LUNFS_BUILD_DIR="$PWD/build-asan"
exec /usr/bin/python3 -m pytest -v -p no:cacheprovider tests/ "$@"
