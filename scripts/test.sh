#!/bin/sh
# Runs every test: installs the system packages the tests use, checks style and licenses,
# builds, runs the suite, then the leak check. Needs root (real namespaces, mounts, cgroups).
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
export RUST_BACKTRACE=1
# House style first: formatting, lints as errors, and the supply chain (licenses, bans,
# sources; advisories need GitHub, which this machine cannot reach).
cargo fmt --all --check
cargo clippy --locked --workspace --all-targets -- -D warnings
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny@0.20.2
cargo deny --locked check licenses bans sources
cargo build --locked
cargo test --locked --workspace -- --test-threads="${WHARF_TEST_THREADS:-4}"
cargo test --locked --test leak -- --ignored --test-threads=1
