#!/bin/sh
# Runs every test: installs the system packages the tests use, builds, runs the suite,
# then the leak check. Needs root (real namespaces, mounts and cgroups).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
export RUST_BACKTRACE=1
cargo build --locked
cargo test --locked --workspace -- --test-threads="${WHARF_TEST_THREADS:-4}"
cargo test --locked --test leak -- --ignored --test-threads=1
