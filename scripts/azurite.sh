#!/usr/bin/env bash
# Azurite (npm `azurite`, pinned; 3.35.0 is the newest that runs on Node 20) for the emulator's
# storage-token test.
#   scripts/azurite.sh install   installs it (once) under ~/.cache/pod-identity/node and prints
#                                AZURITE=/path/to/azurite-blob
#   scripts/azurite.sh run DIR PORT CERT KEY
#                                runs azurite-blob in the foreground on 127.0.0.1:PORT over https,
#                                with --oauth basic and telemetry off, storing data in DIR.
# Tests start it through `run` and stop it themselves (they own the process).
set -euo pipefail

CACHE=${POD_IDENTITY_CACHE:-$HOME/.cache/pod-identity}
VERSION=3.35.0
PREFIX="$CACHE/node/azurite-$VERSION"
BIN="$PREFIX/node_modules/.bin/azurite-blob"

log() { printf '[azurite] %s\n' "$*" >&2; }

install() {
  command -v node >/dev/null 2>&1 || { log "FATAL: node is not installed"; exit 1; }
  command -v npm >/dev/null 2>&1 || { log "FATAL: npm is not installed"; exit 1; }
  if [ -x "$BIN" ]; then
    log "azurite $VERSION: cached at $BIN"
  else
    log "azurite $VERSION: installing into $PREFIX"
    mkdir -p "$PREFIX"
    npm install --prefix "$PREFIX" --no-audit --no-fund --silent "azurite@$VERSION" >&2
  fi
  echo "AZURITE=$BIN"
}

case ${1:-install} in
  install) install ;;
  run)
    [ $# -eq 5 ] || { log "usage: $0 run DIR PORT CERT KEY"; exit 2; }
    [ -x "$BIN" ] || { log "FATAL: azurite $VERSION is not installed; run '$0 install' (make deps does)"; exit 1; }
    exec "$BIN" --blobHost 127.0.0.1 --blobPort "$3" --location "$2" --silent --skipApiVersionCheck \
      --disableTelemetry --oauth basic --cert "$4" --key "$5" --loose
    ;;
  *) log "usage: $0 install | run DIR PORT CERT KEY"; exit 2 ;;
esac
