#!/usr/bin/env bash
# Runs Lifeboat's whole test suite: unit tests, end-to-end tests of every command, the cloud
# backend suite against real servers (moto's S3 server and Azurite, started here), and a
# compile check of the benchmarks. Installs what the tests need on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { [ "$(id -u)" = 0 ]; }

# setpriv (util-linux) runs the unreadable-file tests as an unprivileged user when run as root.
# dbus-daemon runs the private bus of the logind inhibitor tests (tests/inhibit.rs).
# libfaketime (faketime) runs lifeboat with a wrong or jumping clock (tests/suite/clock.rs).
# mount/umount (mount) make the small file systems of tests/suite/disk_full.rs and tests/suite/restore.rs.
# chattr (e2fsprogs) makes a restore target's file immutable (tests/suite/restore.rs).
missing=()
need setpriv || missing+=(util-linux)
need dbus-daemon || missing+=(dbus-daemon)
need faketime || missing+=(faketime)
need mount || missing+=(mount)
need chattr || missing+=(e2fsprogs)
if [ ${#missing[@]} -gt 0 ] && as_root && need apt-get; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Cloud emulators: moto's S3 server (PyPI) and Azurite (npm); the Azure SDK makes the
# container, which object_store cannot.
if ! need moto_server; then python3 -m pip install --quiet 'moto[server]'; fi
if ! python3 -c 'import azure.storage.blob' 2>/dev/null; then python3 -m pip install --quiet azure-storage-blob; fi
if ! need azurite-blob; then npm install --global --silent --no-fund --no-audit azurite >/dev/null; fi

workdir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "tests/run.sh: $2 did not start on port $1; its log:" >&2
  cat "$workdir/$2.log" >&2
  return 1
}

s3_port=$(free_port)
moto_server -H 127.0.0.1 -p "$s3_port" >"$workdir/moto.log" 2>&1 &
pids+=($!)
az_port=$(free_port)
azurite-blob --blobHost 127.0.0.1 --blobPort "$az_port" --inMemoryPersistence --disableTelemetry \
  --skipApiVersionCheck --loose >"$workdir/azurite.log" 2>&1 &
pids+=($!)
wait_port "$s3_port" moto
wait_port "$az_port" azurite

python3 - "$s3_port" "$az_port" <<'PY'
import sys, urllib.request
from azure.storage.blob import BlobServiceClient
s3, az = sys.argv[1], sys.argv[2]
urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{s3}/lifeboat-test", method="PUT")).read()
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{az}/devstoreaccount1;")
BlobServiceClient.from_connection_string(conn).create_container("lifeboat-test")
PY

export LIFEBOAT_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export LIFEBOAT_TEST_S3_BUCKET=lifeboat-test
export LIFEBOAT_TEST_AZURITE_URL="http://127.0.0.1:$az_port"
export LIFEBOAT_TEST_AZURE_CONTAINER=lifeboat-test

# Four tests at a time on any machine: most of the suite waits (outages waited out, daemons on
# their schedules, child processes, servers), not computes: on 2 cores, 2 threads kept the CPU
# busy a third of the time; 4 took the suite from 205 s to 142 s. RUST_TEST_THREADS overrides.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
cargo test --all-targets "$@"

# The recovery day end to end through the built binary, as an operator on a fresh machine
# lives it (tests/recovery-day.sh). A run narrowed to some tests leaves it out.
if [ $# -eq 0 ]; then
  bash tests/recovery-day.sh "${CARGO_TARGET_DIR:-target}/debug/lifeboat"
fi
