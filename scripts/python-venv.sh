#!/usr/bin/env bash
# Creates (once) the Python venv that the azure-emulator tests drive real Azure SDK clients from:
# azure-identity and azure-storage-blob, pinned. Prints the venv's python path on stdout.
# Re-creates the venv when the pinned versions change (the stamp file records them).
set -euo pipefail

CACHE=${POD_IDENTITY_CACHE:-$HOME/.cache/pod-identity}
VENV="$CACHE/venv"
PINS="azure-identity==1.27.0 azure-storage-blob==12.31.1"
STAMP="$VENV/.pod-identity-pins"

log() { printf '[python-venv] %s\n' "$*" >&2; }

command -v python3 >/dev/null 2>&1 || { log "FATAL: python3 is not installed"; exit 1; }
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$PINS" ]; then
  log "cached at $VENV"
else
  log "creating $VENV with $PINS"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PINS >&2
  echo "$PINS" > "$STAMP"
fi
echo "$VENV/bin/python"
