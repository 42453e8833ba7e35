#!/usr/bin/env bash
# Benchmark of the mount against its peers, in one run on the same files:
#
#   ghostie-fs mount over a local-folder vault
#   a native folder (the floor)
#   gocryptfs over a local folder
#   rclone mount of a crypt remote over a local folder, --vfs-cache-mode full
#
# Workloads (10,000 memory-like JSON files of 1-8 KiB unless told otherwise):
#   W1 create every file: until the writer's last close() returns, and until all
#      of it is durable in the backend (native and gocryptfs: after `sync`)
#   W2 `ls -l` and `find` of them
#   W3 `cat` of all, warm;  W4 `cat` of all, cold (new mount, caches dropped)
#   W4n the same cold read by name, from a shuffled list, never listing the folder
#   W5 512 MiB written with dd, read back warm and cold
#   W6 how long a second mount of the same vault takes to show a new file
#   W7 (ghostie-fs) `ls -l` and `cat` of 100 cached files, and again while every
#      backend request stalls 5 s with a poll and an upload waiting on it
#   peak RSS of the ghostie-fs mount process holding 100,000 files
#
#   ./bench/mount.sh
#
# Knobs: BENCH_FILES (10000), BENCH_RUNS (3: W1-W4 medians), BENCH_BIG_MIB (512),
# BENCH_RSS_FILES (100000; 0 skips), BENCH_SKIP_BUILD=1, BENCH_TMPDIR (/tmp).
# Needs root (to drop the page cache between cold runs) and /dev/fuse; installs
# gocryptfs, rclone and fuse3 from Debian's packages. The table is printed and
# written to bench/results-mount.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
source scripts/lib/packages.sh

files=${BENCH_FILES:-10000}
runs=${BENCH_RUNS:-3}
big_mib=${BENCH_BIG_MIB:-512}
rss_files=${BENCH_RSS_FILES:-100000}
results=$repo/bench/results-mount.txt

source bench/lib/common.sh
[[ $(id -u) -eq 0 ]] || die "run as root: cold reads drop the kernel's page cache"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
ensure_packages fusermount3:fuse3 gocryptfs:gocryptfs rclone:rclone python3:python3 >/dev/null

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$repo/$target_dir
bin=$target_dir/release/ghostie-fs
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    echo "building ghostie-fs (cargo build --release)…"
    cargo build --release --quiet
fi
[[ -x $bin ]] || die "no ghostie-fs binary at $bin"

tmp=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/ghostie-mbench.XXXXXX")
log=$tmp/commands.log
mounts=()
finish() {
    local status=$?
    for m in "${mounts[@]}"; do
        fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    pkill -f "ghostie-mbench" 2>/dev/null || true
    if ((status != 0)) && [[ -s $log ]]; then
        echo "--- last lines of the command log ---" >&2
        tail -n 30 "$log" >&2
    fi
    rm -rf "$tmp"
}
trap finish EXIT
unset GHOSTIE_HOME GHOSTIE_PASSPHRASE_FILE
export GHOSTIE_PASSPHRASE=bench-passphrase

src=$tmp/src
echo "generating $files memory files…"
python3 "$repo/bench/lib/memories.py" "$src" "$files"
total_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ n += $1 } END { print n }')
printf '%d files, %.1f MB\n' "$files" "$(calc "$total_bytes / 1e6")"

# --- the four systems --------------------------------------------------------
# Each defines what bench/lib/common.sh's workloads call: <sys>_mount N,
# <sys>_unmount, <sys>_durable SINCE COUNT and, where deletions land late,
# <sys>_settled.

native_mount() { mkdir -p "$tmp/native/$1"; echo "$tmp/native/$1"; }
native_unmount() { :; }
native_durable() { sync; }
native_dir_for() { echo "$tmp/native/$1"; }

gc_cipher=$tmp/gocryptfs-cipher
mkdir -p "$gc_cipher"
gocryptfs -q -init -extpass "echo bench-passphrase" -scryptn 10 "$gc_cipher" >>"$log" 2>&1
gocryptfs_mount() {
    local m=$tmp/gocryptfs-mnt
    mkdir -p "$m"
    gocryptfs -q -extpass "echo bench-passphrase" "$gc_cipher" "$m" >>"$log" 2>&1
    mounts+=("$m")
    mkdir -p "$m/$1"
    echo "$m/$1"
}
gocryptfs_unmount() { fusermount3 -u "$tmp/gocryptfs-mnt"; }
gocryptfs_durable() { sync; }

