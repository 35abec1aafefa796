#!/usr/bin/env bash
# The walkthrough's application as an image: target/images/app.tar, docker.io/pod-identity/app:<appVersion>.
#
#   layer 1: a Debian bookworm root filesystem with python3 and ca-certificates, made by mmdebstrap
#            from Debian's packages (the host's apt sources), cached in ~/.cache/pod-identity/app-rootfs/
#   layer 2: the Azure SDKs the tests pin (azure-identity, azure-storage-blob: the pip-installed
#            site-packages of scripts/python-venv.sh's venv, same CPython minor version) and the
#            walkthrough's code, unchanged: examples/sandbox/read_blob.py and whoami.py under /app.
# Rebuilt only when one of its inputs is newer than the tarball. Prints APP_IMAGE=<tarball>.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${POD_IDENTITY_CACHE:-$HOME/.cache/pod-identity}
OUT=${IMAGES_DIR:-$ROOT/target/images}
TAG=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/deploy/charts/pod-identity/Chart.yaml")
SUITE=bookworm
ROOTFS="$CACHE/app-rootfs/$SUITE-python3.tar"

log() { printf '[app-image] %s\n' "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

PY=$("$ROOT/scripts/python-venv.sh")
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

if [ ! -s "$ROOTFS" ]; then
  command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is missing (make deps installs it)"
  log "making a Debian $SUITE root filesystem with python3 (mmdebstrap, first time only; about 2 minutes)..."
  mkdir -p "$(dirname "$ROOTFS")"
  mmdebstrap --quiet --variant=minbase --include=python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' "$SUITE" "${ROOTFS%.tar}.partial.tar" >&2 ||
    die "mmdebstrap failed (it needs the host's apt sources to reach a Debian mirror)"
  mv "${ROOTFS%.tar}.partial.tar" "$ROOTFS"
fi
# The SDKs' compiled parts (cryptography, cffi) are built for this CPython minor version.
# (grep -c reads the whole listing: grep -q would stop tar with SIGPIPE, a failure under pipefail.)
tar -tf "$ROOTFS" | grep -c "^\./usr/lib/python$PYVER/\$" >/dev/null ||
  die "the $SUITE root filesystem has no Python $PYVER, the venv's; the SDKs' binary wheels would not load"

newest=$(find "$ROOTFS" "$SITE" "$ROOT/examples/sandbox" "$ROOT/scripts/app-image.sh" "$ROOT/scripts/oci-image.py" \
  -newer "$OUT/app.tar" -print -quit 2>/dev/null || echo rebuild)
if [ -s "$OUT/app.tar" ] && [ -z "$newest" ]; then
  log "cached at $OUT/app.tar"
else
  line=$(python3 "$ROOT/scripts/oci-image.py" --name "docker.io/pod-identity/app:$TAG" --out "$OUT/app.tar" \
    --layer "$ROOTFS" --tree "$SITE:/usr/local/lib/python$PYVER/dist-packages" \
    --file "$ROOT/examples/sandbox/read_blob.py:/app/read_blob.py" \
    --file "$ROOT/examples/sandbox/whoami.py:/app/whoami.py" \
    --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 --workdir /app \
    --entrypoint '["/usr/bin/python3"]' --cmd '["/app/read_blob.py"]')
  log "$line"
fi
echo "APP_IMAGE=$OUT/app.tar"
