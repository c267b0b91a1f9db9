#!/usr/bin/env bash
# Lifeboat's scheduled runs, as the daemon does them, on the comparison dataset: a daemon
# on a config with one job backing up the dataset to a local repository; one run to make the
# first snapshot, then RUNS no-change runs through `lifeboat run`. Prints each run's time as
# the daemon logs it ("backup finished ... secs="), the daemon's CPU seconds, its peak RSS and
# its RSS when idle (a second after the full backup and after the last no-change run).
#
# The daemon keeps each repository's key after its first run, so scheduled runs do not pay
# the key derivation that every CLI command pays (compare with run.sh's no-change phase).
#
# Usage: benches/compare/daemon.sh [--size-mib N] [--runs N] [--lifeboat BIN] [--workdir DIR]
set -euo pipefail
export LC_ALL=C
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
SIZE_MIB=2048
RUNS=5
WORKDIR=${TMPDIR:-/tmp}/lifeboat-bench
LIFEBOAT=$PROJECT_ROOT/target/release/lifeboat
while (($#)); do
    case $1 in
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --lifeboat) LIFEBOAT=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -x $LIFEBOAT ]] || (cd "$PROJECT_ROOT" && cargo build --release --bin lifeboat)
mkdir -p "$WORKDIR"
DATA=$WORKDIR/dataset-${SIZE_MIB}m-seed1
if [[ ! -f $DATA.stamp ]]; then
    python3 "$SCRIPT_DIR/gen_dataset.py" --size-mib "$SIZE_MIB" --seed 1 "$DATA"
    touch "$DATA.stamp"
fi
RUN=$WORKDIR/daemon-run
rm -rf "$RUN"
mkdir -p "$RUN"
echo lifeboat-bench >"$RUN/password"
unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE
LIFEBOAT_PASSWORD=lifeboat-bench "$LIFEBOAT" init --repo "$RUN/repo" >/dev/null 2>&1
cat >"$RUN/lifeboat.toml" <<EOF
[daemon]
state_dir = "$RUN/state"
cache_dir = "$RUN/cache"
runtime_dir = "$RUN/run"

[repositories.local]
url = "$RUN/repo"
password_file = "$RUN/password"

[[jobs]]
name = "bench"
repository = "local"
sources = ["$DATA"]
incremental = "0 0 1 1 *"
EOF
find "$DATA" -type f -print0 | xargs -0 -r cat >/dev/null

"$LIFEBOAT" daemon --config "$RUN/lifeboat.toml" 2>"$RUN/daemon.log" &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [[ -S $RUN/run/lifeboat.sock ]] && break; sleep 0.1; done
TICKS=$(getconf CLK_TCK)
daemon_cpu() { awk -v t="$TICKS" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$DAEMON/stat"; }

rss() { sleep 1; awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$DAEMON/status"; }
"$LIFEBOAT" run bench --config "$RUN/lifeboat.toml" >/dev/null
idle_full=$(rss)
cpu0=$(daemon_cpu)
for _ in $(seq 1 "$RUNS"); do
    "$LIFEBOAT" run bench --config "$RUN/lifeboat.toml" >/dev/null
done
cpu1=$(daemon_cpu)
idle_runs=$(rss)
hwm=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$DAEMON/status")
kill "$DAEMON"
wait "$DAEMON" || true

mapfile -t secs < <(grep -o 'backup finished.*secs=[0-9.]*' "$RUN/daemon.log" | sed 's/.*secs=//')
((${#secs[@]} == RUNS + 1)) || { echo "daemon.sh: expected $((RUNS + 1)) finished runs, log:" >&2; cat "$RUN/daemon.log" >&2; exit 1; }
echo "first run (full backup, key derived): ${secs[0]} s"
median=$(printf '%s\n' "${secs[@]:1}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
echo "no-change scheduled runs: ${secs[*]:1} s (median $median s)"
echo "daemon CPU over the no-change runs: $(awk -v a="$cpu0" -v b="$cpu1" -v n="$RUNS" 'BEGIN { printf "%.2f s per run", (b - a) / n }')"
echo "daemon peak RSS (whole life, incl. the full backup): $hwm MiB"
echo "daemon RSS idle after the full backup: $idle_full MiB; after the no-change runs: $idle_runs MiB"
