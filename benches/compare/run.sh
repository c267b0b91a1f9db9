#!/usr/bin/env bash
# End-to-end comparison of lifeboat with restic, rustic and borg.
#
# For every run and tool, on a fresh repository and a fresh copy of one
# deterministic dataset (gen_dataset.py), it times four phases:
#   full      full backup of the dataset
#   nochange  second backup, nothing changed
#   changes   backup after a day of changes (gen_dataset.py --mutate)
#   restore   restore of the latest snapshot into an empty dir
# and records wall time, CPU time (user+sys) and peak RSS (GNU time) and the
# repository size (du -sb) after each backup. The restored tree is compared
# with the source (diff -r) outside the timed part. The medians are printed
# as markdown tables; raw and summarised results go under WORKDIR/results/.
#
# Usage: benches/compare/run.sh [options]   (see --help; README.md beside)

set -euo pipefail
# Plain C number formats and messages, whatever the caller's locale.
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_dataset.py"

# Settings: environment first, flags override.
SIZE_MIB=${BENCH_SIZE_MIB:-2048}
RUNS=${BENCH_RUNS:-3}
TOOLS=${BENCH_TOOLS:-lifeboat,restic,rustic,borg}
WORKDIR=${BENCH_WORKDIR:-${TMPDIR:-/tmp}/lifeboat-bench}
LIFEBOAT=${BENCH_LIFEBOAT:-}
SEED=${BENCH_SEED:-1}
KEEP=${BENCH_KEEP:-0}
RESTORE_DIR=${BENCH_RESTORE_DIR:-}
DROP_CACHES=${BENCH_DROP_CACHES:-0}
# One password for every tool that wants one (lifeboat encrypts by default,
# like restic and rustic; lifeboat-plain and borg run unencrypted).
PASSWORD=${BENCH_PASSWORD:-lifeboat-bench}

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

  --size-mib N     dataset size in MiB (default 2048; env BENCH_SIZE_MIB)
  --runs N         runs per tool, the tables show medians (default 3; BENCH_RUNS)
  --tools LIST     comma-separated, from lifeboat,lifeboat-plain,restic,rustic,borg
                   (lifeboat-plain: lifeboat with --insecure-no-encryption,
                   to measure what encryption costs)
                   (default: all four; BENCH_TOOLS). Tools not installed are
                   skipped with a notice.
  --workdir DIR    where dataset, repositories and results go
                   (default \${TMPDIR:-/tmp}/lifeboat-bench; BENCH_WORKDIR)
  --lifeboat BIN   lifeboat binary (default target/release/lifeboat, built
                   with 'cargo build --release' when missing; BENCH_LIFEBOAT)
  --seed N         dataset seed (default 1; BENCH_SEED)
  --keep           keep the source copy, repository and restore of the last
                   tool's last run instead of deleting them (BENCH_KEEP=1)
  --restore-dir DIR  restore into DIR/restore instead of WORKDIR/restore
                   (BENCH_RESTORE_DIR): another file system, such as a
                   tmpfs, where WORKDIR's would time itself rather than the
                   tools (ext4 without a journal, see README.md)
  --drop-caches    before each timed phase, drop the kernel's page cache
                   and read the source, the repository and the tool's
                   cache back in (needs root; BENCH_DROP_CACHES=1): every
                   tool starts each phase from the same memory state. Without
                   it, restores into a tmpfs slow down as the page cache
                   fills up over a run (see README.md)
  -h, --help       this help

Needs: python3, GNU time at /usr/bin/time (Debian package 'time'), and
free disk space of about 5 times the dataset size in the workdir.
EOF
}

die() {
    echo "run.sh: $*" >&2
    exit 1
}

while (($# > 0)); do
    case $1 in
        --size-mib) SIZE_MIB=${2:?--size-mib needs a value}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
        --tools) TOOLS=${2:?--tools needs a value}; shift 2 ;;
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --lifeboat) LIFEBOAT=${2:?--lifeboat needs a value}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --restore-dir) RESTORE_DIR=${2:?--restore-dir needs a value}; shift 2 ;;
        --drop-caches) DROP_CACHES=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

[[ $SIZE_MIB =~ ^[0-9]+$ ]] || die "--size-mib must be a number"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive number"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be a number"
if [[ $DROP_CACHES == 1 && ! -w /proc/sys/vm/drop_caches ]]; then
    die "--drop-caches needs root (it writes /proc/sys/vm/drop_caches)"
fi

