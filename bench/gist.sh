#!/usr/bin/env bash
# Benchmark of the Gist backend: 10,000 memory-like JSON files (1-8 KiB) pushed by
# one device and pulled by a new one through the tests' fake GitHub, with 100 ms
# added to every request (a realistic round trip to api.github.com), against a naive
# layout of one gist file per memory through the same store (measured on 300 and
# scaled: it is linear; its push is paced as the store paces writes, under GitHub's
# 500 an hour). Prints requests, content-creating requests and seconds. A debug
# build: the times are the requests' round trips, not the CPU's.
#
#   ./bench/gist.sh
#
# The table is printed and written to bench/results-gist.txt. No network is used:
# the fake runs on loopback, inside the benchmark's own process.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
results=$repo/bench/results-gist.txt

out=$(cargo test --test gist_bench -- --ignored --nocapture --test-threads=1 2>&1) || {
    printf '%s\n' "$out" >&2
    exit 1
}
{
    echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
    printf '%s\n' "$out" | sed -n '/^ghostie-fs gist benchmark/,/^naive \/ ghostie-fs/p'
} | tee "$results"
