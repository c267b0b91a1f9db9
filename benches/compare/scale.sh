#!/usr/bin/env bash
# Scale benchmarks: lifeboat beside restic, rustic and borg on
#
#   --files N         a tree of N small files (default 1,000,000): full
#                     backup, no-change incremental, restore (verified);
#   --big-file-gib N  one N GiB file (default 10), and the same at
#                     --ref-gib (default 1): backup and restore, to show
#                     that peak memory does not grow with the file's size.
#
# Wall time, CPU time (user+sys) and peak RSS come from GNU time; the
# repository size from du -sb. The datasets (gen_scale.py) are generated
# once and reused while the generator is unchanged. The results are printed
# as markdown tables (scale_report.py) and kept under WORKDIR/results/.
#
# Usage: benches/compare/scale.sh [options]   (see --help; README.md beside)

set -euo pipefail
# Plain C number formats and messages, whatever the caller's locale.
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
GEN="$SCRIPT_DIR/gen_scale.py"
REPORT="$SCRIPT_DIR/scale_report.py"

# Settings: environment first, flags override.
FILES=${BENCH_FILES:-}
BIG_GIB=${BENCH_BIG_GIB:-}
REF_GIB=${BENCH_REF_GIB:-1}
TOOLS=${BENCH_TOOLS:-lifeboat,restic,rustic,borg}
BIG_TOOLS=${BENCH_BIG_TOOLS:-lifeboat,restic}
WORKDIR=${BENCH_WORKDIR:-${TMPDIR:-/tmp}/lifeboat-scale}
LIFEBOAT=${BENCH_LIFEBOAT:-}
SEED=${BENCH_SEED:-1}
VERIFY=${BENCH_VERIFY:-sample}
TIMEOUT=${BENCH_TIMEOUT:-0}
KEEP=${BENCH_KEEP:-0}
DROP_DATA=${BENCH_DROP_DATA:-0}
PASSWORD=${BENCH_PASSWORD:-lifeboat-bench}

usage() {
    cat <<EOF
Usage: $(basename "$0") [options]

Scenarios (with neither flag, both run with their defaults):
  --files N          N small files (0-16 KiB, ~300 a directory; 1000000 if
                     the flag is not given but the scenario runs; BENCH_FILES)
  --big-file-gib N   one N GiB file (10 by default; BENCH_BIG_GIB), measured
                     at --ref-gib too
  --ref-gib N        the small size the big file is compared with (default 1;
                     BENCH_REF_GIB; 0: none)

  --tools LIST       tools for the small-files scenario, comma-separated, from
                     lifeboat,restic,rustic,borg (default all four; BENCH_TOOLS)
  --big-tools LIST   tools for the big-file scenario (default lifeboat,restic;
                     BENCH_BIG_TOOLS). Tools not installed are skipped with a
                     notice.
  --workdir DIR      datasets, repositories and results (default
                     \${TMPDIR:-/tmp}/lifeboat-scale; BENCH_WORKDIR). Needs
                     room: see README.md; avoid a small tmpfs
  --lifeboat BIN     lifeboat binary (default target/release/lifeboat, built
                     with 'cargo build --release' when missing; BENCH_LIFEBOAT)
  --seed N           dataset seed (default 1; BENCH_SEED)
  --verify MODE      small-files restore check: 'sample' (default: the list
                     of paths, types and sizes, plus the contents of every
                     50th file) or 'full' (diff -r); BENCH_VERIFY
  --timeout S        stop a phase after S seconds, record it as timed out and
                     skip the tool's remaining phases (default 0: no limit;
                     BENCH_TIMEOUT)
  --keep             keep the last repository and restore (BENCH_KEEP=1)
  --drop-data        delete each generated dataset once its tools are done,
                     and the big file before each restore (made again for
                     the next tool), to save disk (BENCH_DROP_DATA=1;
                     default: keep them for the next invocation)
  -h, --help         this help

Needs: python3, GNU time at /usr/bin/time, GNU coreutils (timeout).
EOF
}

die() {
    echo "scale.sh: $*" >&2
    exit 1
}

