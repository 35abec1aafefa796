#!/usr/bin/env bash
# Installs the Debian packages that pod-identity's tests use, when missing.
# Runs as root (as CI does); otherwise it only reports what is missing.
set -euo pipefail

# command -> Debian package
declare -A NEED=(
  [curl]=curl
  [git]=git
  # azure-emulator tests: Python SDK venv (scripts/python-venv.sh), Azurite (scripts/azurite.sh)
  [python3]=python3
  [node]=nodejs
  [npm]=npm
  # nmi: the network-namespace test of the iptables interception (tests/netns.rs)
  [iptables]=iptables
  [iptables-restore]=iptables
  # nmi: --enable-conntrack-deletion (tests/conntrack.rs; NMI's image carries this machine's)
  [conntrack]=conntrack
  [socat]=socat
  [nsenter]=util-linux
  # make bench: NMI and the load generator each on a core of their own
  [taskset]=util-linux
  # the sandbox (scripts/sandbox.sh): namespaces and veths, its PKI
  [ip]=iproute2
  [openssl]=openssl
  # make test: the shell scripts under scripts/ and .ci/ are linted
  [shellcheck]=shellcheck
  # the real node (scripts/node.sh): containerd and runc run the chart's pods; mmdebstrap makes the
  # walkthrough app's Debian root filesystem (scripts/app-rootfs.sh)
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [mmdebstrap]=mmdebstrap
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
for tool in go cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[deps] FATAL: $tool is not installed; this machine kind provides it" >&2; exit 1; }
done
# `python3 -m venv` needs ensurepip, which Debian ships separately in python3-venv.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# The real node's CNI plugins (bridge, host-local, loopback) are files, not commands on PATH.
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
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
