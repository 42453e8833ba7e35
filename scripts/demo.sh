#!/usr/bin/env bash
# A two-device walk-through of ghostie-fs over a vault in a local folder:
# a laptop creates the vault, a phone joins, both edit the same memory, the
# conflict shows up as a sibling file and gets resolved.
#
#   ./scripts/demo.sh          # everything happens in a temp dir, removed at exit
#   KEEP=1 ./scripts/demo.sh   # keep the temp dir to poke around afterwards
#
# Each command is printed before it runs, with the temp dir shown as $DEMO.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

echo "building ghostie-fs (cargo build --release)…"
cargo build --release --quiet
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir = /* ]] || target_dir=$repo/$target_dir
bin=$target_dir/release/ghostie-fs
if [[ ! -x $bin ]]; then
    echo "error: the build did not produce $bin" >&2
    exit 1
fi

DEMO=$(mktemp -d /tmp/ghostie-demo.XXXXXX)
cleanup() {
    if [[ ${KEEP:-0} = 1 ]]; then
        echo "kept the demo in $DEMO"
    else
        rm -rf "$DEMO"
    fi
}
trap cleanup EXIT

# Put the binary on PATH under its own name so the printed commands read the
# way a user would type them.
mkdir -p "$DEMO/bin"
ln -s "$bin" "$DEMO/bin/ghostie-fs"
export PATH=$DEMO/bin:$PATH
# Keep the user's own ~/.ghostie out of it: every command gets --home.
unset GHOSTIE_HOME GHOSTIE_NEW_PASSPHRASE

laptop=$DEMO/laptop
phone=$DEMO/phone
vault=$DEMO/vault
main_memory=2025-06-28T14-30-00.json
other_memory=2025-06-28T15-02-11.json

if [[ -t 1 ]]; then
    bold=$'\033[1m' cyan=$'\033[1;36m' plain=$'\033[0m'
else
    bold='' cyan='' plain=''
fi

show() {
    local line
    line=$(printf '%q ' "$@")
    line=${line% }
    printf '\n%s$ %s%s\n' "$bold" "${line//$DEMO/\$DEMO}" "$plain"
}

run() {
    show "$@"
    "$@"
}

# For the steps where a conflict is the expected outcome: the exit status is
# shown, not treated as the demo failing.
run_tolerant() {
    show "$@"
    local status=0
    "$@" || status=$?
    if ((status != 0)); then echo "(exit status $status)"; fi
}

# write_memory FILE: writes stdin to FILE, showing it as a heredoc.
write_memory() {
    local file=$1 body
    body=$(cat)
    printf '\n%s$ cat > %s <<'"'"'JSON'"'"'%s\n%s\nJSON\n' "$bold" "${file//$DEMO/\$DEMO}" "$plain" "$body"
    mkdir -p "$(dirname "$file")"
    printf '%s\n' "$body" >"$file"
}

step() {
    printf '\n%s## %s%s\n' "$cyan" "$*" "$plain"
}

# The demo doubles as a smoke test: it says plainly when what it shows is not
# what it expected, and exits non-zero at the end.
surprises=0
expect() {
    local what=$1
    shift
    if "$@"; then
        echo "✔ $what"
    else
        echo "✘ expected: $what" >&2
        surprises=$((surprises + 1))
    fi
}
has_conflict_sibling() {
    compgen -G "$1/memories/$main_memory.conflict-*" >/dev/null
}
no_conflict_sibling() {
    ! has_conflict_sibling "$1"
}

echo "DEMO=$DEMO"
show export GHOSTIE_PASSPHRASE=demo-passphrase
export GHOSTIE_PASSPHRASE=demo-passphrase

step "The laptop creates a vault in a plain folder (any storage provider works the same way)"
run mkdir -p "$vault"
run ghostie-fs --home "$laptop" setup --backend local --path "$vault" --device laptop

step "Ghost on the laptop remembers two things"
write_memory "$laptop/memories/$main_memory" <<'JSON'
{
  "timestamp": "2025-06-28T14:30:00Z",
  "category": "preference",
  "content": "Prefers dark roast coffee, no sugar.",
  "context": {"conversation": "morning-routine", "confidence": 0.9}
}
JSON
write_memory "$laptop/memories/$other_memory" <<'JSON'
{
  "timestamp": "2025-06-28T15:02:11Z",
  "category": "project",
  "content": "Working on the garden irrigation planner; wants a weekly summary.",
  "context": {"conversation": "planning", "confidence": 0.8}
}
JSON
run ls -la "$laptop/memories"
run ghostie-fs --home "$laptop" push

step "What the storage provider sees: opaque, encrypted objects, no names"
run find "$vault" -type f

step "The phone joins the vault with the passphrase alone"
run ghostie-fs --home "$phone" setup --backend local --path "$vault" --device phone
run ghostie-fs --home "$phone" pull
run ls -la "$phone/memories"
run cat "$phone/memories/$main_memory"
expect "the phone has the laptop's memory" cmp -s "$laptop/memories/$main_memory" "$phone/memories/$main_memory"

step "Both devices change the same memory before syncing"
write_memory "$laptop/memories/$main_memory" <<'JSON'
{
  "timestamp": "2025-06-28T14:30:00Z",
  "category": "preference",
  "content": "Prefers dark roast coffee with oat milk.",
  "context": {"conversation": "morning-routine", "confidence": 0.95}
}
JSON
# The newest edit is shown at the path; make sure the phone's is newer even
# on a filesystem with coarse timestamps.
sleep 1
write_memory "$phone/memories/$main_memory" <<'JSON'
{
  "timestamp": "2025-06-28T14:30:00Z",
  "category": "preference",
  "content": "Switched from coffee to green tea in the mornings.",
  "context": {"conversation": "health-check-in", "confidence": 0.85}
}
JSON
run ghostie-fs --home "$laptop" push

step "The phone syncs (pull, then push): the concurrent edit becomes a sibling file"
run_tolerant ghostie-fs --home "$phone" sync
run ls -la "$phone/memories"
expect "a .conflict-<device> sibling on the phone" has_conflict_sibling "$phone"

step "The laptop pulls and sees the same two files"
run_tolerant ghostie-fs --home "$laptop" pull
run ls -la "$laptop/memories"
expect "a .conflict-<device> sibling on the laptop" has_conflict_sibling "$laptop"

step "Resolve it: keep the phone's version"
run_tolerant ghostie-fs --home "$phone" conflict
run ghostie-fs --home "$phone" conflict resolve "$main_memory" --keep phone
run ghostie-fs --home "$phone" sync
run ghostie-fs --home "$laptop" sync
run ls -la "$phone/memories"
run ls -la "$laptop/memories"
run cat "$laptop/memories/$main_memory"
expect "no sibling left on the phone" no_conflict_sibling "$phone"
expect "no sibling left on the laptop" no_conflict_sibling "$laptop"
expect "both devices show the phone's edit" cmp -s "$laptop/memories/$main_memory" "$phone/memories/$main_memory"

step "Where things stand"
run ghostie-fs --home "$laptop" status
run ghostie-fs --home "$phone" status
run ghostie-fs --home "$laptop" devices

if ((surprises > 0)); then
    printf '\n%d thing(s) did not turn out as expected (see ✘ above)\n' "$surprises" >&2
    exit 1
fi
printf '\nDone: two devices, one encrypted vault, one resolved conflict.\n'
