#!/usr/bin/env bash
# Runs every check and test of ghostie-fs. This is the one command CI runs
# (through .ci/run) and the one a developer runs before pushing:
#
#   ./scripts/test.sh
#
# It expects a fresh Debian machine with the Rust toolchain, as root or with
# the system packages it needs already installed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The tests talk to loopback only: no proxy may carry a request elsewhere, and the
# live provider tests (real tokens, real services) are for a developer by hand.
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy
export NO_PROXY=127.0.0.1,localhost,::1 no_proxy=127.0.0.1,localhost,::1
unset GHOSTIE_LIVE_GITHUB_TOKEN GHOSTIE_LIVE_DROPBOX_TOKEN GHOSTIE_LIVE_GDRIVE_TOKEN

# Collect failures of the cheap checks instead of stopping at the first one,
# so one run shows everything that needs fixing; cargo steps still stop early
# because their output is what needs reading.
failures=()

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
header() {
    printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"
}

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    failures+=("$*")
}

# ensure_packages CMD:PKG... (shared with the demo)
source scripts/lib/packages.sh

header "system packages"
# fuse3 is needed by the mount tests; a container without /dev/fuse can still
# install the package, and the mount tests themselves decide what a missing
# /dev/fuse means (they fail, per STYLE.md: never skip silently).
ensure_packages fusermount3:fuse3 script:bsdutils getfattr:attr rsync:rsync git:git unshare:util-linux python3:python3 curl:curl \
    dbus-daemon:dbus-daemon dbus-send:dbus-bin gnome-keyring-daemon:gnome-keyring secret-tool:libsecret-tools \
    systemd-analyze:systemd man:man-db
if [[ ! -e /dev/fuse ]]; then
    echo "warning: /dev/fuse is absent; mount tests cannot run on this machine" >&2
fi

header "shell syntax (bash -n)"
# The odd `.ci/ru[n]` is a glob so nullglob drops it in a tree without CI files.
shopt -s nullglob globstar
for script in scripts/**/*.sh bench/**/*.sh mount-helpers/**/*.sh .ci/ru[n] \
    mount-helpers/**/mount.fuse.ghostie-fs; do
    if bash -n "$script"; then
        echo "ok   $script"
    else
        fail "bash -n $script: syntax error"
    fi
done
shopt -u nullglob globstar

header "heavy dependencies stay in their one module"
# DESIGN.md §8: each heavy dependency is named in one module only, so swapping
# or upgrading it (fuser 0.16 -> 0.17 rewrote its whole trait) touches one
# place. A crate counts as named when code refers to it as a path (`krate::`)
# or imports it; comment lines are ignored so docs may mention it.
# check_dep CRATE ALLOWED_REGEX WHERE_IT_BELONGS
check_dep() {
    local krate=$1 allowed=$2 belongs=$3 file bad=0
    # A path inside this crate (`crate::crypto::keyring::`) or a module of ours
    # with the crate's name (`mod keyring;`) is not the crate.
    local named="(^|[^A-Za-z0-9_:])${krate}[[:space:]]*(::|;|[[:space:]]as[[:space:]])"
    local ours='^[0-9]+:[[:space:]]*(//|(pub(\([a-z]+\))?[[:space:]]+)?mod[[:space:]])'
    while IFS= read -r file; do
        [[ $file =~ $allowed ]] && continue
        # Only lines that are code count.
        if grep -nE "$named" "$file" | grep -vE "$ours" >/dev/null; then
            fail "'$krate' is named in $file; it belongs only in $belongs"
            grep -nE "$named" "$file" | grep -vE "$ours" | head -3 >&2 || true
            bad=1
        fi
    done < <(grep -rlE --include='*.rs' "$named" src | sort)
    if ((bad == 0)); then echo "ok   $krate"; fi
}
check_dep rusqlite   '^src/store/index(\.rs$|/)'  'src/store/index.rs and src/store/index/'
check_dep clap       '^src/cli/'              'src/cli/'
check_dep indicatif  '^src/cli/'              'src/cli/'
check_dep fuser      '^src/fs/fuse\.rs$'      'src/fs/fuse.rs'
check_dep aws_sdk_s3 '^src/backend/s3\.rs$'   'src/backend/s3.rs'
check_dep reqwest    '^src/backend/'          'src/backend/'
check_dep keyring    '^src/credentials/os_keyring\.rs$' 'src/credentials/os_keyring.rs'
check_dep aws_smithy_http_client '^src/backend/s3\.rs$' 'src/backend/s3.rs'
check_dep clap_complete '^src/cli/'         'src/cli/'
check_dep clap_mangen '^src/cli/docs\.rs$'    'src/cli/docs.rs'
check_dep sd_notify  '^src/cli/mount\.rs$'    'src/cli/mount.rs'
check_dep x25519_dalek '^src/crypto/sealed_box\.rs$' 'src/crypto/sealed_box.rs'
check_dep regex      '^src/anonymize/'        'src/anonymize/'
check_dep toml       '^src/anonymize/rules\.rs$' 'src/anonymize/rules.rs'

