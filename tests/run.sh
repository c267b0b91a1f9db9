#!/usr/bin/env bash
# Runs Lifeboat's whole test suite: unit tests, end-to-end tests of every command, and a
# compile check of the benchmarks. Installs what the tests need on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
# setpriv (util-linux) runs the unreadable-file tests as an unprivileged user when run as root.
if ! need setpriv && [ "$(id -u)" = 0 ] && need apt-get; then
  apt-get update -qq && apt-get install -y -qq util-linux >/dev/null
fi

cargo test --all-targets "$@"
