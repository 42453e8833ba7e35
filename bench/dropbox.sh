#!/usr/bin/env bash
# Benchmark W6 of the Dropbox backend: how soon a second device's mount shows a file
# another device pushed, through the tests' fake Dropbox with 100 ms added to every
# request, with the longpoll the mount holds open and with polling alone (10 s).
# Needs FUSE (a real mount, as in the tests).
#
#   ./bench/dropbox.sh
#
# The table is printed and written to bench/results-dropbox.txt. No network is used:
# the fake runs on loopback, inside the benchmark's own process.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
results=$repo/bench/results-dropbox.txt

out=$(cargo test --test dropbox_bench -- --ignored --nocapture --test-threads=1 2>&1) || {
    printf '%s\n' "$out" >&2
    exit 1
}
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
    # The test harness prints its own "test … ..." before the first line.
    printf '%s\n' "$out" | sed -n '/ghostie-fs dropbox benchmark/,/^polling \/ longpoll/p' |
        sed 's/^test .* \.\.\. //'
} | tee "$results"
