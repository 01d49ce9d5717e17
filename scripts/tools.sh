#!/usr/bin/env bash
# Makes sure `make test`'s tools are there: moto_server, cfn-lint, cargo lambda, rustfmt
# and clippy. A tool already on PATH is used as it is; a missing one is installed into
# .venv/ (git-ignored), at the version pinned in requirements-dev.txt. The Makefile puts
# .venv/bin at the end of PATH, so it only fills gaps.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$venv/bin/$1" ]; }
have moto_server || missing+=("moto[server]")
have cfn-lint || missing+=("cfn-lint")
have cargo-lambda || missing+=("cargo-lambda")

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing into $venv: ${missing[*]} (versions pinned in requirements-dev.txt)"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
      echo "cannot create $venv: python3 needs its venv module (Debian: apt-get install python3-venv)" >&2
      exit 1
    }
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c requirements-dev.txt "${missing[@]}"
fi

cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
