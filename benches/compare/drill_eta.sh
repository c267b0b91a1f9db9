#!/usr/bin/env bash
# How right is the drill's estimate of a full restore? On one deterministic dataset
# (gen_dataset.py) backed up once, each pair runs
#   drill     lifeboat drill latest --json   -> estimated_full_restore_secs
#   restore   lifeboat restore latest        -> its wall time
# with the page cache dropped (and dirty pages written back) before each, so that neither
# reads the repository from memory the other left there. The table gives each pair's estimate,
# real time and their ratio, and the median ratio; the target is 0.75 to 1.25. Each drill's
# report (its JSON lines) is kept as WORKDIR/drill-N.json.
#
# Usage: benches/compare/drill_eta.sh [--size-mib N] [--pairs N] [--workdir DIR]
#            [--lifeboat BIN] [--drill-args "ARGS"] [--repo URL]
# Needs root (drop_caches). The restore target and the drill's scratch directory are on
# WORKDIR's file system, as an operator's would be on the server's. The repository is
# WORKDIR/repo, or --repo URL (a cloud repository, its credentials and options in the
# environment as for any lifeboat command); it is initialised and given one backup of the
# dataset when it has no snapshot.

set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

SIZE_MIB=2048
PAIRS=5
WORKDIR=${TMPDIR:-/var/tmp}/lifeboat-drill-eta
LIFEBOAT=
DRILL_ARGS=
REPO=

die() { echo "drill_eta.sh: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --workdir) WORKDIR=$2; shift 2 ;;
        --lifeboat) LIFEBOAT=$2; shift 2 ;;
        --drill-args) DRILL_ARGS=$2; shift 2 ;;
        --repo) REPO=$2; shift 2 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
done
[[ -w /proc/sys/vm/drop_caches ]] || die "needs root: it drops the page cache before each step"
if [[ -z $LIFEBOAT ]]; then
    LIFEBOAT=$PROJECT_ROOT/target/release/lifeboat
    [[ -x $LIFEBOAT ]] || (cd "$PROJECT_ROOT" && cargo build --release --quiet)
fi
[[ -x $LIFEBOAT ]] || die "no lifeboat binary at $LIFEBOAT"

mkdir -p "$WORKDIR"
DATA=$WORKDIR/data
REPO=${REPO:-$WORKDIR/repo}
export LIFEBOAT_REPOSITORY=$REPO LIFEBOAT_PASSWORD=drill-eta LIFEBOAT_CACHE_DIR=$WORKDIR/cache
if [[ ! -d $DATA ]]; then
    echo "generating ${SIZE_MIB} MiB of data in $DATA" >&2
    python3 "$SCRIPT_DIR/gen_dataset.py" "$DATA" --size-mib "$SIZE_MIB" >&2
fi
"$LIFEBOAT" snapshots >/dev/null 2>&1 || "$LIFEBOAT" init >/dev/null
if [[ -z $("$LIFEBOAT" snapshots --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)) or "")') ]]; then
    echo "backing up $DATA to $REPO" >&2
    "$LIFEBOAT" backup "$DATA" >/dev/null
fi

cold() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

echo "| pair | estimate (s) | restore (s) | estimate / restore |"
echo "|---:|---:|---:|---:|"
ratios=()
for ((i = 1; i <= PAIRS; i++)); do
    cold
    # shellcheck disable=SC2086 # DRILL_ARGS is a list of words
    "$LIFEBOAT" drill latest --json --scratch "$WORKDIR" $DRILL_ARGS >"$WORKDIR/drill-$i.json"
    est=$(python3 -c 'import json,sys
r = None
for line in sys.stdin:
    o = json.loads(line)
    if "estimated_full_restore_secs" in o: r = o
if r is None or not r["passed"]: sys.exit("the drill did not pass: %s" % r)
print("%.2f" % r["estimated_full_restore_secs"])' <"$WORKDIR/drill-$i.json")
    rm -rf "$WORKDIR/restore"
    cold
    start=$(date +%s.%N)
    "$LIFEBOAT" restore latest --target "$WORKDIR/restore" >/dev/null
    end=$(date +%s.%N)
    real=$(python3 -c "print('%.2f' % ($end - $start))")
    ratio=$(python3 -c "print('%.2f' % ($est / $real))")
    ratios+=("$ratio")
    echo "| $i | $est | $real | $ratio |"
    rm -rf "$WORKDIR/restore"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo
echo "median estimate / restore: $median (target 0.75 to 1.25)"
