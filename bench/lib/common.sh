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
