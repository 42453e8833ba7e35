#!/usr/bin/env bash
# A two-device walk-through of ghostie-fs over a vault in a local folder: a
# laptop creates the vault, a desktop joins, both mount their memories folder
# (FUSE); a memory written on one appears on the other; both edit the same
# memory while the vault is unreachable, and the concurrent edit shows up as a
# .conflict-<device> sibling on both, resolved with a plain rm; both unmount.
# Where there is no FUSE (Android/Termux), the same protocol runs over a plain
# folder with push/pull/sync: tests/two_devices.rs and the README show it.
#
#   ./scripts/demo.sh          # everything happens in a temp dir, removed at exit
#   KEEP=1 ./scripts/demo.sh   # keep the temp dir to poke around afterwards
#
# Each command is printed before it runs, with the temp dir shown as $DEMO.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# The mount needs the FUSE helpers (fusermount3); as root they are installed.
source scripts/lib/packages.sh
echo "checking system packages (fuse3, attr)…"
ensure_packages fusermount3:fuse3 getfattr:attr mountpoint:util-linux
if [[ ! -e /dev/fuse ]]; then
    echo "error: /dev/fuse is missing: this machine cannot mount FUSE filesystems" >&2
    exit 1
fi

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
    # Never leave a mount behind, whatever happened.
    for m in "$DEMO"/*/memories; do
        if mountpoint -q "$m" 2>/dev/null; then
            fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        fi
    done
    if [[ -d $DEMO/vault.offline ]]; then mv "$DEMO/vault.offline" "$DEMO/vault"; fi
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

# wait_for WHAT SECONDS TEST...: waits until the test holds, showing how long
# it took (the mount polls the vault every second by default).
wait_for() {
    local what=$1 secs=$2
    shift 2
    local start=$SECONDS
    while ! "$@"; do
        if ((SECONDS - start >= secs)); then
            echo "✘ expected within ${secs}s: $what" >&2
            surprises=$((surprises + 1))
            return 0
        fi
        sleep 0.1
    done
    echo "✔ $what (after $((SECONDS - start))s or less)"
}
same_file() { cmp -s "$1" "$2"; }

echo "DEMO=$DEMO"
show export GHOSTIE_PASSPHRASE=demo-passphrase
export GHOSTIE_PASSPHRASE=demo-passphrase
desktop=$DEMO/desktop

step "The laptop creates a vault in a plain folder (any storage provider works the same way)"
run mkdir -p "$vault"
run ghostie-fs --home "$laptop" setup --backend local --path "$vault" --device laptop

step "The desktop joins the vault with the passphrase alone"
run ghostie-fs --home "$desktop" setup --backend local --path "$vault" --device desktop

step "Both mount their memories folder; Ghost, ls, cat, editors use it as a normal folder"
run ghostie-fs --home "$laptop" mount
run ghostie-fs --home "$desktop" mount
run mount -t fuse.ghostie-fs

step "Ghost on the laptop remembers something"
write_memory "$laptop/memories/$main_memory" <<'JSON'
{
  "timestamp": "2025-06-28T14:30:00Z",
  "category": "preference",
  "content": "Prefers dark roast coffee, no sugar.",
  "context": {"conversation": "morning-routine", "confidence": 0.9}
}
JSON
write_memory "$laptop/memories/projects/$other_memory" <<'JSON'
{
  "timestamp": "2025-06-28T15:02:11Z",
  "category": "project",
  "content": "Working on the garden irrigation planner; wants a weekly summary.",
  "context": {"conversation": "planning", "confidence": 0.8}
}
JSON

step "…and the desktop sees it, without doing anything"
wait_for "the desktop shows the laptop's memory" 10 same_file "$laptop/memories/$main_memory" "$desktop/memories/$main_memory"
run ls -la "$desktop/memories" "$desktop/memories/projects"
run cat "$desktop/memories/$main_memory"
run getfattr -d "$desktop/memories/$main_memory"

step "What the storage provider sees: opaque, encrypted objects, no names"
run find "$vault" -type f

step "The network goes down (the vault is unreachable) and both devices edit the same memory"
run mv "$vault" "$DEMO/vault.offline"
write_memory "$laptop/memories/$main_memory" <<'JSON'
{
  "timestamp": "2025-06-28T14:30:00Z",
  "category": "preference",
  "content": "Prefers dark roast coffee with oat milk.",
  "context": {"conversation": "morning-routine", "confidence": 0.95}
}
JSON
write_memory "$desktop/memories/$main_memory" <<'JSON'
{
  "timestamp": "2025-06-28T14:30:00Z",
  "category": "preference",
  "content": "Switched from coffee to green tea in the mornings.",
  "context": {"conversation": "health-check-in", "confidence": 0.85}
}
JSON
# The mount tries to upload within a moment of each change; give it that moment.
sleep 1
run ghostie-fs --home "$laptop" status

step "The network comes back: both edits are kept, one as a .conflict-<device> sibling"
run mv "$DEMO/vault.offline" "$vault"
has_sibling() { compgen -G "$1/memories/$main_memory.conflict-*" >/dev/null; }
no_sibling() { ! has_sibling "$1"; }
wait_for "a conflict sibling on the laptop" 15 has_sibling "$laptop"
wait_for "a conflict sibling on the desktop" 15 has_sibling "$desktop"
run ls -la "$laptop/memories"
run cat "$laptop/memories/$main_memory" "$laptop/memories/$main_memory".conflict-*

step "Resolve it the way a file manager would: remove the sibling you do not want"
sibling=$(compgen -G "$laptop/memories/$main_memory.conflict-*")
run rm "$sibling"
wait_for "no sibling left on the desktop" 10 no_sibling "$desktop"
wait_for "both show the same memory" 10 same_file "$laptop/memories/$main_memory" "$desktop/memories/$main_memory"
run ls -la "$desktop/memories"

step "Both unmount; every change is in the vault first"
run ghostie-fs --home "$laptop" unmount
run ghostie-fs --home "$desktop" unmount
expect "nothing mounted any more" bash -c "! mount -t fuse.ghostie-fs | grep -q '$DEMO'"

if ((surprises > 0)); then
    printf '\n%d thing(s) did not turn out as expected (see ✘ above)\n' "$surprises" >&2
    exit 1
fi
printf '\nDone: two mounted devices, one encrypted vault, one resolved conflict.\n'
