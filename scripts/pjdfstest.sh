#!/usr/bin/env bash
# POSIX conformance of the mount: runs pjdfstest (the Rust suite, from crates.io)
# against a fresh ghostie-fs mount and compares its failures with
# scripts/pjdfstest-expected.txt, the cases that do not apply to a single-owner
# synced filesystem (each with its reason). A failure not on that list, or a
# listed case that now passes, fails this script, so the list stays honest.
#
#   ./scripts/pjdfstest.sh [path/to/ghostie-fs]
#
# Needs root (pjdfstest switches users), /dev/fuse, and installs what it needs:
# libacl1-dev and acl (Debian), the users "tests" and "nobody", and pjdfstest
# itself into $GHOSTIE_TOOLS (default /var/cache/ghostie-fs-tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/packages.sh

bin=${1:-${CARGO_TARGET_DIR:-target}/debug/ghostie-fs}
[[ -x $bin ]] || { echo "no binary at $bin (cargo build first)" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
tools=${GHOSTIE_TOOLS:-/var/cache/ghostie-fs-tools}
version=0.2.2

if [[ $(id -u) -ne 0 ]]; then
    echo "pjdfstest needs root (it switches users)" >&2
    exit 1
fi
ensure_packages setfacl:acl
if ! dpkg -s libacl1-dev >/dev/null 2>&1; then
    ensure_packages __missing__:libacl1-dev
fi
id nobody >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin nobody
getent group nogroup >/dev/null || groupadd nogroup
id tests >/dev/null 2>&1 || useradd -M -U -s /usr/sbin/nologin tests

suite=$tools/bin/pjdfstest
if [[ ! -x $suite ]] || ! "$suite" --help >/dev/null 2>&1; then
    echo "installing pjdfstest $version into $tools…"
    CARGO_TARGET_DIR=$tools/target cargo install --quiet --locked pjdfstest \
        --version "$version" --root "$tools"
fi

work=$(mktemp -d /tmp/ghostie-pjdfs.XXXXXX)
home=$work/home
cleanup() {
    if [[ -n ${KEEP_OUTPUT:-} ]]; then cp "$work/out.txt" "$KEEP_OUTPUT" 2>/dev/null || true; fi
    "$bin" --home "$home" unmount --no-wait >/dev/null 2>&1 ||
        fusermount3 -uz "$home/memories" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
mkdir "$work/vault"
export GHOSTIE_PASSPHRASE=pjdfstest-passphrase
"$bin" --home "$home" --quiet setup --backend local --path "$work/vault" --device pjdfs
chmod 755 "$home"
# Other users reach the mount (pjdfstest runs parts as them); the kernel checks
# permissions (default_permissions).
"$bin" --home "$home" --quiet mount -o allow_other
cat >"$work/pjdfstest.toml" <<'TOML'
[features]
[settings]
naptime = 0.001
allow_remount = false
[dummy_auth]
entries = [["nobody", "nogroup"], ["tests", "tests"]]
TOML

out=$work/out.txt
(cd "$home/memories" && "$suite" -c "$work/pjdfstest.toml" -p "$home/memories") >"$out" 2>&1 || true
summary=$(grep '^Summary:' "$out" || true)
if [[ -z $summary ]]; then
    tail -40 "$out" >&2
    echo "pjdfstest did not finish" >&2
    exit 1
fi
echo "$summary"
{ grep -E '^[a-z_0-9]+::[^ ]+ +FAILED' "$out" || true; } | awk '{print $1}' | sort -u >"$work/failed"
{ grep -vE '^[[:space:]]*(#|$)' scripts/pjdfstest-expected.txt || true; } | awk '{print $1}' | sort -u >"$work/expected"
unexpected=$(comm -23 "$work/failed" "$work/expected")
fixed=$(comm -13 "$work/failed" "$work/expected")
status=0
if [[ -n $unexpected ]]; then
    echo "failures not in scripts/pjdfstest-expected.txt:" >&2
    for t in $unexpected; do
        echo "  $t" >&2
        grep -A2 "^$t " "$out" | sed -n 2,3p | sed 's/^/      /' >&2
    done
    status=1
fi
if [[ -n $fixed ]]; then
    echo "listed as expected failures but passing now (remove them from the list):" >&2
    printf '  %s\n' $fixed >&2
    status=1
fi
if ((status == 0)); then
    echo "ok: every failure is a listed, documented exception"
fi
exit $status
