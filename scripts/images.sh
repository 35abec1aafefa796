#!/usr/bin/env bash
# `make images`: OCI image tarballs of mic, nmi, azure-emulator, the pod sandbox (pause) and kubectl
# (the chart's uninstall hook) under
# target/images/, written by scripts/oci-image.py with no base image and no registry.
#
# Each image holds its program, the shared libraries it was linked against (copied from this
# machine, `ldd`), the CA bundle, and for NMI the iptables it runs (nft and legacy backends, their
# libraries and extension plugins), conntrack (--enable-conntrack-deletion), `sleep` (the chart's
# cleanup hook waits with it) and the CNI plugin pod-identity-cni it copies to the node.
#
#   IMAGE_PROFILE=dev (default): the binaries `cargo test` builds anyway (target/debug), stripped;
#                                no build of its own, so `make test` pays nothing for its images.
#   IMAGE_PROFILE=release:       the optimised, fat-LTO binaries users run (minutes to build).
# Names: docker.io/pod-identity/<name>:<chart appVersion>; the chart's image.repository
# docker.io/pod-identity then names them. Prints NAME=TARBALL lines on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${IMAGE_PROFILE:-dev}
OUT=${IMAGES_DIR:-$ROOT/target/images}
REPO=docker.io/pod-identity
TAG=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/deploy/charts/pod-identity/Chart.yaml")
[ -n "$TAG" ] || { echo "[images] FATAL: no appVersion in deploy/charts/pod-identity/Chart.yaml" >&2; exit 1; }

log() { printf '[images] %s\n' "$*" >&2; }
for c in ldd strip readelf python3; do
  command -v "$c" >/dev/null 2>&1 || { log "FATAL: $c is missing (binutils / libc-bin / python3)"; exit 1; }
done

case $PROFILE in
  dev) BIN="$ROOT/target/debug" ;;
  release) BIN="$ROOT/target/release" ;;
  *) log "FATAL: IMAGE_PROFILE must be dev or release, not $PROFILE"; exit 1 ;;
esac
log "building mic, nmi, azure-emulator and pause ($PROFILE profile)..."
(cd "$ROOT" && cargo build --locked -q --profile "$PROFILE" \
  -p mic -p nmi -p azure-emulator -p pause --bin mic --bin nmi --bin azure-emulator --bin pause >&2)
# The CNI plugin runs on the node, not in the image (the container runtime executes it from the
# node's CNI bin directory, where NMI copies it), so it is linked statically: glibc `+crt-static`,
# as deploy/docker/nmi.Dockerfile builds it, in a target directory of its own.
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked -q --profile "$PROFILE" \
  -p cni --bin pod-identity-cni --target "$TRIPLE" --target-dir "$ROOT/target/static" >&2)
CNI_PLUGIN="$ROOT/target/static/$TRIPLE/$([ "$PROFILE" = dev ] && echo debug || echo release)/pod-identity-cni"
if readelf -d "$CNI_PLUGIN" | grep -q NEEDED; then log "FATAL: $CNI_PLUGIN is not static"; exit 1; fi

CERTS=/etc/ssl/certs/ca-certificates.crt
[ -f "$CERTS" ] || { log "FATAL: $CERTS is missing (apt-get install ca-certificates)"; exit 1; }
# distroless's users: root and nonroot (65532), which MIC runs as.
PASSWD='root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n'
GROUP='root:x:0:\nnonroot:x:65532:\n'
common=(--file "$CERTS:/etc/ssl/certs/ca-certificates.crt" --text "/etc/passwd:$PASSWD"
  --text "/etc/group:$GROUP" --dir /tmp:1777 --dir /home/nonroot --elf-closure)

