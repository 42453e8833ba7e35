#!/usr/bin/env bash
# Runs the binary built without FUSE and S3 (cargo build --no-default-features) as a
# Termux user would: a vault in a folder is set up, synced and read back by a second
# device; mount and an S3 vault fail with one sentence saying why.
#
#   scripts/lean-smoke.sh target/debug/ghostie-fs
set -euo pipefail

bin=${1:?usage: lean-smoke.sh BINARY}
work=$(mktemp -d /tmp/ghostie-lean.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GHOSTIE_PASSPHRASE="lean smoke passphrase"
export GHOSTIE_CREDENTIAL_STORE=file
unset GHOSTIE_HOME

check() {
    local what=$1
    shift
    if ! "$@"; then
        echo "lean build: $what failed" >&2
        exit 1
    fi
}

"$bin" --version
mkdir -p "$work/vault"
check "setup of a phone" "$bin" --home "$work/phone" --quiet setup --backend local --path "$work/vault" --device phone
check "setup of a tablet" "$bin" --home "$work/tablet" --quiet setup --backend local --path "$work/vault" --device tablet
echo '{"from":"phone"}' >"$work/phone/memories/note.json"
check "sync on the phone" "$bin" --home "$work/phone" --quiet sync
check "sync on the tablet" "$bin" --home "$work/tablet" --quiet sync
if ! cmp -s "$work/phone/memories/note.json" "$work/tablet/memories/note.json"; then
    echo "lean build: the tablet did not get the phone's note" >&2
    exit 1
fi

said=$("$bin" --home "$work/phone" mount 2>&1) && {
    echo "lean build: mount did not fail" >&2
    exit 1
}
grep -q "built without FUSE" <<<"$said" || {
    echo "lean build: mount said: $said" >&2
    exit 1
}
said=$("$bin" --home "$work/s3" setup --backend s3 --bucket b --endpoint http://127.0.0.1:9 2>&1) && {
    echo "lean build: an S3 setup did not fail" >&2
    exit 1
}
grep -q "built without S3" <<<"$said" || {
    echo "lean build: an S3 setup said: $said" >&2
    exit 1
}
echo "lean build: folder sync works; mount and S3 say they are not in this build"
