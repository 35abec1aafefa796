#!/usr/bin/env bash
# Builds the upstream binaries pod-identity tests run against (kube-apiserver,
# kubectl, etcd, helm) from their published Go modules, pinned by the wrapper
# modules under tools/testbin/. Each lands in
#   ~/.cache/pod-identity/bin/<name>-<version>/<name>
# and is built only when missing. Prints the directory of each binary as
#   NAME=/path/to/binary
# on stdout (progress goes to stderr), so callers can `eval` it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${POD_IDENTITY_CACHE:-$HOME/.cache/pod-identity}
K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.21.4

log() { printf '[testbin] %s\n' "$*" >&2; }

need_go() {
  command -v go >/dev/null 2>&1 || { log "FATAL: Go is needed to build $1 (go 1.25+)"; exit 1; }
}

# build NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]
build() {
  local name=$1 version=$2 moddir=$3 pkg=$4 ldflags=${5:-}
  local dir="$CACHE/bin/$name-$version" out
  out="$dir/$name"
  if [ -x "$out" ]; then
    log "$name $version: cached at $out"
  else
    need_go "$name"
    mkdir -p "$dir"
    log "$name $version: building from Go modules (first time only; this can take several minutes)..."
    local start=$SECONDS
    (cd "$ROOT/tools/testbin/$moddir" &&
      CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
    mv "$out.tmp" "$out"
    log "$name $version: built in $((SECONDS - start))s"
  fi
  printf '%s=%s\n' "$(echo "$name" | tr 'a-z-' 'A-Z_')" "$out"
}

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
kver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"

want=${*:-kube-apiserver etcd kubectl helm}
for w in $want; do
  case $w in
    kube-apiserver) build kube-apiserver "$K8S_VERSION" kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$kver" ;;
    kubectl) build kubectl "$K8S_VERSION" kubernetes k8s.io/kubernetes/cmd/kubectl "$kver" ;;
    etcd) build etcd "$ETCD_VERSION" etcd . ;;
    helm) build helm "$HELM_VERSION" helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    *) log "unknown binary $w"; exit 2 ;;
  esac
done
