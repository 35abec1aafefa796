#!/usr/bin/env bash
# Installs the Debian packages that pod-identity's tests use, when missing.
# Runs as root (as CI does); otherwise it only reports what is missing.
set -euo pipefail

# command -> Debian package
declare -A NEED=(
  [curl]=curl
  [git]=git
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
for tool in go cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[deps] FATAL: $tool is not installed; this machine kind provides it" >&2; exit 1; }
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[deps] FATAL: missing packages ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "[deps] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
