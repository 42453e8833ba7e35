# Helpers shared by the mount benchmarks (bench/mount.sh, bench/s3.sh). Sourced;
# `log` must name the command log before `timed` is used.

bench_lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
    echo "error: $*" >&2
    exit 1
}
now() { python3 -c 'import time; print(f"{time.time():.6f}")'; }
calc() { awk "BEGIN { printf \"%.6f\\n\", $* }"; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { calc "$1 / $2" | awk '{ printf "%.2f×", $1 }'; }
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}
# write_all SRC DEST: seconds until the writer's last close returned.
write_all() { python3 "$bench_lib/writer.py" "$1" "$2"; }
# timed CMD...: seconds CMD took (its output to the log).
timed() {
    local t0 t1
    printf '\n$ %s\n' "$*" >>"$log"
    t0=$(now)
    "$@" >>"$log" 2>&1 || die "failed: $*"
    t1=$(now)
    calc "$t1 - $t0"
}
cat_all() { cat "$1"/*.json >/dev/null; }
# cat_by_name DIR LIST: cats the files LIST names, in its order, without listing DIR
# (a program that keeps its own index of its files).
cat_by_name() { (cd "$1" && xargs cat <"$2" >/dev/null); }
# shuffled_names SRC: the file names of SRC in a fixed pseudo-random order.
shuffled_names() {
    python3 - "$1" <<'PY'
import os, random, sys
names = sorted(os.listdir(sys.argv[1]))
random.Random(7).shuffle(names)
print("\n".join(names))
PY
}
ls_l() { ls -l "$1" >/dev/null; }
find_all() { find "$1" >/dev/null; }
# seconds_until_visible PATH: polls every 10 ms, gives up after 120 s.
seconds_until_visible() {
    python3 - "$1" <<'PY'
import os, sys, time
t0 = time.time()
while time.time() - t0 < 120:
    if os.path.exists(sys.argv[1]):
        print(f"{time.time() - t0:.3f}")
        sys.exit(0)
    time.sleep(0.01)
print("120+")
PY
}
# ghostie_drained STATUS_FILE SINCE: waits for a mount status written after SINCE
# (epoch seconds) that shows an empty queue.
ghostie_drained() {
    python3 - "$1" "$2" <<'PY'
import json, sys, time
path, since = sys.argv[1], float(sys.argv[2])
start = time.time()
while time.time() - start < 300:
    try:
        s = json.load(open(path))
        if s["pending_uploads"] == 0 and s["open_dirty"] == 0 and s["updated_ms"] / 1000 >= since:
            sys.exit(0)
    except (OSError, ValueError, KeyError):
        pass
    time.sleep(0.02)
sys.exit("ghostie-fs did not drain within 300 s")
PY
}

# The workloads, over every system in `systems`, into the associative array `r`
# (r[SYS.KEY]). Each system SYS defines SYS_mount NAME (mounts fresh, makes folder
# NAME, prints its path), SYS_unmount, SYS_durable SINCE COUNT (waits until COUNT
# files written since SINCE are in its backend) and, if deletions land late,
# SYS_settled (waits until a deleted folder is gone from the backend).

# small_files_workloads SRC COUNT RUNS: W1-W4 on the COUNT files of SRC, medians of RUNS.
# W4 reads cold after a listing (the shell's glob lists the folder); W4n reads cold by
# name, from a shuffled list, never listing.
small_files_workloads() {
    local src=$1 count=$2 runs=$3 sys i d t0 t1 wt
    local w1 w1d w2l w2f w3 w4 w4n
    local names=$tmp/names.shuffled
    shuffled_names "$src" >"$names"
    for sys in "${systems[@]}"; do
        echo "== $sys"
        w1=() w1d=() w2l=() w2f=() w3=() w4=() w4n=()
        for ((i = 1; i <= runs; i++)); do
            d=$("${sys}_mount" "run$i")
            drop_caches
            t0=$(now)
            wt=$(write_all "$src" "$d")
            "${sys}_durable" "$(calc "$t0 + $wt")" "$count"
            t1=$(now)
            w1+=("$wt")
            w1d+=("$(calc "$t1 - $t0")")
            w2l+=("$(timed ls_l "$d")")
            w2f+=("$(timed find_all "$d")")
            cat_all "$d"
            w3+=("$(timed cat_all "$d")")
            "${sys}_unmount"
            d=$("${sys}_mount" "run$i")
            drop_caches
            w4+=("$(timed cat_all "$d")")
            "${sys}_unmount"
            d=$("${sys}_mount" "run$i")
            drop_caches
            w4n+=("$(timed cat_by_name "$d" "$names")")
            rm -rf "$d"
            if declare -F "${sys}_settled" >/dev/null; then "${sys}_settled"; fi
            "${sys}_unmount"
            printf '  run %d: W1 %.2fs (durable %.2fs)  ls -l %.2fs  find %.2fs  warm %.2fs  cold %.2fs  cold by name %.2fs\n' \
                "$i" "$wt" "${w1d[-1]}" "${w2l[-1]}" "${w2f[-1]}" "${w3[-1]}" "${w4[-1]}" "${w4n[-1]}"
        done
        r[$sys.w1]=$(median "${w1[@]}")
        r[$sys.w1d]=$(median "${w1d[@]}")
        r[$sys.w2l]=$(median "${w2l[@]}")
        r[$sys.w2f]=$(median "${w2f[@]}")
        r[$sys.w3]=$(median "${w3[@]}")
        r[$sys.w4]=$(median "${w4[@]}")
        r[$sys.w4n]=$(median "${w4n[@]}")
    done
}

# big_file_workloads BIG: W5, BIG written with dd, read back warm and cold.
big_file_workloads() {
    local big=$1 sys d
    for sys in "${systems[@]}"; do
        d=$("${sys}_mount" big)
        r[$sys.w5w]=$(timed dd if="$big" of="$d/big.bin" bs=1M status=none)
        "${sys}_durable" "$(now)" 1
        cat "$d/big.bin" >/dev/null
        r[$sys.w5r]=$(timed cat_one "$d/big.bin")
        "${sys}_unmount"
        d=$("${sys}_mount" big)
        drop_caches
        r[$sys.w5c]=$(timed cat_one "$d/big.bin")
        rm -rf "$d"
        "${sys}_unmount"
        printf '  %-9s W5 write %.2fs  warm read %.2fs  cold read %.2fs\n' "$sys" "${r[$sys.w5w]}" "${r[$sys.w5r]}" "${r[$sys.w5c]}"
    done
}
cat_one() { cat "$1" >/dev/null; }

# ls_cat DIR: `ls -l` of DIR and `cat` of its files.
ls_cat() { ls -l "$1" >/dev/null && cat "$1"/*.json >/dev/null; }

# ghostie_w7 HOME: W7, on ghostie-fs alone: `ls -l` and `cat` of 100 cached files,
# with the backend answering, then while every backend request stalls 5 s and a poll
# and an upload are waiting on it (GHOSTIE_STALL_FILE). Medians of 5 into
# r[ghostie.w7] and r[ghostie.w7s].
ghostie_w7() {
    local home=$1 stall=$tmp/w7-stall i t=()
    local m=$home/memories
    rm -f "$stall" "$stall.held"
    GHOSTIE_STALL_FILE=$stall "$bin" --home "$home" --quiet mount --poll 1
    mounts+=("$m")
    mkdir -p "$m/w7"
    for i in $(seq 1 100); do printf '{"i":%d,"content":"a cached memory"}\n' "$i" >"$m/w7/m$i.json"; done
    ghostie_drained "$home/sync/mount-status.json" "$(now)"
    cat "$m"/w7/*.json >/dev/null
    for i in 1 2 3 4 5; do t+=("$(timed ls_cat "$m/w7")"); done
    r[ghostie.w7]=$(median "${t[@]}")
    echo 5 >"$stall"
    echo '{"queued":true}' >"$m/w7/queued.json"
    # Wait until an upload and a poll are stuck in the stalled backend.
    for _ in $(seq 1 200); do
        (($(wc -l <"$stall.held" 2>/dev/null || echo 0) >= 2)) && break
        sleep 0.05
    done
    t=()
    for i in 1 2 3 4 5; do t+=("$(timed ls_cat "$m/w7")"); done
    r[ghostie.w7s]=$(median "${t[@]}")
    r[ghostie.w7held]=$(wc -l <"$stall.held")
    rm -f "$stall"
    rm -rf "$m/w7"
    "$bin" --home "$home" --quiet unmount
    printf '  W7: ls -l + cat of 100 cached files %.3fs; with every request stalled 5 s %.3fs (%s requests stalled meanwhile)\n' \
        "${r[ghostie.w7]}" "${r[ghostie.w7s]}" "${r[ghostie.w7held]}"
}