# --------------------------------------------------------------------------
# Prerequisites
# --------------------------------------------------------------------------

command -v python3 >/dev/null || die "python3 is needed"

# GNU time gives wall, user, sys and max RSS in one go; bash's `time`
# keyword does not report RSS.
TIME_BIN=/usr/bin/time
if ! "$TIME_BIN" --version 2>&1 | grep -q GNU; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "GNU time is missing: installing the Debian package 'time'"
        apt-get update -qq && apt-get install -y -qq time >/dev/null
    fi
    "$TIME_BIN" --version 2>&1 | grep -q GNU ||
        die "GNU time is needed at $TIME_BIN (Debian/Ubuntu: apt-get install time)"
fi

mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd -P)

# Tools to run, each checked; the ones missing are skipped with a notice.
SELECTED=()
SKIPPED=()
IFS=',' read -r -a WANTED <<<"$TOOLS"
for tool in "${WANTED[@]}"; do
    case $tool in
        lifeboat | lifeboat-plain)
            if [[ -z $LIFEBOAT ]]; then
                LIFEBOAT="${CARGO_TARGET_DIR:-$PROJECT_ROOT/target}/release/lifeboat"
                if [[ ! -x $LIFEBOAT ]]; then
                    echo "Building lifeboat (cargo build --release) ..."
                    if ! (cd "$PROJECT_ROOT" && cargo build --release --bin lifeboat); then
                        SKIPPED+=("lifeboat: cargo build --release failed")
                        echo "NOTICE: skipping lifeboat: cargo build --release failed" >&2
                        continue
                    fi
                fi
            fi
            # A bare name (--lifeboat lifeboat) is looked up on PATH.
            if [[ $LIFEBOAT != */* ]] && command -v "$LIFEBOAT" >/dev/null; then
                LIFEBOAT=$(command -v "$LIFEBOAT")
            fi
            if [[ ! -x $LIFEBOAT ]]; then
                SKIPPED+=("lifeboat: no binary at $LIFEBOAT")
                echo "NOTICE: skipping lifeboat: no executable at $LIFEBOAT" >&2
                continue
            fi
            LIFEBOAT=$(cd "$(dirname "$LIFEBOAT")" && pwd -P)/$(basename "$LIFEBOAT")
            ;;
        restic | rustic | borg)
            if ! command -v "$tool" >/dev/null; then
                SKIPPED+=("$tool: not installed")
                echo "NOTICE: skipping $tool: not installed (see benches/compare/README.md)" >&2
                continue
            fi
            ;;
        "") continue ;;
        *) die "unknown tool: $tool (known: lifeboat,lifeboat-plain,restic,rustic,borg)" ;;
    esac
    SELECTED+=("$tool")
done
((${#SELECTED[@]} > 0)) || die "no tool to run"

tool_version() {
    case $1 in
        lifeboat | lifeboat-plain) "$LIFEBOAT" --version 2>/dev/null | head -n 1 || echo unknown ;;
        restic) restic version | head -n 1 ;;
        rustic) rustic --version | head -n 1 ;;
        borg) borg --version | head -n 1 ;;
    esac
}

# restic >= 0.14 writes repository format 2 (compressed); say so explicitly
# when the installed restic knows the flags, and keep its default 'auto'.
RESTIC_INIT_OPTS=()
RESTIC_BACKUP_OPTS=()
if [[ " ${SELECTED[*]} " == *" restic "* ]]; then
    if restic init --help 2>/dev/null | grep -q -- --repository-version; then
        RESTIC_INIT_OPTS=(--repository-version 2)
    fi
    if restic backup --help 2>/dev/null | grep -q -- --compression; then
        RESTIC_BACKUP_OPTS=(--compression auto)
    fi
fi
# rustic draws progress bars unless told not to.
RUSTIC_OPTS=()
if [[ " ${SELECTED[*]} " == *" rustic "* ]] && rustic --help 2>/dev/null | grep -q -- --no-progress; then
    RUSTIC_OPTS=(--no-progress)
fi

# --------------------------------------------------------------------------
# Layout and environment
# --------------------------------------------------------------------------

DATASET="$WORKDIR/dataset-${SIZE_MIB}m-seed$SEED"
STAMP="$DATASET.stamp"
SRC="$WORKDIR/src"         # the copy each tool backs up (always this path)
REPO="$WORKDIR/repo"
RESTORE="$WORKDIR/restore"
if [[ -n $RESTORE_DIR ]]; then
    mkdir -p "$RESTORE_DIR"
    RESTORE="$(cd "$RESTORE_DIR" && pwd -P)/restore"
fi
STATE="$WORKDIR/tool-state" # caches and configs of the tools, fresh each run
RESULTS="$WORKDIR/results/$(date -u +%Y%m%dT%H%M%SZ)"
LOGS="$RESULTS/logs"
RAW="$RESULTS/raw.csv"
META="$RESULTS/meta.tsv"
mkdir -p "$LOGS"

export LIFEBOAT_PASSWORD=$PASSWORD RESTIC_PASSWORD=$PASSWORD RUSTIC_PASSWORD=$PASSWORD
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
# Keep the tools' caches and configs out of the home directory, and away
# from any user configuration (a rustic profile, say).
export XDG_CACHE_HOME="$STATE/cache" XDG_CONFIG_HOME="$STATE/config"
export BORG_BASE_DIR="$STATE/borg"

# Free space: dataset + source copy + repository + restore.
need_kib=$((SIZE_MIB * 1024 * 5))
free_kib=$(df -Pk "$WORKDIR" | awk 'NR == 2 { print $4 }')
if ((free_kib < need_kib)); then
    echo "WARNING: $WORKDIR has $((free_kib / 1024)) MiB free, about $((need_kib / 1024)) MiB are needed" >&2
fi

# --------------------------------------------------------------------------
# Dataset: generated once, reused while the generator is unchanged
# --------------------------------------------------------------------------

gen_hash=$(sha256sum "$GEN" | cut -d ' ' -f 1)
if [[ -d $DATASET && -f $STAMP && $(cat "$STAMP") == "$gen_hash" ]]; then
    echo "Reusing dataset $DATASET"
else
    echo "Generating a $SIZE_MIB MiB dataset in $DATASET ..."
    rm -rf "$DATASET" "$STAMP"
    python3 "$GEN" "$DATASET" --size-mib "$SIZE_MIB" --seed "$SEED"
    echo "$gen_hash" >"$STAMP"
fi
dataset_files=$(find "$DATASET" -type f | wc -l)
dataset_bytes=$(du -sb "$DATASET" | cut -f 1)

{
    printf 'started\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'size_mib\t%s\nseed\t%s\nruns\t%s\n' "$SIZE_MIB" "$SEED" "$RUNS"
    printf 'tools\t%s\n' "$(IFS=,; echo "${SELECTED[*]}")"
    printf 'machine\t%s cores, %s MiB RAM, %s\n' "$(nproc)" \
        "$(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo)" "$(uname -sr)"
    printf 'dataset_files\t%s\ndataset_bytes\t%s\n' "$dataset_files" "$dataset_bytes"
    for s in "${SKIPPED[@]}"; do printf 'skipped\t%s\n' "$s"; done
    for tool in "${SELECTED[@]}"; do printf 'version.%s\t%s\n' "$tool" "$(tool_version "$tool")"; done
} >"$META"

echo "tool,run,phase,status,wall_s,user_s,sys_s,cpu_s,max_rss_kib,repo_bytes,growth_bytes,verified" >"$RAW"

# --------------------------------------------------------------------------
# Tool commands: each sets the array CMD
# --------------------------------------------------------------------------

# init_cmd TOOL
init_cmd() {
    case $1 in
        lifeboat) CMD=("$LIFEBOAT" init --repo "$REPO") ;;
        lifeboat-plain) CMD=("$LIFEBOAT" init --insecure-no-encryption --repo "$REPO") ;;
        restic) CMD=(restic -r "$REPO" init "${RESTIC_INIT_OPTS[@]}") ;;
        rustic) CMD=(rustic "${RUSTIC_OPTS[@]}" -r "$REPO" init) ;;
        borg) CMD=(borg init -e none "$REPO") ;;
    esac
}

# backup_cmd TOOL N: the N-th backup of $SRC
backup_cmd() {
    case $1 in
        lifeboat | lifeboat-plain) CMD=("$LIFEBOAT" backup --repo "$REPO" "$SRC") ;;
        restic) CMD=(restic -r "$REPO" backup "${RESTIC_BACKUP_OPTS[@]}" "$SRC") ;;
        rustic) CMD=(rustic "${RUSTIC_OPTS[@]}" -r "$REPO" backup "$SRC") ;;
        borg) CMD=(borg create --compression "zstd,3" "$REPO::bench-$2" "$SRC") ;;
    esac
}

# restore_cmd TOOL N: restore the latest (N-th) snapshot into $RESTORE.
# borg extracts into the current directory: measure() runs it from $RESTORE.
restore_cmd() {
    case $1 in
        lifeboat | lifeboat-plain) CMD=("$LIFEBOAT" restore --repo "$REPO" latest --target "$RESTORE") ;;
        restic) CMD=(restic -r "$REPO" restore latest --target "$RESTORE") ;;
        rustic) CMD=(rustic "${RUSTIC_OPTS[@]}" -r "$REPO" restore latest "$RESTORE") ;;
        borg) CMD=(borg extract "$REPO::bench-$2") ;;
    esac
}

# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------

# Read every file once so all tools start from a warm page cache.
warm_up() {
    find "$1" -type f -print0 | xargs -0 -r cat >/dev/null
}

# settle: with --drop-caches, empty the page cache and read back what the
# next phase (the command in CMD) reads: the tool's program and libraries (it
# runs once with --version), the source, the repository, the tools' caches
# and state; so every phase of every tool starts from the same memory state.
settle() {
    [[ $DROP_CACHES == 1 ]] || return 0
    sync
    echo 3 >/proc/sys/vm/drop_caches
    "${CMD[0]}" --version >/dev/null 2>&1 || true
    local d
    for d in "$SRC" "$REPO" "$STATE"; do
        if [[ -d $d ]]; then warm_up "$d"; fi
    done
}

repo_bytes() {
    du -sb "$REPO" | cut -f 1
}

# measure TOOL RUN PHASE DIR: run CMD from DIR under GNU time; sets M_WALL,
# M_USER, M_SYS (seconds) and M_RSS_KIB. Returns non-zero (after showing the log's tail)
# when the command fails.
measure() {
    local tool=$1 run=$2 phase=$3 dir=$4
    local base="$LOGS/$tool-run$run-$phase" rc=0
    (cd "$dir" && "$TIME_BIN" -f '%e %U %S %M' -o "$base.time" "${CMD[@]}") \
        >"$base.log" 2>&1 || rc=$?
    if ((rc != 0)); then
        echo "  $tool run $run $phase: FAILED (exit $rc); log: $base.log" >&2
        tail -n 5 "$base.log" | sed 's/^/    | /' >&2
        return 1
    fi
    # The last line holds the numbers (GNU time puts notices before it).
    read -r M_WALL M_USER M_SYS M_RSS_KIB < <(tail -n 1 "$base.time")
}

# record TOOL RUN PHASE STATUS [REPO_BYTES GROWTH_BYTES VERIFIED]
record() {
    local tool=$1 run=$2 phase=$3 status=$4 repo=${5:-} growth=${6:-} verified=${7:-}
    if [[ $status == ok ]]; then
        local cpu
        cpu=$(awk -v u="$M_USER" -v s="$M_SYS" 'BEGIN { printf "%.2f", u + s }')
        echo "$tool,$run,$phase,ok,$M_WALL,$M_USER,$M_SYS,$cpu,$M_RSS_KIB,$repo,$growth,$verified" >>"$RAW"
        printf '  %-8s run %d %-8s %8.2f s wall %8.2f s cpu %7.1f MiB rss%s%s\n' \
            "$tool" "$run" "$phase" "$M_WALL" "$cpu" "$(awk -v k="$M_RSS_KIB" 'BEGIN { print k / 1024 }')" \
            "${repo:+  repo $((repo / 1048576)) MiB}" "${verified:+  restore $verified}"
    else
        echo "$tool,$run,$phase,$status,,,,,,,," >>"$RAW"
    fi
}

# restored_root: where the source tree landed under $RESTORE. lifeboat,
# restic and borg keep the absolute source path (borg without the leading
# slash); the other candidates cover tools that restore relative to the
# backed-up directory.
restored_root() {
    local probe candidate
    probe=$(cd "$SRC" && find . -mindepth 1 -maxdepth 1 -print -quit)
    for candidate in "$RESTORE$SRC" "$RESTORE/$(basename "$SRC")" "$RESTORE"; do
        if [[ -e $candidate/$probe || -L $candidate/$probe ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# file_meta DIR: mode and mtime (whole seconds) of each regular file.
file_meta() {
    (cd "$1" && find . -type f -printf '%p %m %T@\n' | sed 's/\.[0-9]*$//' | sort)
}

# verify TOOL RUN: compare the restore with the source: tree and contents
# (diff -r, symlinks compared as links), then the mode and mtime of every
# regular file. Prints ok or what differs.
verify() {
    local root name="$1-run$2-verify"
    if ! root=$(restored_root); then
        echo "FAILED: source tree not found under the restore dir"
        return
    fi
    echo "run.sh: verifying the restored tree at $root" >>"$LOGS/$1-run$2-restore.log"
    if ! diff -r --no-dereference "$SRC" "$root" >"$LOGS/$name.diff" 2>&1; then
        echo "FAILED: $(wc -l <"$LOGS/$name.diff") differences (logs/$name.diff)"
        return
    fi
    if ! diff <(file_meta "$SRC") <(file_meta "$root") >"$LOGS/$name-meta.diff"; then
        echo "contents ok; $(grep -c '^<' "$LOGS/$name-meta.diff") files differ in mode or mtime (logs/$name-meta.diff)"
        return
    fi
    echo ok
}

# stop_run TOOL RUN PHASE...: record the phases a failure left undone.
stop_run() {
    local tool=$1 run=$2 phase
    shift 2
    for phase in "$@"; do record "$tool" "$run" "$phase" skipped; done
}

clean() {
    rm -rf "$SRC" "$REPO" "$RESTORE" "$STATE"
}

# one_run TOOL RUN: all four phases on a fresh repository and source copy.
one_run() {
    local tool=$1 run=$2 before after
    clean
    mkdir -p "$STATE"
    cp -a "$DATASET" "$SRC"
    warm_up "$SRC"

    init_cmd "$tool"
    if ! measure "$tool" "$run" init "$WORKDIR"; then
        record "$tool" "$run" full "init failed"
        stop_run "$tool" "$run" nochange changes restore
        return
    fi
    before=$(repo_bytes)

    backup_cmd "$tool" 1
    settle
    if ! measure "$tool" "$run" full "$WORKDIR"; then
        record "$tool" "$run" full failed
        stop_run "$tool" "$run" nochange changes restore
        return
    fi
    after=$(repo_bytes)
    record "$tool" "$run" full ok "$after" $((after - before))

    before=$after
    backup_cmd "$tool" 2
    settle
    if ! measure "$tool" "$run" nochange "$WORKDIR"; then
        record "$tool" "$run" nochange failed
        stop_run "$tool" "$run" changes restore
        return
    fi
    after=$(repo_bytes)
    record "$tool" "$run" nochange ok "$after" $((after - before))

    # A day of changes, applied to this tool's copy only (not timed).
    python3 "$GEN" --mutate "$SRC" --seed "$SEED" --day 1 2>"$LOGS/$tool-run$run-mutate.log"
    warm_up "$SRC"
    before=$after
    backup_cmd "$tool" 3
    settle
    if ! measure "$tool" "$run" changes "$WORKDIR"; then
        record "$tool" "$run" changes failed
        stop_run "$tool" "$run" restore
        return
    fi
    after=$(repo_bytes)
    record "$tool" "$run" changes ok "$after" $((after - before))

    mkdir -p "$RESTORE"
    restore_cmd "$tool" 3
    settle
    if ! measure "$tool" "$run" restore "$RESTORE"; then
        record "$tool" "$run" restore failed
        return
    fi
    local verified
    verified=$(verify "$tool" "$run")
    record "$tool" "$run" restore ok "$after" "" "$verified"
}

# --------------------------------------------------------------------------
# Main loop: runs outermost, so slow drift of the machine hits all tools
# alike.
# --------------------------------------------------------------------------

echo "Tools: ${SELECTED[*]}; runs: $RUNS; dataset: $dataset_files files, $((dataset_bytes / 1048576)) MiB"
echo "Results: $RESULTS"
warm_up "$DATASET"
for ((run = 1; run <= RUNS; run++)); do
    for tool in "${SELECTED[@]}"; do
        echo "== $tool, run $run of $RUNS"
        one_run "$tool" "$run"
    done
done

# What a day of changes amounted to (the same for every tool and run).
mutation=$(sed -n 's/.*: \([0-9.]* MiB of new content\).*/\1/p' "$LOGS"/*-mutate.log 2>/dev/null | head -n 1 || true)
printf 'mutation\t%s\n' "${mutation:-unknown}" >>"$META"

if [[ $KEEP == 1 ]]; then
    echo "Kept the last run's source, repository and restore under $WORKDIR"
else
    clean
fi

echo
python3 "$SCRIPT_DIR/report.py" "$RESULTS"
ln -sfn "$RESULTS" "$WORKDIR/results/latest"
echo
echo "Raw results: $RAW; summary: $RESULTS/summary.md, summary.csv, results.json"
