#!/usr/bin/env bash
# Supply-chain checks (`make deny`, part of `make test`): cargo-deny's bans, licenses and sources
# checks against deny.toml, for every workspace crate with all features.
#
# cargo-deny is built from crates.io, pinned, once, into
#   ~/.cache/pod-identity/bin/cargo-deny-<version>/bin/cargo-deny
# (like scripts/testbin.sh's binaries). The checks then run with --offline: they need only
# Cargo.lock and the crates' sources, which `cargo fetch` gets from crates.io when missing.
#
# The advisories check is not run by default: it clones the RustSec advisory database from GitHub,
# which this project's machines and CI cannot reach. With network, run
#   scripts/cargo-deny.sh advisories      (or: cargo deny check advisories)
# Arguments, when given, replace the default list of checks.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${POD_IDENTITY_CACHE:-$HOME/.cache/pod-identity}
# The newest cargo-deny at the time of pinning; it needs Rust 1.88+.
CARGO_DENY_VERSION=0.20.2
CARGO=${CARGO:-cargo}

log() { printf '[cargo-deny] %s\n' "$*" >&2; }

dir="$CACHE/bin/cargo-deny-$CARGO_DENY_VERSION"
bin="$dir/bin/cargo-deny"
if [ -x "$bin" ]; then
  log "cargo-deny $CARGO_DENY_VERSION: cached at $bin"
else
  log "building cargo-deny $CARGO_DENY_VERSION once from crates.io (~4 min on 2 cores)..."
  start=$SECONDS
  rm -rf "$dir.tmp"
  # --locked: cargo-deny's own Cargo.lock, so the build is the same every time.
  nice -n 10 "$CARGO" install cargo-deny --locked --version "=$CARGO_DENY_VERSION" \
    --root "$dir.tmp" --quiet
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  log "cargo-deny $CARGO_DENY_VERSION: built in $((SECONDS - start))s"
fi

checks=("$@")
[ ${#checks[@]} -gt 0 ] || checks=(bans licenses sources)

offline=(--offline)
for c in "${checks[@]}"; do
  # The advisory database is fetched from the network.
  if [ "$c" = advisories ] || [ "$c" = all ]; then offline=(); fi
done

cd "$ROOT"
# cargo-deny reads every crate's manifest (cargo metadata) and license files: get the sources
# from crates.io when they are not in cargo's cache yet (`make deny` on a fresh clone).
"$CARGO" fetch --locked --offline >/dev/null 2>&1 || "$CARGO" fetch --locked --quiet

# --hide-inclusion-graph: the duplicate-version warnings alone; `cargo deny check bans` shows
# which crates pull each version in.
"$bin" --all-features --locked "${offline[@]}" \
  check --hide-inclusion-graph "${checks[@]}"
