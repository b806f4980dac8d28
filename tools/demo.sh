#!/bin/bash
# demo.sh — the main job end to end: start a throwaway iSCSI target on a
# loopback port, mount one of its LUNs as a filesystem and another as a
# block file through lunfs, show them, and clean everything up.
#
# tools/demo.sh              install what is missing, build, run the build's lunfs
# tools/demo.sh --installed  run the installed lunfs (from PATH), build nothing
#
# Runs as root; from a user shell it runs itself again through sudo.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || { echo "demo.sh: run it as root (no sudo here)" >&2; exit 1; }
	exec sudo -E -- "$0" "$@"
fi
cd "$(dirname "$0")/.."
if [ "${1:-}" = --installed ]; then
	LUNFS=$(command -v lunfs) || { echo "demo.sh: no lunfs on PATH" >&2; exit 1; }
else
	tools/setup.sh
	LUNFS="$PWD/build/tools/lunfs"
fi
work=$(mktemp -d /tmp/lunfs-demo.XXXXXX)
ctl=$(( (RANDOM % 30000) + 2000 ))  # tgtd -C caps at 32767
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
iqn=iqn.2026-11.io.lunfs.demo:disk
state="$work/state"
tgtd_pid=

cleanup() {
	set +e
	"$LUNFS" --state-dir "$state" shutdown 2>/dev/null
	for m in "$work/vol" "$work/blockdev"; do
		mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" || umount -l "$m"; }
	done
	[ -n "$tgtd_pid" ] && kill -9 "$tgtd_pid" 2>/dev/null && wait "$tgtd_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "a throwaway target: tgtd -C $ctl on 127.0.0.1:$port, two sparse 1 GiB LUNs"
tgtd -f -C "$ctl" --iscsi portal=127.0.0.1:"$port" >"$work/tgtd.log" 2>&1 &
tgtd_pid=$!
for _ in $(seq 50); do tgtadm -C "$ctl" --op show --mode sys >/dev/null 2>&1 && break; sleep 0.1; done
truncate -s 1G "$work/lun1.img" "$work/lun2.img"
tgtadm -C "$ctl" --lld iscsi --op new --mode target --tid 1 -T "$iqn"
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$work/lun1.img"
tgtadm -C "$ctl" --lld iscsi --op new --mode logicalunit --tid 1 --lun 2 -b "$work/lun2.img"
tgtadm -C "$ctl" --lld iscsi --op bind --mode target --tid 1 -I ALL

mkdir -p "$work/vol"
say "mount LUN 1 as a filesystem (empty, so lunfs formats it ext4 in userspace)"
run "$LUNFS" --state-dir "$state" mount "iscsi://127.0.0.1:$port/$iqn/1" "$work/vol"
run df -h "$work/vol"
echo "hello from lunfs" >"$work/vol/hello.txt"
mkdir "$work/vol/data"
dd if=/dev/urandom of="$work/vol/data/blob" bs=1M count=16 status=none
run ls -la "$work/vol" "$work/vol/data"
run cat "$work/vol/hello.txt"

say "mount LUN 2 as a raw block file"
touch "$work/blockdev"
run "$LUNFS" --state-dir "$state" mount --block "iscsi://127.0.0.1:$port/$iqn/2" "$work/blockdev"
run ls -l "$work/blockdev"
printf 'written through the block file' | dd of="$work/blockdev" bs=4096 conv=notrunc,fsync status=none
run head -c 30 "$work/lun2.img"; echo

say "one session serves both LUNs"
run "$LUNFS" --state-dir "$state" status
run tgtadm -C "$ctl" --lld iscsi --op show --mode conn --tid 1

say "unmount: the last volume logs out"
run "$LUNFS" --state-dir "$state" umount "$work/blockdev"
run "$LUNFS" --state-dir "$state" umount "$work/vol"
echo "connections left at the target: $(tgtadm -C "$ctl" --lld iscsi --op show --mode conn --tid 1 | grep -c Connection || true)"

say "the volume is a real ext4: e2fsck and the kernel agree"
run e2fsck -fn "$work/lun1.img"
mkdir -p "$work/kmnt"
if mount -o loop,ro "$work/lun1.img" "$work/kmnt" 2>/dev/null; then
	run ls -la "$work/kmnt"
	run cat "$work/kmnt/hello.txt"
	umount "$work/kmnt"
fi
say "done"
