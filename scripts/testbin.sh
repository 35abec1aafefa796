#!/usr/bin/env bash
# Builds the upstream binaries pod-identity tests run against (kube-apiserver,
# kubectl, kubelet, kube-controller-manager, kube-scheduler, etcd, helm, and aad-pod-identity v1.8.17's own NMI and MIC as
# upstream-nmi and upstream-mic, the peers of the mixed-version tests) from
# their published Go modules, pinned by the wrapper modules under
# tools/testbin/. Each lands in
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
# The release pod-identity is a drop-in for (README, "Mixed versions").
AAD_POD_IDENTITY_VERSION=v1.8.17

log() { printf '[testbin] %s\n' "$*" >&2; }

need_go() {
  command -v go >/dev/null 2>&1 || { log "FATAL: Go is needed to build $1 (go 1.25+)"; exit 1; }
}

# What a first build takes on 2 cores: on a fresh machine of the project's kind the seven binaries
# the sandbox needs took 16 minutes, kube-apiserver alone 7.5 (it compiles most of the packages the
# others share through Go's build cache), helm 3.3 (BENCHMARKS.md, "Cold make demo"), and upstream's
# NMI and MIC 2.3 together.
expected() {
  case $1 in
    kube-apiserver) echo "about 7 minutes" ;;
    helm) echo "about 3 minutes" ;;
    kube-scheduler) echo "seconds once kube-controller-manager is built" ;;
    upstream-nmi | upstream-mic) echo "about 1 minute" ;;
    *) echo "a minute or two once kube-apiserver is built" ;;
  esac
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
    log "$name $version: building from Go modules (first time only; $(expected "$name"))..."
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

aadver="-X github.com/Azure/aad-pod-identity/version.NMIVersion=$AAD_POD_IDENTITY_VERSION -X github.com/Azure/aad-pod-identity/version.MICVersion=$AAD_POD_IDENTITY_VERSION"

want=${*:-kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler helm upstream-nmi upstream-mic}
for w in $want; do
  case $w in
    kube-apiserver) build kube-apiserver "$K8S_VERSION" kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$kver" ;;
    # The real node's kubelet (scripts/node.sh), the apiserver's own version.
    kubelet) build kubelet "$K8S_VERSION" kubernetes k8s.io/kubernetes/cmd/kubelet "$kver" ;;
    # The real node's control plane: pods of DaemonSets/Deployments (controllers), their nodes
    # (scheduler), ServiceAccounts and kube-root-ca.crt (controllers).
    kube-controller-manager) build kube-controller-manager "$K8S_VERSION" kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$kver" ;;
    kube-scheduler) build kube-scheduler "$K8S_VERSION" kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$kver" ;;
    kubectl) build kubectl "$K8S_VERSION" kubernetes k8s.io/kubernetes/cmd/kubectl "$kver" ;;
    etcd) build etcd "$ETCD_VERSION" etcd . ;;
    helm) build helm "$HELM_VERSION" helm helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    upstream-nmi) build upstream-nmi "$AAD_POD_IDENTITY_VERSION" aad-pod-identity github.com/Azure/aad-pod-identity/cmd/nmi "$aadver" ;;
    upstream-mic) build upstream-mic "$AAD_POD_IDENTITY_VERSION" aad-pod-identity github.com/Azure/aad-pod-identity/cmd/mic "$aadver" ;;
    *) log "unknown binary $w"; exit 2 ;;
  esac
done