rc_conf=$tmp/rclone.conf
mkdir -p "$tmp/rclone-cipher"
cat >"$rc_conf" <<EOF
[plain]
type = local

[crypt]
type = crypt
remote = plain:$tmp/rclone-cipher
password = $(rclone obscure bench-passphrase)
EOF
rclone_mount_at() {
    local m=$1 cache=$2
    mkdir -p "$m" "$cache"
    rclone --config "$rc_conf" mount crypt: "$m" --vfs-cache-mode full \
        --cache-dir "$cache" --daemon >>"$log" 2>&1
    for _ in $(seq 1 100); do mountpoint -q "$m" && break; sleep 0.1; done
    mountpoint -q "$m" || die "rclone did not mount $m"
    mounts+=("$m")
}
rclone_mount() {
    local m=$tmp/rclone-mnt
    rm -rf "$tmp/rclone-cache"
    rclone_mount_at "$m" "$tmp/rclone-cache"
    mkdir -p "$m/$1"
    echo "$m/$1"
}
rclone_unmount() { fusermount3 -u "$tmp/rclone-mnt"; sleep 0.5; }
# Deletions are written back late too: wait before the next round counts files.
rclone_settled() {
    for _ in $(seq 1 300); do
        [[ -z $(find "$tmp/rclone-cipher" -type f -print -quit) ]] && return 0
        sleep 0.1
    done
}
rclone_durable() {
    local want=$2
    # Written back in the background: done when the crypt folder holds them all
    # and rclone's upload queue is empty.
    for _ in $(seq 1 1200); do
        local n
        n=$(find "$tmp/rclone-cipher" -type f 2>/dev/null | wc -l)
        ((n >= want)) && return 0
        sleep 0.1
    done
    die "rclone did not write everything back within 120 s"
}

g_vault=$tmp/ghostie-vault
mkdir -p "$g_vault"
"$bin" --home "$tmp/ghostie-a" --quiet setup --backend local --path "$g_vault" --device a
ghostie_mount() {
    "$bin" --home "$tmp/ghostie-a" --quiet mount
    mounts+=("$tmp/ghostie-a/memories")
    mkdir -p "$tmp/ghostie-a/memories/$1"
    echo "$tmp/ghostie-a/memories/$1"
}
ghostie_unmount() { "$bin" --home "$tmp/ghostie-a" --quiet unmount; }
ghostie_durable() { ghostie_drained "$tmp/ghostie-a/sync/mount-status.json" "$1"; }

systems=(native ghostie gocryptfs rclone)
declare -A r

# --- W1-W5 ----------------------------------------------------------------------

small_files_workloads "$src" "$files" "$runs"
head -c "$((big_mib * 1024 * 1024))" /dev/urandom >"$tmp/big.src"
big_file_workloads "$tmp/big.src"

# --- W6: a second mount sees a new file ---------------------------------------

"$bin" --home "$tmp/ghostie-b" --quiet setup --backend local --path "$g_vault" --device b
ghostie_mount w6 >/dev/null
"$bin" --home "$tmp/ghostie-b" --quiet mount
mounts+=("$tmp/ghostie-b/memories")
ls "$tmp/ghostie-b/memories" >/dev/null
echo '{"new":true}' >"$tmp/ghostie-a/memories/w6/new.json"
r[ghostie.w6]=$(seconds_until_visible "$tmp/ghostie-b/memories/w6/new.json")
"$bin" --home "$tmp/ghostie-b" --quiet unmount
ghostie_unmount

d=$(rclone_mount w6)
rclone_mount_at "$tmp/rclone-mnt2" "$tmp/rclone-cache2"
ls "$tmp/rclone-mnt2/w6" >/dev/null 2>&1 || true
echo '{"new":true}' >"$d/new.json"
r[rclone.w6]=$(seconds_until_visible "$tmp/rclone-mnt2/w6/new.json")
fusermount3 -u "$tmp/rclone-mnt2"
rclone_unmount

