#!/usr/bin/env bash
# Benchmark of the folder-sync engine against its peers, for 10,000
# memory-like JSON files (1-8 KiB each):
#
#   ghostie-fs push to a new local vault, pull on a second device, no-change push
#   rclone sync through an rclone crypt remote over a local folder, both ways
#   cp -r, as the floor
#   sealing throughput (ghostie-fs bench-seal) against openssl's AES-256-GCM
#
#   ./bench/engine.sh
#
# Knobs (environment): BENCH_FILES (10000), BENCH_RUNS (3), BENCH_SEAL_MIB (512),
# BENCH_SKIP_BUILD=1 (use the binary already built), BENCH_PEERS_ONLY=1 (measure
# only rclone, cp and openssl: to compare machines before ghostie-fs builds),
# BENCH_TMPDIR (/tmp; /dev/shm takes the disk out of the numbers, which on a
# shared VM disk can vary 10× from one run to the next, cp included).
#
# Everything happens in a temp dir under $BENCH_TMPDIR, removed at exit. The table is
# printed and written to bench/results-engine.txt.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

files=${BENCH_FILES:-10000}
runs=${BENCH_RUNS:-3}
seal_mib=${BENCH_SEAL_MIB:-512}
peers_only=${BENCH_PEERS_ONLY:-0}
results=$repo/bench/results-engine.txt

die() {
    echo "error: $*" >&2
    exit 1
}

# --- tools -------------------------------------------------------------------

install_if_missing() {
    local cmd=$1 pkg=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [[ $(id -u) -eq 0 ]] || die "$cmd is missing: apt-get install $pkg"
    echo "installing $pkg…"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg"; } >/dev/null 2>&1 \
        || die "could not install $pkg"
}
install_if_missing rclone rclone
install_if_missing openssl openssl
install_if_missing python3 python3

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$repo/$target_dir
bin=$target_dir/release/ghostie-fs
if [[ $peers_only != 1 ]]; then
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        echo "building ghostie-fs (cargo build --release)…"
        cargo build --release --quiet
    fi
    [[ -x $bin ]] || die "no ghostie-fs binary at $bin (build it, or run with BENCH_PEERS_ONLY=1 to measure only the peers)"
fi

tmp=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/ghostie-bench.XXXXXX")
log=$tmp/commands.log
# The temp dir goes either way; on failure the end of the command log goes to
# stderr first, since it is the only record of what went wrong.
finish() {
    local status=$?
    if ((status != 0)) && [[ -s $log ]]; then
        echo "--- last lines of the command log ---" >&2
        tail -n 30 "$log" >&2
    fi
    rm -rf "$tmp"
}
trap finish EXIT

# Let no user setting leak in: every ghostie-fs command gets --home, and the
# passphrase comes from the environment so PBKDF2 runs without a prompt.
unset GHOSTIE_HOME GHOSTIE_PASSPHRASE_FILE
export GHOSTIE_PASSPHRASE=bench-passphrase

# --- timing ------------------------------------------------------------------

# Timing in Python around the child process: a monotonic clock, and neither
# the start-up of the timer nor of bash's subshells lands inside the interval.
cat >"$tmp/timeit.py" <<'PY'
import subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
rc = subprocess.run(cmd).returncode
t1 = time.perf_counter()
with open(out, "w") as f:
    f.write(f"{t1 - t0:.6f}\n")
sys.exit(rc)
PY

