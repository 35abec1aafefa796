#!/usr/bin/env bash
# Fails at once, and says so, when the disk cannot hold what `make test` writes, rather than
# minutes later in the middle of a link ("No space left on device", or a linker's bus error).
# A cold run writes about 5.5 GiB under target/ (the workspace's test binaries, with line tables
# only: Cargo.toml [profile.dev]), some 6 GiB of Go module and build caches for the test binaries
# (scripts/testbin.sh; once), and the real node's images and containerd state (about 1 GiB).
# POD_IDENTITY_MIN_FREE_GIB overrides the threshold.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
k8s=$(sed -n 's/^K8S_VERSION=//p' "$ROOT/scripts/testbin.sh")
need_gib=13
if [ -x "${POD_IDENTITY_CACHE:-$HOME/.cache/pod-identity}/bin/kube-apiserver-$k8s/kube-apiserver" ]; then
  # The Go-built binaries are cached: no Go caches to fill.
  need_gib=7
fi
need_gib=${POD_IDENTITY_MIN_FREE_GIB:-$need_gib}
mkdir -p "$ROOT/target"
free_kib=$(df -Pk "$ROOT/target" | awk 'NR == 2 { print $4 }')
free_gib=$((free_kib / 1024 / 1024))
if [ "$free_gib" -lt "$need_gib" ]; then
  echo "FATAL: $free_gib GiB free on the disk holding $ROOT/target; make test needs about $need_gib GiB." >&2
  echo "       Free some (an old target/ from other profiles: cargo clean) or set POD_IDENTITY_MIN_FREE_GIB." >&2
  exit 1
fi
