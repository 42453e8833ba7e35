#!/usr/bin/env bash
# Benchmarks of the Google Drive backend through the tests' fake Drive with 100 ms
# added to every request: requests and seconds to push 10,000 memories and pull
# them on a new device, and W6 (a second device's mount shows a file another
# device pushed) at the default poll interval and at 2 s. Needs FUSE (a real
# mount, as in the tests).
#
#   ./bench/gdrive.sh
#
# The table is printed and written to bench/results-gdrive.txt. No network is used:
# the fake runs on loopback, inside the benchmark's own process.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
results=$repo/bench/results-gdrive.txt

out=$(cargo test --test gdrive_bench -- --ignored --nocapture --test-threads=1 2>&1) || {
    printf '%s\n' "$out" >&2
    exit 1
}
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
    # The test harness prints its own "test … ..." before the first line.
    printf '%s\n' "$out" | sed -n '/ghostie-fs gdrive benchmark/,/^W6, poll 2 s/p' |
        sed 's/^test .* \.\.\. //'
} | tee "$results"
