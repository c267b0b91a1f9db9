#!/usr/bin/env bash
# The recovery day, end to end, as an operator lives it (issue 21).
#
# A server "web1" backs up three jobs (system: /etc and /home, db: a database dump, www: a web
# root) into a local repository and into an S3 repository; another server shares them. Then the
# server is gone. On a machine with an empty HOME, no config and no cache, given only the
# repository URL and the recovery kit, an operator:
#   1. lists what there is       (lifeboat snapshots --latest)
#   2. sees what a recover means  (lifeboat recover --dry-run)
#   3. brings the server back     (lifeboat recover --host web1 --target DIR)
#   4. checks every byte and mode against the source
#   5. pipes the database dump    (lifeboat dump --job db latest FILE | ...)
# The S3 half needs the S3 test server that tests/run.sh starts (LIFEBOAT_TEST_S3_ENDPOINT,
# LIFEBOAT_TEST_S3_BUCKET).
#
# Usage: tests/recovery-day.sh [path/to/lifeboat]
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(realpath "${1:-target/debug/lifeboat}")
[ -x "$bin" ] || { echo "recovery-day: $bin is not built (cargo build)" >&2; exit 1; }
: "${LIFEBOAT_TEST_S3_ENDPOINT:?run through tests/run.sh, which starts the S3 test server}"
: "${LIFEBOAT_TEST_S3_BUCKET:?run through tests/run.sh, which starts the S3 test server}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0
step() { echo "recovery-day: $*"; }
ok() { passed=$((passed + 1)); step "ok: $*"; }
fail() { failed=$((failed + 1)); step "FAILED: $*" >&2; }

# --- The server's life: three jobs, a second server, a few days of backups -------------------
src="$work/web1"
mkdir -p "$src/etc/ssh" "$src/home/ann" "$src/var/backups" "$src/srv/www/img"
printf 'Port 22\nPermitRootLogin no\n' >"$src/etc/ssh/sshd_config"
chmod 600 "$src/etc/ssh/sshd_config"
printf 'web1\n' >"$src/etc/hostname"
ln -s ../hostname "$src/etc/ssh/host-link"
head -c 3000000 /dev/urandom >"$src/home/ann/photo.raw"
printf 'remember the milk\n' >"$src/home/ann/notes.txt"
python3 - "$src/var/backups/db.sql" <<'PY'
import sys, random
random.seed(7)
with open(sys.argv[1], "w") as f:
    f.write("BEGIN;\nCREATE TABLE t (id int, v text);\n")
    for i in range(60000):
        f.write(f"INSERT INTO t VALUES ({i}, '{random.getrandbits(64):x}');\n")
    f.write("COMMIT;\n")
PY
head -c 2000000 /dev/urandom >"$src/srv/www/img/logo.png"
printf '<h1>web1</h1>\n' >"$src/srv/www/index.html"
other="$work/web2"
mkdir -p "$other/etc"
printf 'web2\n' >"$other/etc/hostname"

export LIFEBOAT_PASSWORD="recovery day $RANDOM"
export LIFEBOAT_KDF_MEMORY_KIB=64 LIFEBOAT_KDF_ITERATIONS=1
export LIFEBOAT_CACHE_DIR="$work/server-cache"
s3_url="s3://$LIFEBOAT_TEST_S3_BUCKET/recovery-day-$RANDOM$RANDOM"
s3_opts=(--option "endpoint=$LIFEBOAT_TEST_S3_ENDPOINT" --option allow_http=true --option region=us-east-1)
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test

backup_all() { # REPO OPTIONS...
  local repo=$1
  shift
  "$bin" backup --repo "$repo" "$@" --job system --host web1 "$src/etc" "$src/home" >/dev/null
  "$bin" backup --repo "$repo" "$@" --job db --host web1 "$src/var/backups" >/dev/null
  "$bin" backup --repo "$repo" "$@" --job www --host web1 "$src/srv/www" >/dev/null
  "$bin" backup --repo "$repo" "$@" --job system --host web2 "$other/etc" >/dev/null
}

repo_of() { # KIND: sets url and opts
  if [ "$1" = local ]; then
    url="$work/repo"
    opts=()
  else
    url=$s3_url
    opts=("${s3_opts[@]}")
  fi
}
# Day 1, then day 2 with a changed dump, a file gone and a new one: the newest must come back.
printf 'old\n' >"$src/home/ann/old.txt"
for kind in local s3; do
  repo_of "$kind"
  "$bin" init --repo "$url" "${opts[@]}" >/dev/null
  backup_all "$url" "${opts[@]}"
