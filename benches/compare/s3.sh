#!/usr/bin/env bash
# Lifeboat on a local S3 server (moto) against local disk, on the comparison dataset:
# full backup, no-change incremental, restore; wall time, CPU, peak RSS, and the number of
# HTTP requests per GiB of source data (counted from the server's request log), and the CPU
# time the server itself spent (it shares the machine's cores with Lifeboat).
#
# Usage: benches/compare/s3.sh [--size-mib N] [--lifeboat BIN] [--workdir DIR] [--restore-dir DIR]
#                               [--rtt-ms N [--link-mib M]]
# --restore-dir: restore into DIR instead of the workdir (a tmpfs, for instance: on ext4
# without a journal, restores right after a deletion time the kernel, see README.md).
# --rtt-ms, --link-mib: reach the server through slow_link.py, which delays every byte by half
# of N milliseconds each way and carries at most M MiB/s per connection and direction, as a
# distant cloud store does.
# The S3 restore is timed twice: with the default reads in flight (8 from cloud storage) and
# with 2 (one per core here, what a local repository gets).
# moto's server is single-threaded Python: it, not Lifeboat, bounds the S3 throughput here.
set -euo pipefail
export LC_ALL=C
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
SIZE_MIB=2048
WORKDIR=${TMPDIR:-/tmp}/lifeboat-bench
LIFEBOAT=$PROJECT_ROOT/target/release/lifeboat
RESTORE_DIR=
RTT_MS=0
LINK_MIB=0
while (($#)); do
    case $1 in
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --lifeboat) LIFEBOAT=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --restore-dir) RESTORE_DIR=$2; shift 2 ;;
        --rtt-ms) RTT_MS=$2; shift 2 ;;
        --link-mib) LINK_MIB=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -x $LIFEBOAT ]] || (cd "$PROJECT_ROOT" && cargo build --release --bin lifeboat)
command -v moto_server >/dev/null || python3 -m pip install --quiet 'moto[server]'
mkdir -p "$WORKDIR"
DATA=$WORKDIR/dataset-${SIZE_MIB}m-seed1
if [[ ! -f $DATA.stamp ]]; then
    python3 "$SCRIPT_DIR/gen_dataset.py" --size-mib "$SIZE_MIB" --seed 1 "$DATA"
    touch "$DATA.stamp"
fi
RUN=$WORKDIR/s3-run
rm -rf "$RUN"; mkdir -p "$RUN"
RESTORES=${RESTORE_DIR:-$RUN}
mkdir -p "$RESTORES"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
moto_server -H 127.0.0.1 -p "$PORT" >"$RUN/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$PORT/bench', method='PUT')).read()"
ENDPOINT_PORT=$PORT
if ((RTT_MS > 0)); then
    ENDPOINT_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 "$SCRIPT_DIR/slow_link.py" "$ENDPOINT_PORT" "$PORT" --rtt-ms "$RTT_MS" --link-mib "$LINK_MIB" &
    LINK=$!
    trap 'kill $MOTO $LINK 2>/dev/null || true' EXIT
    for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$ENDPOINT_PORT") 2>/dev/null && break; sleep 0.1; done
fi

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$ENDPOINT_PORT AWS_ALLOW_HTTP=true
export LIFEBOAT_PASSWORD=lifeboat-bench LIFEBOAT_CACHE_DIR=$RUN/cache
find "$DATA" -type f -print0 | xargs -0 -r cat >/dev/null
GIB=$(du -sb "$DATA" | awk '{ printf "%.3f", $1 / 1073741824 }')

requests() { grep -cE '"(GET|PUT|POST|HEAD|DELETE) ' "$RUN/moto.log" || true; }
# CPU seconds of the server process so far (user + system, from /proc).
TICKS=$(getconf CLK_TCK)
server_cpu() { awk -v t="$TICKS" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$MOTO/stat"; }
printf '| repository | phase | wall s | CPU s | peak RSS MiB | server CPU s | requests | requests per GiB |\n|---|---|---:|---:|---:|---:|---:|---:|\n'
phase() { # NAME PHASE CMD...
    local name=$1 ph=$2; shift 2
    local before after cpu_before cpu_after
    before=$(requests)
    cpu_before=$(server_cpu)
    /usr/bin/time -f '%e %U %S %M' -o "$RUN/time" "$@" >"$RUN/$name-$ph.log" 2>&1
    after=$(requests)
    cpu_after=$(server_cpu)
    read -r wall user sys rss <"$RUN/time"
    local req=$((after - before))
    [[ $name == local ]] && req=0
    awk -v n="$name" -v p="$ph" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v q="$req" -v g="$GIB" \
        -v c="$(awk -v a="$cpu_after" -v b="$cpu_before" 'BEGIN { printf "%.2f", a - b }')" \
        'BEGIN { printf "| %s | %s | %.2f | %.2f | %.1f | %s | %s | %.0f |\n", n, p, w, u + s, r / 1024, (n == "local" ? "-" : c), (n == "local" ? "-" : q), (n == "local" ? 0 : q / g) }'
}
for name in local s3; do
    if [[ $name == local ]]; then REPO=$RUN/local-repo; else REPO=s3://bench/repo; fi
    "$LIFEBOAT" init --repo "$REPO" >/dev/null
    phase "$name" "full backup" "$LIFEBOAT" backup --repo "$REPO" --upload-concurrency 4 "$DATA"
    phase "$name" "no-change backup" "$LIFEBOAT" backup --repo "$REPO" "$DATA"
    rm -rf "$RESTORES/restore-$name"
    phase "$name" "restore" "$LIFEBOAT" restore --repo "$REPO" latest --target "$RESTORES/restore-$name"
    diff -r "$DATA" "$RESTORES/restore-$name$DATA" >/dev/null || { echo "restore from $name differs" >&2; exit 1; }
    rm -rf "$RESTORES/restore-$name"
    if [[ $name == s3 ]]; then
        phase "$name" "restore, 2 reads in flight" "$LIFEBOAT" restore --repo "$REPO" latest \
            --download-concurrency 2 --target "$RESTORES/restore-$name"
        rm -rf "$RESTORES/restore-$name"
    fi
done
