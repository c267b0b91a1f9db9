#!/usr/bin/env bash
# Builds every fuzz target (or those named) and runs each for a bounded time, starting from the
# committed corpus. Any crash, panic, timeout, or allocation past the limits fails the run; the
# input that caused it is saved under fuzz/artifacts/TARGET/ and its path printed.
#
#   fuzz/run.sh [--seconds N] [--ci] [--asan] [--keep DIR] [TARGET...]
#
#   --seconds N   time per target (default 10); CI runs a few seconds, a real session 600+
#   --ci          build unoptimized (zstd aside) into fuzz/target/ci: the build is most of a
#                 short run's time, and a smoke run needs coverage more than speed
#   --asan        build with AddressSanitizer (slower; for long runs: memory errors in the C
#                 code beneath, such as zstd)
#   --keep DIR    keep the inputs that found new coverage in DIR/TARGET (default: a temporary
#                 directory; the committed corpus is only read)
#
# Toolchain: cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1, set here. cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10
keep=""
target_dir=fuzz/target
build=(--sanitizer none --debug-assertions)
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --asan) build[1]=address; shift ;;
    --ci)
      export CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false
      target_dir=fuzz/target/ci
      build+=(--target-dir "$target_dir"); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "fuzz/run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# Limits: the largest allocation a parser may make on its own is a snapshot's plaintext (256
# MiB, its hard bound); anything larger comes from a size field it did not check. A timeout
# is a hang or a search without bound.
limits=(-rss_limit_mb=1536 -malloc_limit_mb=512 -timeout=60)

started=$(date +%s)
cargo fuzz build "${build[@]}"
echo "fuzz/run.sh: built ${#targets[@]} targets in $(($(date +%s) - started)) s"
# The targets run as built (`cargo fuzz run` would check the whole build again for each).
bin_dir="$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release"

work=${keep:-$(mktemp -d)}
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/artifacts/$t"
  log="$work/$t.log"
  echo "fuzz/run.sh: $t for ${seconds}s"
  # New inputs go to the first directory; the committed corpus is only read.
  if "$bin_dir/$t" "$work/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
      "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1 || true)
    echo "  $t: $execs runs, $cov"
  else
    echo "fuzz/run.sh: $t FAILED; its output:" >&2
    tail -60 "$log" >&2
    grep -ho 'Test unit written to .*' "$log" | sed "s/^/  $t: /" >&2 || true
    failed+=("$t")
  fi
done

echo "fuzz/run.sh: ${#targets[@]} targets, ${seconds}s each, $(($(date +%s) - started)) s in all"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/; add each, once fixed, to fuzz/corpus/TARGET/)" >&2
  exit 1
fi