# timed CMD...: runs CMD (output to the log), prints the seconds it took.
timed() {
    printf '\n$ %s\n' "$*" >>"$log"
    if ! python3 "$tmp/timeit.py" "$tmp/elapsed" "$@" >>"$log" 2>&1; then
        echo "error: failed: $*" >&2
        tail -n 20 "$log" >&2
        return 1
    fi
    cat "$tmp/elapsed"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# calc EXPR: floating-point arithmetic without bc.
calc() {
    awk "BEGIN { print $* }"
}

# bench NAME SETUP_FN CMD...: runs SETUP_FN (untimed) then CMD, $runs times,
# and records the median seconds as secs[NAME].
declare -A secs
nothing() { :; }
bench() {
    local name=$1 setup=$2 i t samples=()
    shift 2
    printf '  %-34s' "$name"
    for ((i = 1; i <= runs; i++)); do
        "$setup" "$i"
        # Flush what the setup (and the previous run's clean-up) left dirty,
        # so its write-back does not land inside the next timed interval.
        sync
        t=$(timed "$@")
        samples+=("$t")
        printf ' %8.3fs' "$t"
    done
    secs[$name]=$(median "${samples[@]}")
    printf '   median %.3fs\n' "${secs[$name]}"
}

# --- data --------------------------------------------------------------------

src=$tmp/src
echo "generating $files memory files…"
python3 "$repo/bench/lib/memories.py" "$src" "$files"
total_bytes=$(find "$src" -type f -printf '%s\n' | awk '{ n += $1 } END { print n }')
n_made=$(find "$src" -type f | wc -l)
((n_made == files)) || die "generated $n_made files, expected $files"
printf '%d files, %.1f MB\n' "$files" "$(calc "$total_bytes / 1e6")"

# Every tree a run copied must come back whole; a fast wrong answer is no answer.
same_tree() {
    diff -rq "$1" "$2" >/dev/null || die "$3: $2 differs from $1"
}

# --- ghostie-fs --------------------------------------------------------------

if [[ $peers_only != 1 ]]; then
    echo "ghostie-fs:"
    home1=$tmp/laptop
    home2=$tmp/phone
    vault=$tmp/vault

    new_vault_with_files() {
        rm -rf "$home1" "$vault"
        mkdir -p "$vault"
        "$bin" --home "$home1" setup --backend local --path "$vault" --device laptop >>"$log" 2>&1 \
            || die "ghostie-fs setup failed"
        mkdir -p "$home1/memories"
        cp -a "$src/." "$home1/memories/"
    }
    bench "push (new vault)" new_vault_with_files "$bin" --home "$home1" push

    new_device() {
        rm -rf "$home2"
        "$bin" --home "$home2" setup --backend local --path "$vault" --device "phone$1" >>"$log" 2>&1 \
            || die "ghostie-fs setup (join) failed"
    }
    bench "pull (new device)" new_device "$bin" --home "$home2" pull
    same_tree "$src" "$home2/memories" "ghostie-fs pull"

    bench "push (no change)" nothing "$bin" --home "$home1" push
fi

# --- rclone crypt ------------------------------------------------------------

echo "rclone $(rclone version 2>/dev/null | awk 'NR == 1 { print $2 }') (crypt over a local folder, default settings):"
rvault=$tmp/rclone-vault
rconf=$tmp/rclone.conf
cat >"$rconf" <<CONF
[crypt]
type = crypt
remote = $rvault
filename_encryption = standard
directory_name_encryption = true
password = $(rclone obscure bench-passphrase)
password2 = $(rclone obscure bench-salt)
CONF
empty_rclone_vault() {
    rm -rf "$rvault"
    mkdir -p "$rvault"
}
bench "rclone sync to crypt (push)" empty_rclone_vault rclone --config "$rconf" sync "$src" crypt:
rdst=$tmp/rclone-dst
empty_rclone_dst() {
    rm -rf "$rdst"
}
bench "rclone sync from crypt (pull)" empty_rclone_dst rclone --config "$rconf" sync crypt: "$rdst"
same_tree "$src" "$rdst" "rclone sync from crypt"
bench "rclone sync (no change)" nothing rclone --config "$rconf" sync "$src" crypt:

# --- cp ----------------------------------------------------------------------

echo "cp -r:"
cp_push=$tmp/cp-push
cp_pull=$tmp/cp-pull
empty_cp_push() { rm -rf "$cp_push"; }
bench "cp -r (push direction)" empty_cp_push cp -r "$src" "$cp_push"
empty_cp_pull() { rm -rf "$cp_pull"; }
bench "cp -r (pull direction)" empty_cp_pull cp -r "$cp_push" "$cp_pull"
same_tree "$src" "$cp_pull" "cp -r"
rm -rf "$cp_push" "$cp_pull" "$rdst" "$rvault"

# --- sealing -----------------------------------------------------------------

echo "sealing:"
openssl_line=$(openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3 2>/dev/null | awk '/^AES-256-GCM/ { print $NF }')
[[ $openssl_line =~ ^([0-9.]+)k$ ]] || die "could not read openssl speed output ('$openssl_line')"
# openssl reports 1000s of bytes per second.
openssl_mbs=$(calc "${BASH_REMATCH[1]} / 1000")
printf '  %-34s %10.0f MB/s\n' "openssl aes-256-gcm, 16 KiB, 1 core" "$openssl_mbs"

seal_mbs=""
seal_push_mbs=""
if [[ $peers_only != 1 ]]; then
    big=$tmp/big
    mkdir -p "$big"
    head -c "$((seal_mib * 1024 * 1024))" /dev/urandom >"$big/blob.bin"
    seal_out=$("$bin" --home "$home1" bench-seal "$big/blob.bin" 2>>"$log") \
        || die "ghostie-fs bench-seal failed (the hidden subcommand; see the log below)"
    # "sealed <bytes> bytes in <secs> s: <MB/s> MB/s"
    [[ $seal_out =~ ^sealed\ ([0-9]+)\ bytes\ in\ ([0-9.]+)\ s:\ ([0-9.]+)\ MB/s ]] \
        || die "unexpected bench-seal output: '$seal_out'"
    seal_mbs=${BASH_REMATCH[3]}
    printf '  %-34s %10.0f MB/s\n' "ghostie-fs bench-seal, $seal_mib MiB" "$seal_mbs"
    # Second line: the same with the plaintext's SHA-256, which every version records.
    seal_hash_mbs=""
    if [[ $seal_out =~ sealed\+hashed\ [0-9]+\ bytes\ in\ [0-9.]+\ s:\ ([0-9.]+)\ MB/s ]]; then
        seal_hash_mbs=${BASH_REMATCH[1]}
        printf '  %-34s %10.0f MB/s\n' "  with SHA-256 of the plaintext" "$seal_hash_mbs"
    fi

    # End to end, for context: one large file through push (scan, hash, seal,
    # write the pack) on a fresh vault.
    rm -rf "$home1" "$vault" "$home2"
    mkdir -p "$vault"
    "$bin" --home "$home1" setup --backend local --path "$vault" --device laptop >>"$log" 2>&1 \
        || die "ghostie-fs setup failed"
    mkdir -p "$home1/memories"
    mv "$big/blob.bin" "$home1/memories/"
    t=$(timed "$bin" --home "$home1" push)
    seal_push_mbs=$(calc "$seal_mib * 1048576 / $t / 1e6")
    printf '  %-34s %10.0f MB/s\n' "push of one $seal_mib MiB file" "$seal_push_mbs"
fi

# --- table -------------------------------------------------------------------

rate() { calc "$files / ${secs[$1]}"; }
report() {
    printf 'ghostie-fs engine benchmark, %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'commit %s; %s; %d cores; %s\n' \
        "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo none)" \
        "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(nproc)" \
        "$(uname -sr)"
    printf '%d files, %.1f MB (1-8 KiB JSON), median of %d runs, warm page cache, in %s (%s)\n\n' \
        "$files" "$(calc "$total_bytes / 1e6")" "$runs" "${BENCH_TMPDIR:-/tmp}" \
        "$(df --output=fstype "$tmp" | tail -n 1)"
    printf '%-30s %10s %10s %12s %10s\n' "" "seconds" "files/s" "vs rclone" "vs cp"
    row() {
        local name=$1 rclone_name=$2 cp_name=$3 vs_rclone="" vs_cp=""
        [[ -n ${secs[$name]:-} ]] || return 0
        if [[ -n $rclone_name && -n ${secs[$rclone_name]:-} ]]; then
            vs_rclone=$(printf '%.1f×' "$(calc "${secs[$rclone_name]} / ${secs[$name]}")")
        fi
        if [[ -n $cp_name && -n ${secs[$cp_name]:-} ]]; then
            vs_cp=$(printf '%.2f×' "$(calc "${secs[$cp_name]} / ${secs[$name]}")")
        fi
        printf '%-30s %10.3f %10.0f %12s %10s\n' "$name" "${secs[$name]}" "$(rate "$name")" "$vs_rclone" "$vs_cp"
    }
    row "push (new vault)" "rclone sync to crypt (push)" "cp -r (push direction)"
    row "pull (new device)" "rclone sync from crypt (pull)" "cp -r (pull direction)"
    row "push (no change)" "rclone sync (no change)" ""
    row "rclone sync to crypt (push)" "" "cp -r (push direction)"
    row "rclone sync from crypt (pull)" "" "cp -r (pull direction)"
    row "rclone sync (no change)" "" ""
    row "cp -r (push direction)" "" ""
    row "cp -r (pull direction)" "" ""
    printf '\n(vs rclone, vs cp: speed of the row over that of the peer, >1 is faster;\n'
    printf ' the goal for ghostie-fs push and pull is ≥ 10× rclone)\n\n'

    printf '%-30s %10s\n' "sealing" "MB/s"
    if [[ -n $seal_mbs ]]; then printf '%-30s %10.0f\n' "ghostie-fs bench-seal" "$seal_mbs"; fi
    if [[ -n ${seal_hash_mbs:-} ]]; then printf '%-30s %10.0f\n' "  with SHA-256 of plaintext" "$seal_hash_mbs"; fi
    if [[ -n $seal_push_mbs ]]; then printf '%-30s %10.0f\n' "push of one $seal_mib MiB file" "$seal_push_mbs"; fi
    printf '%-30s %10.0f\n' "openssl aes-256-gcm 1 core" "$openssl_mbs"
    if [[ -n $seal_mbs ]]; then
        printf 'bench-seal / openssl: %.2f (goal ≥ 0.5)\n' "$(calc "$seal_mbs / $openssl_mbs")"
    fi
    if [[ -n ${secs["push (new vault)"]:-} ]]; then
        local push_x pull_x
        push_x=$(calc "${secs["rclone sync to crypt (push)"]} / ${secs["push (new vault)"]}")
        pull_x=$(calc "${secs["rclone sync from crypt (pull)"]} / ${secs["pull (new device)"]}")
        printf 'push %.1f× rclone (%s), pull %.1f× rclone (%s)\n' \
            "$push_x" "$(awk "BEGIN { print ($push_x >= 10) ? \"goal met\" : \"below goal\" }")" \
            "$pull_x" "$(awk "BEGIN { print ($pull_x >= 10) ? \"goal met\" : \"below goal\" }")"
    fi
    printf '\nversions: rclone %s; %s; %s\n' \
        "$(rclone version 2>/dev/null | awk 'NR == 1 { print $2 }')" "$(openssl version)" \
        "$( [[ $peers_only = 1 ]] && echo "ghostie-fs not measured" || "$bin" --version 2>/dev/null || echo "ghostie-fs (no --version)")"
}

echo
report | tee "$results"
echo
echo "written to ${results#"$repo"/}"