while (($# > 0)); do
    case $1 in
        --files) FILES=${2:?--files needs a value}; shift 2 ;;
        --big-file-gib) BIG_GIB=${2:?--big-file-gib needs a value}; shift 2 ;;
        --ref-gib) REF_GIB=${2:?--ref-gib needs a value}; shift 2 ;;
        --tools) TOOLS=${2:?--tools needs a value}; shift 2 ;;
        --big-tools) BIG_TOOLS=${2:?--big-tools needs a value}; shift 2 ;;
        --workdir) WORKDIR=${2:?--workdir needs a value}; shift 2 ;;
        --lifeboat) LIFEBOAT=${2:?--lifeboat needs a value}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        --verify) VERIFY=${2:?--verify needs a value}; shift 2 ;;
        --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --drop-data) DROP_DATA=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

if [[ -z $FILES && -z $BIG_GIB ]]; then
    FILES=1000000
    BIG_GIB=10
fi
[[ -z $FILES || $FILES =~ ^[1-9][0-9]*$ ]] || die "--files must be a positive number"
[[ -z $BIG_GIB || $BIG_GIB =~ ^[1-9][0-9]*$ ]] || die "--big-file-gib must be a positive number"
[[ $REF_GIB =~ ^[0-9]+$ ]] || die "--ref-gib must be a number"
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed must be a number"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[[ $VERIFY == sample || $VERIFY == full ]] || die "--verify must be 'sample' or 'full'"

# --------------------------------------------------------------------------
# Prerequisites
# --------------------------------------------------------------------------

command -v python3 >/dev/null || die "python3 is needed"
command -v timeout >/dev/null || die "timeout (GNU coreutils) is needed"
TIME_BIN=/usr/bin/time
"$TIME_BIN" --version 2>&1 | grep -q GNU ||
    die "GNU time is needed at $TIME_BIN (Debian/Ubuntu: apt-get install time)"

mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd -P)