header "one crypto stack, and a lean release"
# Sealing and every provider's TLS run on ring; aws-lc (the S3 SDK's default, a large
# C build that is hard on Termux) must not come back with an update.
if ! tree=$(cargo tree --edges normal --target all --prefix none 2>&1); then
    fail "cargo tree failed: $tree"
elif grep -qE '^aws-lc-(sys|rs) ' <<<"$tree"; then
    fail "aws-lc is a dependency again (cargo tree -i aws-lc-sys says through what)"
else
    echo "ok   no aws-lc: TLS on ring"
fi
# Release binaries carry no debug info (about a tenth of the size).
release_profile=$(sed -n '/^\[profile\.release\]/,/^\[/p' Cargo.toml)
if grep -qx 'debug = false' <<<"$release_profile" && grep -qx 'strip = "debuginfo"' <<<"$release_profile"; then
    echo "ok   release builds are stripped of debug info"
else
    fail "[profile.release] must keep debug = false and strip = \"debuginfo\""
fi

header "dependencies point one way (DESIGN §8)"
# cli -> fs | folder -> sync (the Vault) -> store -> crypto, backend; everyone may
# use model and config; the two front-ends never use each other, and reach the
# engine through sync's API alone: never its index, its pack writer, or the version
# vectors its rules build. A line counts when it is code (not a comment) before the
# file's first `#[cfg(test)]`; whole test files (tests.rs) are exempt.
# forbid WHERE REGEX WHY
forbid() {
    local where=$1 pattern=$2 why=$3 hits
    hits=$(find $where -name '*.rs' ! -name tests.rs -print0 | sort -z | while IFS= read -r -d '' f; do
        awk -v file="$f" -v pat="$pattern" '
            /^[[:space:]]*#\[cfg\(test\)\]/ { exit }
            /^[[:space:]]*\/\// { next }
            $0 ~ pat { printf "%s:%d: %s\n", file, FNR, $0 }
        ' "$f"
    done)
    if [[ -n $hits ]]; then
        fail "$why"
        printf '%s\n' "$hits" | head -5 >&2
    else
        echo "ok   $why"
    fi
}
lower='crate::(config|crypto|backend|store|sync|folder|fs)([^A-Za-z0-9_]|$)'
forbid src/model.rs "$lower" "model uses no other module"
forbid src/config.rs 'crate::(crypto|backend|store|sync|folder|fs)([^A-Za-z0-9_]|$)' "config uses only model"
forbid src/crypto 'crate::(credentials|backend|store|sync|folder|fs)([^A-Za-z0-9_]|$)' "crypto knows nothing of where bytes go"
forbid src/backend 'crate::(credentials|crypto|store|sync|folder|fs)([^A-Za-z0-9_]|$)' "backends store opaque bytes"
forbid src/store 'crate::(credentials|sync|folder|fs)([^A-Za-z0-9_]|$)' "store is below the engine"
forbid src/credentials 'crate::(store|sync|folder|fs)([^A-Za-z0-9_]|$)' "credentials sit below the engine"
forbid src/sync 'crate::(folder|fs)([^A-Za-z0-9_]|$)' "the engine knows no front-end"
internals='index\(\)|index_mut|IndexTx|PackWriter|pack_writer|PackQueue|VersionVector|NewVersion'
forbid src/folder "crate::(fs|store|backend|crypto)([^A-Za-z0-9_]|$)|$internals" "folder sync speaks to the engine's API only"
forbid src/fs "crate::(folder|store|backend|crypto)([^A-Za-z0-9_]|$)|$internals" "the mount speaks to the engine's API only"
forbid "src/cli src/main.rs" 'ghostie_fs::(store|backend|crypto)([^A-Za-z0-9_]|$)' "the CLI goes through the front-ends and the engine"

