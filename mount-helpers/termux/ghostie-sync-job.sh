#!/data/data/com.termux/files/usr/bin/bash
# Periodic folder sync for Termux, where there is no FUSE: run by Android's
# JobScheduler through termux-job-scheduler (see mount-helpers/README.md).
#
#   termux-job-scheduler --job-id 4242 \
#       --script ~/ghostie-fs/mount-helpers/termux/ghostie-sync-job.sh \
#       --period-ms 900000 --persisted true --network any
#
# Settings, all optional, from the environment:
#   GHOSTIE_HOME             the ghostie home (default ~/.ghostie)
#   GHOSTIE_PASSPHRASE_FILE  only for a device that does not remember its key
#                            (`ghostie-fs remember`, the way to set up a job):
#                            the passphrase, alone in a file only you can read
#                            (chmod 600); default $GHOSTIE_HOME/keys/passphrase
#   GHOSTIE_BIN              the binary (default: ghostie-fs on PATH)
#   GHOSTIE_JOB_TIMEOUT      seconds before a stuck sync is stopped (default 540)
#   GHOSTIE_JOB_LOG_LINES    lines the log keeps (default 1000)
#
# The shebang is Termux's bash; elsewhere run it as `bash ghostie-sync-job.sh`.
set -euo pipefail

# A job starts with a bare environment: no guarantee of HOME or of Termux's
# bin folder (nor of ~/.cargo/bin, where `cargo install` puts ghostie-fs) on PATH.
export HOME=${HOME:-/data/data/com.termux/files/home}
PREFIX=${PREFIX:-/data/data/com.termux/files/usr}
export PATH="$HOME/.cargo/bin:$PREFIX/bin:${PATH:-/usr/bin:/bin}"
# The log and lock sit next to secrets; keep everything this job makes private.
umask 077

home=${GHOSTIE_HOME:-$HOME/.ghostie}
passphrase_file=${GHOSTIE_PASSPHRASE_FILE:-$home/keys/passphrase}
bin=${GHOSTIE_BIN:-ghostie-fs}
# Android stops a job after about 10 minutes; stop the sync a little before,
# on our terms, so the log says what happened.
job_timeout=${GHOSTIE_JOB_TIMEOUT:-540}
max_lines=${GHOSTIE_JOB_LOG_LINES:-1000}

log_dir=$home/sync
log_file=$log_dir/termux-job.log
lock_file=$log_dir/termux-job.lock
mkdir -p "$log_dir"

log() {
    printf '%s %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$*" >>"$log_file"
}

# Keep the log bounded: a job every 15 minutes for a year is 35,000 runs.
trim_log() {
    local kept
    [[ -f $log_file ]] || return 0
    kept=$(mktemp "$log_dir/.termux-job.log.XXXXXX")
    if tail -n "$max_lines" "$log_file" >"$kept"; then
        mv -f "$kept" "$log_file"
    else
        rm -f "$kept"
    fi
}

# Two runs must never overlap: a slow network can make one run longer than
# the period, and two syncs of one home would fight over the folder. The
# later run skips instead of queueing, since the next period syncs anyway.
if command -v flock >/dev/null 2>&1; then
    exec 9>>"$lock_file"
    if ! flock -n 9; then
        log "skipped: the previous sync is still running"
        exit 0
    fi
else
    # No flock: a lock folder holding the owner's pid, taken over when that
    # process is gone (a run killed by Android leaves it behind).
    lock_dir=$lock_file.d
    if ! mkdir "$lock_dir" 2>/dev/null; then
        owner=$(cat "$lock_dir/pid" 2>/dev/null || true)
        if [[ -n $owner ]] && kill -0 "$owner" 2>/dev/null; then
            log "skipped: the previous sync (pid $owner) is still running"
            exit 0
        fi
        log "taking over a stale lock (pid ${owner:-unknown})"
        rm -rf "$lock_dir"
        mkdir "$lock_dir" || { log "skipped: lost the race for the lock"; exit 0; }
    fi
    echo $$ >"$lock_dir/pid"
    trap 'rm -rf "$lock_dir"' EXIT
fi

# A device that ran `ghostie-fs remember` needs no passphrase file; one that did
# not may still use one. Like ssh with a private key, a passphrase file others can
# read is refused, so a mistake shows in the log instead of leaking quietly.
passphrase_args=()
if [[ -e $passphrase_file ]]; then
    mode=$(stat -c '%a' "$passphrase_file" 2>/dev/null || echo unknown)
    if [[ ! $mode =~ ^[0-7]?[0-7]00$ ]]; then
        log "failed: $passphrase_file has mode $mode; run chmod 600 on it"
        trim_log
        exit 1
    fi
    passphrase_args=(--passphrase-file "$passphrase_file")
fi
if ! command -v "$bin" >/dev/null 2>&1; then
    log "failed: $bin not found on PATH ($PATH)"
    trim_log
    exit 1
fi

run=("$bin" --home "$home" --quiet ${passphrase_args[@]+"${passphrase_args[@]}"} sync)
if command -v timeout >/dev/null 2>&1; then
    run=(timeout "$job_timeout" "${run[@]}")
fi

started=$(date +%s)
log "sync started"
# Each line ghostie-fs prints goes to the log with its own timestamp.
set +e
"${run[@]}" 2>&1 </dev/null | while IFS= read -r line; do log "  $line"; done
status=${PIPESTATUS[0]}
set -e
elapsed=$(($(date +%s) - started))
if ((status == 0)); then
    log "sync done in ${elapsed}s"
elif ((status == 124)); then
    log "sync stopped after ${job_timeout}s (timeout); the next run carries on"
else
    log "sync failed (exit $status) after ${elapsed}s"
fi
trim_log
exit "$status"