d=$(gocryptfs_mount w6)
mkdir -p "$tmp/gocryptfs-mnt2"
gocryptfs -q -extpass "echo bench-passphrase" "$gc_cipher" "$tmp/gocryptfs-mnt2" >>"$log" 2>&1
mounts+=("$tmp/gocryptfs-mnt2")
ls "$tmp/gocryptfs-mnt2/w6" >/dev/null
echo '{"new":true}' >"$d/new.json"
r[gocryptfs.w6]=$(seconds_until_visible "$tmp/gocryptfs-mnt2/w6/new.json")
fusermount3 -u "$tmp/gocryptfs-mnt2"
gocryptfs_unmount
r[native.w6]=0
echo "  W6: ghostie ${r[ghostie.w6]}s  rclone ${r[rclone.w6]}s  gocryptfs ${r[gocryptfs.w6]}s"

# --- W7: local work while the backend stalls ------------------------------------

ghostie_w7 "$tmp/ghostie-a"

# --- peak RSS with many files --------------------------------------------------

rss=skipped
if ((rss_files > 0)); then
    echo "== peak RSS of a mount holding $rss_files files"
    many=$tmp/ghostie-many
    mkdir -p "$tmp/many-vault"
    "$bin" --home "$many" --quiet setup --backend local --path "$tmp/many-vault" --device many
    python3 - "$many/memories" "$rss_files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"m{i:06d}.json"), "w") as f:
        f.write('{"i": %d, "content": "%s"}\n' % (i, "x" * (1000 + i % 3000)))
PY
    "$bin" --home "$many" --quiet push
    "$bin" --home "$many" --quiet mount
    mounts+=("$many/memories")
    pid=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['pid'])" "$many/sync/mount-status.json")
    ls -lR "$many/memories" >/dev/null
    find "$many/memories" -name '*.json' | awk 'NR <= 20000' | xargs cat >/dev/null
    rss=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")
    "$bin" --home "$many" --quiet unmount
    echo "  peak RSS: $rss MiB"
fi

# --- table ---------------------------------------------------------------------

{
    echo "ghostie-fs mount benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, tmp on $(df --output=fstype "$tmp" | tail -1)"
    printf "%d files (%.1f MB), medians of %d; W5 %d MiB; ratios are system / native\n" "$files" "$(calc "$total_bytes / 1e6")" "$runs" "$big_mib"
    echo
    printf '%-30s %10s %10s %10s %10s\n' "workload (seconds)" native ghostie-fs gocryptfs rclone
    row() {
        local name=$1 key=$2
        printf '%-30s' "$name"
        for sys in "${systems[@]}"; do printf ' %10.3f' "${r[$sys.$key]}"; done
        echo
    }
    rowr() {
        local name=$1 key=$2
        printf '%-30s' "  vs native"
        for sys in "${systems[@]}"; do printf ' %10s' "$(ratio "${r[$sys.$key]}" "${r[native.$key]}")"; done
        echo
    }
    row "W1 create, last close" w1; rowr "" w1
    row "W1 create, durable" w1d; rowr "" w1d
    row "W2 ls -l" w2l; rowr "" w2l
    row "W2 find" w2f; rowr "" w2f
    row "W3 cat all, warm" w3; rowr "" w3
    row "W4 cat all, cold" w4; rowr "" w4
    row "W4n cat by name, cold" w4n; rowr "" w4n
    row "W5 dd write" w5w
    row "W5 read, warm" w5r
    row "W5 read, cold" w5c
    printf '%-30s %10s %10s %10s %10s\n' "W6 second mount sees a file" - "${r[ghostie.w6]}" "${r[gocryptfs.w6]}" "${r[rclone.w6]}"
    printf '%-30s %10s %10.3f\n' "W7 ls -l + cat 100 cached" - "${r[ghostie.w7]}"
    printf '%-30s %10s %10.3f\n' "W7 the same, backend stalled" - "${r[ghostie.w7s]}"
    echo
    echo "W4n by name vs W4 after a listing: ghostie-fs $(ratio "${r[ghostie.w4n]}" "${r[ghostie.w4]}") (goal 2×)"
    echo "W7 stalled vs answering: ghostie-fs $(ratio "${r[ghostie.w7s]}" "${r[ghostie.w7]}") (goal 2×; ${r[ghostie.w7held]} requests stalled meanwhile)"
    echo "W5 ghostie-fs vs gocryptfs: write $(ratio "${r[gocryptfs.w5w]}" "${r[ghostie.w5w]}") as fast, warm read $(ratio "${r[gocryptfs.w5r]}" "${r[ghostie.w5r]}"), cold read $(ratio "${r[gocryptfs.w5c]}" "${r[ghostie.w5c]}")"
    echo "peak RSS of the ghostie-fs mount with $rss_files files: $rss MiB"
} | tee "$results"