image() { # image NAME ARGS…: rewritten only when an input file is newer than the tarball
  local name=$1 tag=${IMAGE_TAG:-$TAG}; shift
  local line arg inputs=("$0" "$ROOT/scripts/oci-image.py")
  for arg in "$@"; do
    case $arg in /*:/*) [ -f "${arg%%:*}" ] && inputs+=("${arg%%:*}") ;; esac
  done
  if [ -s "$OUT/$name.tar" ] && [ -z "$(find "${inputs[@]}" -newer "$OUT/$name.tar" -print -quit)" ]; then
    log "$REPO/$name:$tag: cached at $OUT/$name.tar"
    printf '%s=%s\n' "$(echo "$name" | tr 'a-z-' 'A-Z_')_IMAGE" "$OUT/$name.tar"
    return 0
  fi
  line=$(python3 "$ROOT/scripts/oci-image.py" --name "$REPO/$name:$tag" --out "$OUT/$name.tar" "$@")
  log "$line"
  printf '%s=%s\n' "$(echo "$name" | tr 'a-z-' 'A-Z_')_IMAGE" "$OUT/$name.tar"
}

image mic "${common[@]}" --file "$BIN/mic:/usr/local/bin/mic" --strip /usr/local/bin/mic \
  --entrypoint /usr/local/bin/mic --user 65532:65532 --port 8080/tcp --port 8888/tcp

# NMI's iptables: Debian's own (this machine's) xtables multi-call binaries. `iptables` is the
# nf_tables backend; the legacy one sits behind /usr/lib/pod-identity/iptables-legacy (the chart
# puts it first in PATH for nmi.iptablesMode=legacy), as in deploy/docker/nmi.Dockerfile.
XT=/usr/lib/x86_64-linux-gnu/xtables
for f in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/conntrack /usr/bin/sleep; do
  [ -x "$f" ] || { log "FATAL: $f is missing (apt-get install iptables conntrack coreutils)"; exit 1; }
done
[ -d "$XT" ] || { log "FATAL: $XT (iptables' extensions) is missing"; exit 1; }
xt=()
for so in "$XT"/*.so; do xt+=(--file "$so:$so"); done
image nmi "${common[@]}" --file "$BIN/nmi:/usr/local/bin/nmi" --strip /usr/local/bin/nmi \
  --file /usr/sbin/xtables-nft-multi:/usr/sbin/xtables-nft-multi \
  --file /usr/sbin/xtables-legacy-multi:/usr/sbin/xtables-legacy-multi "${xt[@]}" \
  --symlink /usr/sbin/iptables:xtables-nft-multi --symlink /usr/sbin/iptables-restore:xtables-nft-multi \
  --symlink /usr/sbin/iptables-save:xtables-nft-multi \
  --symlink /usr/lib/pod-identity/iptables-legacy/iptables:/usr/sbin/xtables-legacy-multi \
  --symlink /usr/lib/pod-identity/iptables-legacy/iptables-restore:/usr/sbin/xtables-legacy-multi \
  --symlink /usr/lib/pod-identity/iptables-legacy/iptables-save:/usr/sbin/xtables-legacy-multi \
  --file /usr/sbin/conntrack:/usr/sbin/conntrack \
  --file "$CNI_PLUGIN:/usr/local/bin/pod-identity-cni" --strip /usr/local/bin/pod-identity-cni \
  --file /usr/bin/sleep:/usr/bin/sleep --dir /run \
  --entrypoint /usr/local/bin/nmi --user 0:0 --port 8085/tcp --port 9090/tcp

image azure-emulator "${common[@]}" --file "$BIN/azure-emulator:/usr/local/bin/azure-emulator" \
  --strip /usr/local/bin/azure-emulator --entrypoint /usr/local/bin/azure-emulator

image pause --file "$BIN/pause:/pause" --strip /pause --elf-closure --entrypoint /pause --user 65535:65535

# The chart's uninstall hook runs kubectl (cleanup.kubectlImage, registry.k8s.io/kubectl elsewhere):
# the testbin's static kubectl, at the version it was built from.
KUBECTL=$("$ROOT/scripts/testbin.sh" kubectl | sed -n 's/^KUBECTL=//p')
KUBECTL_VERSION=$(basename "$(dirname "$KUBECTL")"); KUBECTL_VERSION=${KUBECTL_VERSION#kubectl-}
IMAGE_TAG=$KUBECTL_VERSION image kubectl --file "$KUBECTL:/bin/kubectl" --elf-closure --entrypoint /bin/kubectl --user 65532:65532 \
  --text "/etc/passwd:$PASSWD" --dir /tmp:1777