done
rm "$src/home/ann/old.txt"
printf -- '-- day 2\n' >>"$src/var/backups/db.sql"
printf 'new\n' >"$src/home/ann/new.txt"
for kind in local s3; do
  repo_of "$kind"
  backup_all "$url" "${opts[@]}"
  "$bin" key export --repo "$url" "${opts[@]}" --output "$work/kit-$kind.txt" >/dev/null
done
unset LIFEBOAT_PASSWORD LIFEBOAT_CACHE_DIR AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

# --- The day: a fresh machine, an empty HOME, the URL and the kit ----------------------------
fresh() { # runs lifeboat as on a fresh machine: nothing but PATH, HOME and what is given
  env -i PATH="$(dirname "$bin"):$PATH" HOME="$home" LIFEBOAT_KDF_MEMORY_KIB=64 LIFEBOAT_KDF_ITERATIONS=1 "$@"
}
kit_line() { # KIT PATTERN: the kit's command line matching PATTERN
  grep -E "^ +lifeboat $2" "$1" | head -1 | sed 's/^ *//'
}

for kind in local s3; do
  home=$(mktemp -d "$work/home-XXXX")
  kit="$work/kit-$kind.txt"
  target="$work/restored-$kind"
  repo_of "$kind"
  creds=()
  if [ "$kind" = s3 ]; then creds=(AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test); fi
  lb() { fresh "${creds[@]}" "$bin" "$@" --repo "$url" --recovery-kit "$kit" "${opts[@]}"; }

  # 1. What is there.
  if listing=$(lb snapshots --latest 2>&1) &&
    grep -q "web1" <<<"$listing" && grep -q "db" <<<"$listing" && grep -q "www" <<<"$listing"; then
    ok "$kind: snapshots --latest lists web1's jobs"
  else
    fail "$kind: snapshots --latest: $listing"
  fi
  # An ambiguous 'latest' is refused with exit 5, never guessed.
  set +e
  lb restore latest --target "$work/never-$kind" >/dev/null 2>&1
  code=$?
  set -e
  if [ "$code" = 5 ] && [ ! -e "$work/never-$kind" ]; then
    ok "$kind: an ambiguous latest is refused (exit 5), nothing written"
  else
    fail "$kind: restore latest across jobs exited $code"
  fi

  # 2. What a recover would do, and how long it would take; nothing written.
  if plan=$(lb recover --host web1 --target "$target" --dry-run 2>&1) &&
    grep -q "estimated time" <<<"$plan" && [ ! -e "$target" ]; then
    ok "$kind: recover --dry-run estimates and writes nothing"
  else
    fail "$kind: recover --dry-run: $plan"
  fi

  # 3. The server back, with the kit's own command, run as printed from where the kit is
  # saved as kit.txt (its storage options included), credentials named by the kit set.
  cp "$kit" "$home/kit.txt"
  line=$(kit_line "$kit" "recover .*--host web1 ")
  if [ "$kind" = s3 ]; then
    # Without the credentials the kit names: refused before any request, saying which.
    set +e
    out=$(cd "$home" && fresh sh -c "${line//\/mnt\/restore/$target}" 2>&1)
    code=$?
    set -e
    if [ "$code" = 1 ] && grep -q "AWS_ACCESS_KEY_ID" <<<"$out" && grep -q "AWS_ACCESS_KEY_ID" "$kit" &&
      [ ! -e "$target" ]; then
      ok "$kind: without credentials the kit's recover says which variables to set"
    else
      fail "$kind: recover without credentials exited $code: $out"
    fi
  fi
  if [ -n "$line" ] && out=$(cd "$home" && fresh "${creds[@]}" sh -c "${line//\/mnt\/restore/$target}" 2>&1); then
    ok "$kind: the kit's recover --host web1 command"
  else
    fail "$kind: the kit's recover command ($line): $out"
  fi

  # 4. Every byte, mode and link as the source has them (the other server's data not there).
  back="$target$src"
  inventory() { (cd "$1" && find . -printf '%y %m %s %p %l\n' | sort); }
  if diff <(inventory "$src") <(inventory "$back") >&2 &&
    diff -r --no-dereference "$src" "$back" >&2 && [ ! -e "$target$other" ]; then
    ok "$kind: every byte, mode and link matches the source"
  else
    fail "$kind: the recovered tree differs from the source"
  fi

  # 5. The database dump, straight into a pipe.
  want=$(sha256sum <"$src/var/backups/db.sql")
  got=$(lb dump --job db --host web1 latest "$src/var/backups/db.sql" 2>/dev/null | sha256sum)
  if [ "$want" = "$got" ]; then
    ok "$kind: dump --job db latest FILE | ... gives the dump byte for byte"
  else
    fail "$kind: dump through a pipe differs"
  fi
done

echo "recovery-day: $passed passed, $failed failed"
[ "$failed" = 0 ]