SKIPPED=()
# check_tools LIST: sets CHECKED to the installed tools of LIST; the others
# are skipped with a notice.
check_tools() {
    local tool wanted
    CHECKED=()
    IFS=',' read -r -a wanted <<<"$1"
    for tool in "${wanted[@]}"; do
        case $tool in
            lifeboat)
                if [[ -z $LIFEBOAT ]]; then
                    LIFEBOAT="${CARGO_TARGET_DIR:-$PROJECT_ROOT/target}/release/lifeboat"
                    if [[ ! -x $LIFEBOAT ]]; then
                        echo "Building lifeboat (cargo build --release) ..."
                        (cd "$PROJECT_ROOT" && cargo build --release --bin lifeboat) || true
                    fi
                fi
                # A bare name (--lifeboat lifeboat) is looked up on PATH.
                if [[ $LIFEBOAT != */* ]] && command -v "$LIFEBOAT" >/dev/null; then
                    LIFEBOAT=$(command -v "$LIFEBOAT")
                fi
                if [[ ! -x $LIFEBOAT ]]; then
                    echo "NOTICE: skipping lifeboat: no executable at $LIFEBOAT" >&2
                    SKIPPED+=("lifeboat: no binary at $LIFEBOAT")
                    continue
                fi
                LIFEBOAT=$(cd "$(dirname "$LIFEBOAT")" && pwd -P)/$(basename "$LIFEBOAT")
                ;;
            restic | rustic | borg)
                if ! command -v "$tool" >/dev/null; then
                    echo "NOTICE: skipping $tool: not installed (see benches/compare/README.md)" >&2
                    SKIPPED+=("$tool: not installed")
                    continue
                fi
                ;;
            "") continue ;;
            *) die "unknown tool: $tool (known: lifeboat,restic,rustic,borg)" ;;
        esac
        CHECKED+=("$tool")
    done
}

FILE_TOOLS=()
BIGFILE_TOOLS=()
if [[ -n $FILES ]]; then
    check_tools "$TOOLS"
    FILE_TOOLS=("${CHECKED[@]}")
    ((${#FILE_TOOLS[@]} > 0)) || die "no tool to run"
fi
if [[ -n $BIG_GIB ]]; then
    check_tools "$BIG_TOOLS"
    BIGFILE_TOOLS=("${CHECKED[@]}")
    ((${#BIGFILE_TOOLS[@]} > 0)) || die "no tool to run"
fi
ALL_TOOLS=$(printf '%s\n' "${FILE_TOOLS[@]}" "${BIGFILE_TOOLS[@]}" | sort -u | tr '\n' ' ')

tool_version() {
    case $1 in
        lifeboat) "$LIFEBOAT" --version 2>/dev/null | head -n 1 || echo unknown ;;
        restic) restic version | head -n 1 ;;
        rustic) rustic --version | head -n 1 ;;
        borg) borg --version | head -n 1 ;;
    esac
}

# The same tool settings as run.sh.
RESTIC_INIT_OPTS=()
RESTIC_BACKUP_OPTS=()
if [[ " $ALL_TOOLS " == *" restic "* ]]; then
    if restic init --help 2>/dev/null | grep -q -- --repository-version; then
        RESTIC_INIT_OPTS=(--repository-version 2)
    fi
    if restic backup --help 2>/dev/null | grep -q -- --compression; then
        RESTIC_BACKUP_OPTS=(--compression auto)
    fi
fi
RUSTIC_OPTS=()
if [[ " $ALL_TOOLS " == *" rustic "* ]] && rustic --help 2>/dev/null | grep -q -- --no-progress; then
    RUSTIC_OPTS=(--no-progress)
fi

# --------------------------------------------------------------------------
# Layout and environment
# --------------------------------------------------------------------------

REPO="$WORKDIR/repo"
RESTORE="$WORKDIR/restore"
STATE="$WORKDIR/tool-state" # caches and configs of the tools, fresh per tool
RESULTS="$WORKDIR/results/$(date -u +%Y%m%dT%H%M%SZ)"
LOGS="$RESULTS/logs"
RAW="$RESULTS/raw.csv"
META="$RESULTS/meta.tsv"
mkdir -p "$LOGS"

export LIFEBOAT_PASSWORD=$PASSWORD RESTIC_PASSWORD=$PASSWORD RUSTIC_PASSWORD=$PASSWORD
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export XDG_CACHE_HOME="$STATE/cache" XDG_CONFIG_HOME="$STATE/config"
export BORG_BASE_DIR="$STATE/borg"

gen_hash=$(sha256sum "$GEN" | cut -d ' ' -f 1)

{
    printf 'started\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'files\t%s\nbig_gib\t%s\nref_gib\t%s\nseed\t%s\nverify\t%s\ntimeout\t%s\n' \
        "$FILES" "$BIG_GIB" "$REF_GIB" "$SEED" "$VERIFY" "$TIMEOUT"
    printf 'machine\t%s cores, %s MiB RAM, %s\n' "$(nproc)" \
        "$(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo)" "$(uname -sr)"
    for s in "${SKIPPED[@]}"; do printf 'skipped\t%s\n' "$s"; done
    for tool in $ALL_TOOLS; do printf 'version.%s\t%s\n' "$tool" "$(tool_version "$tool")"; done
} >"$META"

echo "scenario,size,tool,phase,status,wall_s,user_s,sys_s,cpu_s,max_rss_kib,repo_bytes,verified" >"$RAW"

# --------------------------------------------------------------------------
# Tool commands: each sets the array CMD. SRC is the directory backed up.
# --------------------------------------------------------------------------

init_cmd() {
    case $1 in
        lifeboat) CMD=("$LIFEBOAT" init --repo "$REPO") ;;
        restic) CMD=(restic -r "$REPO" init "${RESTIC_INIT_OPTS[@]}") ;;
        rustic) CMD=(rustic "${RUSTIC_OPTS[@]}" -r "$REPO" init) ;;
        borg) CMD=(borg init -e none "$REPO") ;;
    esac
}

# backup_cmd TOOL N: the N-th backup of $SRC
backup_cmd() {
    case $1 in
        lifeboat) CMD=("$LIFEBOAT" backup --repo "$REPO" "$SRC") ;;
        restic) CMD=(restic -r "$REPO" backup "${RESTIC_BACKUP_OPTS[@]}" "$SRC") ;;
        rustic) CMD=(rustic "${RUSTIC_OPTS[@]}" -r "$REPO" backup "$SRC") ;;
        borg) CMD=(borg create --compression "zstd,3" "$REPO::bench-$2" "$SRC") ;;
    esac
}

# restore_cmd TOOL N: restore the N-th (latest) snapshot into $RESTORE; borg
# extracts into the current directory, and measure() runs it from $RESTORE.
restore_cmd() {
    case $1 in
        lifeboat) CMD=("$LIFEBOAT" restore --repo "$REPO" latest --target "$RESTORE") ;;
        restic) CMD=(restic -r "$REPO" restore latest --target "$RESTORE") ;;
        rustic) CMD=(rustic "${RUSTIC_OPTS[@]}" -r "$REPO" restore latest "$RESTORE") ;;
        borg) CMD=(borg extract "$REPO::bench-$2") ;;
    esac
}

# --------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------

warm_up() {
    find "$1" -type f -print0 | xargs -0 -r cat >/dev/null
}

repo_bytes() {
    du -sb "$REPO" | cut -f 1
}

# measure NAME DIR: runs CMD from DIR under GNU time (and timeout when
# --timeout is set); sets M_WALL, M_USER, M_SYS (s) and M_RSS_KIB (the largest
# process's peak RSS). Returns 1 on failure, 2 on timeout.
measure() {
    local base="$LOGS/$1" dir=$2 rc=0
    local limit=()
    if ((TIMEOUT > 0)); then limit=(timeout --kill-after=30 "$TIMEOUT"); fi
    (cd "$dir" && "$TIME_BIN" -f '%e %U %S %M' -o "$base.time" "${limit[@]}" "${CMD[@]}") \
        >"$base.log" 2>&1 || rc=$?
    if ((rc == 124 || rc == 137)) && ((TIMEOUT > 0)); then
        echo "  $1: stopped after the ${TIMEOUT} s limit; log: $base.log" >&2
        return 2
    fi
    if ((rc != 0)); then
        echo "  $1: FAILED (exit $rc); log: $base.log" >&2
        tail -n 5 "$base.log" | sed 's/^/    | /' >&2
        return 1
    fi
    read -r M_WALL M_USER M_SYS M_RSS_KIB < <(tail -n 1 "$base.time")
}

# record SCENARIO SIZE TOOL PHASE STATUS [REPO_BYTES VERIFIED]
record() {
    local scenario=$1 size=$2 tool=$3 phase=$4 status=$5 repo=${6:-} verified=${7:-}
    if [[ $status == ok ]]; then
        local cpu
        cpu=$(awk -v u="$M_USER" -v s="$M_SYS" 'BEGIN { printf "%.2f", u + s }')
        echo "$scenario,$size,$tool,$phase,ok,$M_WALL,$M_USER,$M_SYS,$cpu,$M_RSS_KIB,$repo,$verified" >>"$RAW"
        printf '  %-8s %-9s %9.2f s wall %9.2f s cpu %8.1f MiB rss%s%s\n' \
            "$tool" "$phase" "$M_WALL" "$cpu" "$(awk -v k="$M_RSS_KIB" 'BEGIN { print k / 1024 }')" \
            "${repo:+  repo $((repo / 1048576)) MiB}" "${verified:+  restore $verified}"
    else
        echo "$scenario,$size,$tool,$phase,$status,,,,,,," >>"$RAW"
        echo "  $tool $phase: $status"
    fi
}

# restored_root [PROBE]: where $SRC landed under $RESTORE (absolute path kept, or
# relative to the backed-up directory).
# An entry to look for can be given (the source may be gone by then).
restored_root() {
    local probe=${1:-} candidate
    [[ -n $probe ]] || probe=$(cd "$SRC" && find . -mindepth 1 -maxdepth 1 -print -quit)
    for candidate in "$RESTORE$SRC" "$RESTORE/$(basename "$SRC")" "$RESTORE"; do
        if [[ -e $candidate/$probe || -L $candidate/$probe ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# listing DIR: type, size and path of every entry (directory sizes vary
# with the filesystem's history, so they are left out).
listing() {
    (cd "$1" && find . -mindepth 1 \( -type d -printf 'd - %P\n' \) -o \( -printf '%y %s %P\n' \) | sort)
}

# sample_sums DIR: sha256 of every 50th regular file, in name order.
sample_sums() {
    (cd "$1" && find . -type f -printf '%P\n' | sort | awk 'NR % 50 == 1' |
        tr '\n' '\0' | xargs -0 -r sha256sum)
}

# verify_tree NAME: compares the restored small-files tree with the source.
verify_tree() {
    local root name=$1
    if ! root=$(restored_root); then
        echo "FAILED: source tree not found under the restore dir"
        return
    fi
    if [[ $VERIFY == full ]]; then
        if ! diff -r --no-dereference "$SRC" "$root" >"$LOGS/$name.diff" 2>&1; then
            echo "FAILED: $(wc -l <"$LOGS/$name.diff") differences (logs/$name.diff)"
            return
        fi
        echo ok
        return
    fi
    if ! diff <(listing "$SRC") <(listing "$root") >"$LOGS/$name.diff" 2>&1; then
        echo "FAILED: $(grep -c '^[<>]' "$LOGS/$name.diff") entries differ (logs/$name.diff)"
        return
    fi
    if ! diff <(sample_sums "$SRC") <(sample_sums "$root") >"$LOGS/$name-sums.diff" 2>&1; then
        echo "FAILED: $(grep -c '^<' "$LOGS/$name-sums.diff") sampled files differ (logs/$name-sums.diff)"
        return
    fi
    echo ok
}

# verify_file NAME FILE: compares the SHA-256 of the restored copy of FILE
# (under $SRC) with the one recorded when FILE was generated ($SRC.sha256),
# so the source need not be on disk beside the restore.
verify_file() {
    local root sum
    if ! root=$(restored_root "$2"); then
        echo "FAILED: source tree not found under the restore dir"
        return
    fi
    sum=$(sha256sum "$root/$2" | cut -d ' ' -f 1)
    if [[ $sum != "$(cat "$SRC.sha256")" ]]; then
        echo "FAILED: contents differ (sha256 $sum)"
        return
    fi
    echo ok
}

clean() {
    rm -rf "$REPO" "$RESTORE" "$STATE"
}

# skip_rest SCENARIO SIZE TOOL STATUS PHASE...: record the phases a failure left undone.
skip_rest() {
    local scenario=$1 size=$2 tool=$3 status=$4 phase
    shift 4
    for phase in "$@"; do record "$scenario" "$size" "$tool" "$phase" "$status"; done
}

# phases SCENARIO SIZE TOOL VERIFY_FN [ARG]: init, full, nochange, restore
# (verified by VERIFY_FN NAME [ARG]) of $SRC on a fresh repository.
phases() {
    local scenario=$1 size=$2 tool=$3 verify_fn=$4 arg=${5:-}
    local name="$scenario-$size-$tool" rc verified
    clean
    mkdir -p "$STATE"
    echo "== $scenario $size: $tool"
    init_cmd "$tool"
    rc=0
    measure "$name-init" "$WORKDIR" || rc=$?
    if ((rc != 0)); then
        skip_rest "$scenario" "$size" "$tool" "init failed" full nochange restore
        return
    fi
    backup_cmd "$tool" 1
    rc=0
    measure "$name-full" "$WORKDIR" || rc=$?
    case $rc in
        0) record "$scenario" "$size" "$tool" full ok "$(repo_bytes)" ;;
        2) skip_rest "$scenario" "$size" "$tool" "timed out" full
           skip_rest "$scenario" "$size" "$tool" skipped nochange restore
           clean; return ;;
        *) skip_rest "$scenario" "$size" "$tool" failed full
           skip_rest "$scenario" "$size" "$tool" skipped nochange restore
           clean; return ;;
    esac
    backup_cmd "$tool" 2
    rc=0
    measure "$name-nochange" "$WORKDIR" || rc=$?
    case $rc in
        0) record "$scenario" "$size" "$tool" nochange ok "$(repo_bytes)" ;;
        2) skip_rest "$scenario" "$size" "$tool" "timed out" nochange ;;
        *) skip_rest "$scenario" "$size" "$tool" failed nochange ;;
    esac
    # The no-change backup failing leaves the first snapshot: restore that.
    local n=2
    ((rc == 0)) || n=1
    if [[ -n $BEFORE_RESTORE ]]; then "$BEFORE_RESTORE"; fi
    mkdir -p "$RESTORE"
    restore_cmd "$tool" "$n"
    rc=0
    measure "$name-restore" "$RESTORE" || rc=$?
    case $rc in
        0) verified=$("$verify_fn" "$name-verify" "$arg")
           record "$scenario" "$size" "$tool" restore ok "" "$verified" ;;
        2) skip_rest "$scenario" "$size" "$tool" "timed out" restore ;;
        *) skip_rest "$scenario" "$size" "$tool" failed restore ;;
    esac
    if [[ $KEEP != 1 ]]; then clean; fi
}

# Run before each restore (not timed): with --drop-data the big file is
# deleted to make room for its restored copy.
BEFORE_RESTORE=

drop_big_file() {
    rm -f "$SRC/big.bin"
}

# free_check KIB WHAT
free_check() {
    local free_kib
    free_kib=$(df -Pk "$WORKDIR" | awk 'NR == 2 { print $4 }')
    if (($1 > free_kib)); then
        echo "WARNING: $WORKDIR has $((free_kib / 1024)) MiB free, $2 needs about $(($1 / 1024)) MiB" >&2
    fi
}

# --------------------------------------------------------------------------
# Scenario 1: many small files
# --------------------------------------------------------------------------

if [[ -n $FILES ]]; then
    SRC="$WORKDIR/files-$FILES-seed$SEED"
    stamp="$SRC.stamp"
    if [[ -d $SRC && -f $stamp && $(cat "$stamp") == "$gen_hash" ]]; then
        echo "Reusing $SRC"
    else
        # ~3 KiB of data a file, taking ~5.5 KiB of disk; the repository and
        # the restore come on top.
        free_check $((FILES * 18)) "the small-files tree, a repository and a restore"
        echo "Generating $FILES small files in $SRC ..."
        rm -rf "$SRC" "$stamp"
        python3 "$GEN" files "$SRC" --count "$FILES" --seed "$SEED"
        echo "$gen_hash" >"$stamp"
    fi
    {
        printf 'files_entries\t%s\n' "$(find "$SRC" -type f | wc -l)"
        printf 'files_dirs\t%s\n' "$(find "$SRC" -type d | wc -l)"
        printf 'files_bytes\t%s\n' "$(find "$SRC" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')"
        printf 'files_disk_bytes\t%s\n' "$(($(du -sk "$SRC" | cut -f 1) * 1024))"
        printf 'files_tools\t%s\n' "$(IFS=,; echo "${FILE_TOOLS[*]}")"
    } >>"$META"
    for tool in "${FILE_TOOLS[@]}"; do
        echo "Warming the page cache ..."
        warm_up "$SRC"
        phases files "$FILES" "$tool" verify_tree
    done
    if [[ $DROP_DATA == 1 ]]; then rm -rf "$SRC" "$stamp"; fi
fi

# --------------------------------------------------------------------------
# Scenario 2: one big file, at the reference size and at the big size
# --------------------------------------------------------------------------

if [[ -n $BIG_GIB ]]; then
    sizes=()
    if ((REF_GIB > 0 && REF_GIB != BIG_GIB)); then sizes+=("$REF_GIB"); fi
    sizes+=("$BIG_GIB")
    printf 'bigfile_tools\t%s\n' "$(IFS=,; echo "${BIGFILE_TOOLS[*]}")" >>"$META"
    for gib in "${sizes[@]}"; do
        SRC="$WORKDIR/bigfile-${gib}g-seed$SEED"
        stamp="$SRC.stamp"
        for tool in "${BIGFILE_TOOLS[@]}"; do
            if [[ -f $SRC/big.bin && -f $SRC.sha256 && -f $stamp && $(cat "$stamp") == "$gen_hash" ]]; then
                echo "Reusing $SRC"
            else
                # The file, a repository (at most its size) and a restore; with
                # --drop-data the file is deleted before each restore (and made
                # again for the next tool), which saves its size.
                free_check $((gib * (DROP_DATA == 1 ? 2 : 3) * 1048576)) \
                    "the ${gib} GiB file, a repository and a restore"
                echo "Generating a $gib GiB file in $SRC ..."
                rm -rf "$SRC" "$stamp" "$SRC.sha256"
                mkdir -p "$SRC"
                python3 "$GEN" bigfile "$SRC/big.bin" --gib "$gib" --seed "$SEED"
                sha256sum "$SRC/big.bin" | cut -d ' ' -f 1 >"$SRC.sha256"
                echo "$gen_hash" >"$stamp"
            fi
            # Read once before each tool, as the small files are; 10 GiB may
            # not stay in the page cache, and then every tool reads it cold.
            cat "$SRC/big.bin" >/dev/null
            if [[ $DROP_DATA == 1 ]]; then BEFORE_RESTORE=drop_big_file; fi
            phases bigfile "$gib" "$tool" verify_file big.bin
            BEFORE_RESTORE=
        done
        if [[ $DROP_DATA == 1 ]]; then rm -rf "$SRC" "$stamp" "$SRC.sha256"; fi
    done
fi

if [[ $KEEP == 1 ]]; then
    echo "Kept the last repository and restore under $WORKDIR"
fi

echo
python3 "$REPORT" "$RESULTS"
ln -sfn "$RESULTS" "$WORKDIR/results/latest"
echo
echo "Raw results: $RAW; summary: $RESULTS/summary.md"