header "no .unwrap() in non-test code"
# STYLE.md: no unwrap() on anything input, the network or the disk can break.
# Everything after the first `#[cfg(test)]` line of a file is test code (the
# inline test module sits at the bottom), as are whole files named tests.rs or
# under a tests/ folder inside src/. A line that is truly infallible can say
# why with `// unwrap-ok: reason`.
unwrap_hits=$(find src -name '*.rs' -print0 | sort -z | while IFS= read -r -d '' f; do
    case $f in */tests.rs | */tests/*) continue ;; esac
    awk -v file="$f" '
        /^[[:space:]]*#\[cfg\(test\)\]/ { exit }
        /^[[:space:]]*\/\// { next }
        /\.unwrap\(\)/ && !/\/\/[[:space:]]*unwrap-ok:/ { printf "%s:%d: %s\n", file, FNR, $0 }
    ' "$f"
done)
if [[ -n $unwrap_hits ]]; then
    printf '%s\n' "$unwrap_hits" >&2
    fail ".unwrap() in non-test code (handle the error, or add '// unwrap-ok: why' on the line)"
else
    echo "ok"
fi

header "cargo fmt --all -- --check"
cargo fmt --all -- --check || fail "cargo fmt: run 'cargo fmt --all'"

# Stop before the slow steps when a cheap check failed: the fix comes first.
if ((${#failures[@]} > 0)); then
    header "FAILED (${#failures[@]})"
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi

header "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
# The build without FUSE and without S3 (Termux, containers) must stay clean too.
cargo clippy --no-default-features --lib --bins -- -D warnings

header "S3 server for the tests (SeaweedFS on loopback)"
# The S3 backend is tested against a real server, started here and stopped on exit.
source scripts/lib/s3-server.sh
s3_data=$(mktemp -d /tmp/ghostie-s3.XXXXXX)
trap 's3_server_stop; rm -rf "$s3_data"' EXIT
if ! s3_server_start "$s3_data"; then
    header "FAILED (1)"
    echo "  - the S3 server (SeaweedFS) did not start" >&2
    exit 1
fi
# Tests that need it fail instead of skipping when it is missing.
export GHOSTIE_REQUIRE_S3=1
# The credential tests start their own private D-Bus session with a real Secret
# Service (gnome-keyring, installed above) and fail rather than skip without one.
export GHOSTIE_REQUIRE_KEYRING=1

header "cargo test --all-targets -- --test-threads=2"
# Two threads: the machines have two cores, and the mount tests each hold a
# FUSE session plus a child process.
cargo test --all-targets -- --test-threads=2

# The same engine and mount tests once more with every vault in the S3 bucket
# (tests/common: TempVault::new follows GHOSTIE_TEST_BACKEND). Left out: the unit
# tests, the in-memory model, the first-format fixture (a folder by nature) and
# tests/s3.rs (S3 only, ran above).
header "the engine and mount tests again, on S3 (GHOSTIE_TEST_BACKEND=s3)"
on_both=(two_devices conflicts crash faults packing tamper rekey zero_knowledge bad_input
    terminal mount mount_helpers status passphrase anonymize)
GHOSTIE_TEST_BACKEND=s3 cargo test $(printf -- '--test %s ' "${on_both[@]}") -- --test-threads=2
# Reclaiming space deletes objects and reads sizes from listings: on S3 as well.
GHOSTIE_TEST_BACKEND=s3 cargo test --test gc -- --test-threads=2

# And on GitHub Gist: each vault in the gists of a fake GitHub account that the
# test starts on loopback (tests/common/fake_github.rs, which enforces GitHub's
# documented limits); tests/gist.rs and tests/gist_store.rs ran above.
header "the engine and mount tests again, on Gist (GHOSTIE_TEST_BACKEND=gist)"
GHOSTIE_TEST_BACKEND=gist cargo test $(printf -- '--test %s ' "${on_both[@]}") -- --test-threads=2

# And on Dropbox: each vault in the app folder of a fake Dropbox that the test
# starts on loopback (tests/common/fake_dropbox.rs, which enforces Dropbox's
# documented behaviour); tests/dropbox.rs and tests/dropbox_store.rs ran above.
header "the engine and mount tests again, on Dropbox (GHOSTIE_TEST_BACKEND=dropbox)"
GHOSTIE_TEST_BACKEND=dropbox cargo test $(printf -- '--test %s ' "${on_both[@]}") -- --test-threads=2
# Repacking takes each pack's size from the provider's listing, which Dropbox's tells.
GHOSTIE_TEST_BACKEND=dropbox cargo test --test gc a_mostly_superseded_pack_is_repacked

# And on Google Drive: each vault in the app data folder of a fake Drive that the
# test starts on loopback (tests/common/fake_gdrive.rs, which enforces Drive's
# documented behaviour, rate limit included); tests/gdrive.rs ran above.
header "the engine and mount tests again, on Google Drive (GHOSTIE_TEST_BACKEND=gdrive)"
GHOSTIE_TEST_BACKEND=gdrive cargo test $(printf -- '--test %s ' "${on_both[@]}") -- --test-threads=2
# Repacking takes each pack's size from the provider's listing, which Drive's tells.
GHOSTIE_TEST_BACKEND=gdrive cargo test --test gc a_mostly_superseded_pack_is_repacked

header "pjdfstest: POSIX conformance of the mount"
# Every failure must be a documented exception (scripts/pjdfstest-expected.txt).
if [[ $(id -u) -eq 0 && -e /dev/fuse ]]; then
    bash scripts/pjdfstest.sh "${CARGO_TARGET_DIR:-target}/debug/ghostie-fs" ||
        fail "pjdfstest: failures outside scripts/pjdfstest-expected.txt (see above)"
else
    fail "pjdfstest needs root and /dev/fuse (it switches users and mounts)"
fi

header "nothing left mounted"
# A test that panics before its MountGuard drops leaves a dead mount behind;
# that would break the next run and hide a bug in the cleanup path.
leftover=$(grep -c ghostie /proc/mounts || true)
if [[ ${leftover:-0} -ne 0 ]]; then
    grep ghostie /proc/mounts >&2
    fail "$leftover ghostie mount(s) left behind by the tests (fusermount3 -u each one)"
else
    echo "ok"
fi

header "the build without FUSE and S3 (cargo build --no-default-features)"
# What Termux builds (mount-helpers/termux/README.md): the folder commands work, and
# mount and an S3 vault say they are not in this build. Built last: it replaces the
# full binary the tests above ran (the next cargo test builds that again).
if cargo build --no-default-features; then
    if ! bash scripts/lean-smoke.sh "${CARGO_TARGET_DIR:-target}/debug/ghostie-fs"; then
        fail "the build without FUSE and S3 does not work (scripts/lean-smoke.sh)"
    fi
else
    fail "the build without FUSE and S3 does not compile"
fi

if ((${#failures[@]} > 0)); then
    header "FAILED (${#failures[@]})"
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
header "all checks passed"
