#!/usr/bin/env bash
# The Helm chart on the sandbox's real node (scripts/node.sh): MIC and NMI as the chart installs
# them, from the images of `make images`, and the walkthrough's application as a Deployment.
#
#   scripts/chart.sh install [HELM ARGS…]   helm install pod-identity deploy/charts/pod-identity; waits
#                                           for NMI Ready (its readiness probe) and MIC's rollout
#   scripts/chart.sh upgrade [HELM ARGS…]   helm upgrade --reuse-values; waits for the DaemonSet's rollout
#   scripts/chart.sh app                    the walkthrough's Deployment `myapp` (label
#                                           aadpodidbinding: myapp, and its identity and binding
#                                           unless `make demo` made them); waits until it read the blob
#   scripts/chart.sh deploy NAME SELECTOR RESOURCES COMMAND
#                                           a Deployment NAME of the app's image on the real node,
#                                           bound to SELECTOR, running the shell COMMAND
#   scripts/chart.sh identity [NAME SELECTOR]
#                                           a managed identity NAME in the emulator (default
#                                           myapp-identity), its AzureIdentity and a binding for
#                                           pods labelled aadpodidbinding: SELECTOR (default myapp)
#   scripts/chart.sh test [HELM ARGS…]      helm test: the chart's test pod asks 169.254.169.254 on the
#                                           real node (what it must get: the release's tests.* values)
#   scripts/chart.sh uninstall              helm uninstall (its hook removes NMI's rules); the
#                                           sandbox's own MIC process takes the Lease back
#
# The chart's values for the sandbox, and why each is needed, are in $STATE/chart-values.yaml
# (written by `install`). Nothing here changes the chart: what it needs from the sandbox is what an
# AKS cluster gives it (a node's providerID, the kubernetes Service, the cloud config).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${POD_IDENTITY_SANDBOX:-/tmp/pod-identity-sandbox}
SB="$ROOT/scripts/sandbox.sh"
# shellcheck source=scripts/sandbox-layout.sh
. "$ROOT/scripts/sandbox-layout.sh"
RELEASE=pod-identity
RELEASE_NS=pod-identity
APP_NS=default
CA_DIR=/etc/pod-identity-sandbox

log() { printf '[chart] %s\n' "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
[ -f "$STATE/env" ] || die "the sandbox is not up: run 'make up'"
# shellcheck disable=SC1091
. "$STATE/env"
k() { "$SB" kubectl "$@"; }
helm_() { ip netns exec "$CP" "$HELM" --kubeconfig "$STATE/kubeconfig" "$@"; }

values() {
  cat >"$STATE/chart-values.yaml" <<EOF
# The images of make images, imported into the node's containerd (nothing can be pulled).
image:
  repository: docker.io/pod-identity
  imagePullPolicy: Never
cleanup:
  kubectlImage: {repository: docker.io/pod-identity/kubectl, tag: v1.35.4, pullPolicy: Never}
mic:
  # Only the real node runs pods; the other sandbox nodes are network namespaces without a kubelet.
  nodeSelector: {kubernetes.io/hostname: $REAL_NODE}
  # The Lease the sandbox's own MIC process also stands for.
  leaderElection: {namespace: default}
  # The cluster's service principal, as in azure.json on AKS nodes (a Secret: the node has none).
  cloudConfig: {secretName: azure-json}
  # The emulator's ARM and Entra ID, whose certificates the sandbox's CA signs.
  extraArgs:
    - --arm-endpoint=https://$CP_IP:$ARM_PORT
    - --aad-endpoint=https://$CP_IP:$ENTRA_PORT
    - --ca-file=$CA_DIR/ca.pem
    - --arm-poll-interval=500ms
  extraVolumes:
    - {name: emulator-ca, hostPath: {path: $STATE/emulator-tls, type: Directory}}
  extraVolumeMounts:
    - {name: emulator-ca, mountPath: $CA_DIR, readOnly: true}
nmi:
  nodeSelector: {kubernetes.io/hostname: $REAL_NODE}
  # IMDS of the VM vm-k, the emulator's (169.254.169.254 on Azure).
  extraArgs:
    - --metadata-ip=$CP_IP
    - --metadata-port=$REAL_NODE_IMDS
  # The CNI gate in the node's own directories (scripts/node.sh): its CNI bin and configuration
  # directories, and the directory standing for its /run (which scripts/node.sh reboot empties).
  cni: {binDir: $STATE/node-$REAL_NODE/cni-bin, confDir: $STATE/node-$REAL_NODE/cni, readyDir: $STATE/node-$REAL_NODE/run}
EOF
}

# NMI Ready: the DaemonSet's pod on the real node passes its readiness probe (/readyz: the rules
# are in place and every watch has synced).
nmi_ready() {
  k -n "$RELEASE_NS" rollout status "daemonset/$RELEASE-nmi" --timeout=120s >&2 || return 1
  # With maxSurge, `rollout status` returns once the new pod is scheduled while the old one still
  # counts as available, so it can return before the new NMI is Ready. Wait until the node has one
  # NMI pod, Ready (the old one has drained and gone; its grace is 60 s).
  local i
  for i in $(seq 120); do
    [ "$(k -n "$RELEASE_NS" get pods -l app.kubernetes.io/component=nmi \
      -o 'jsonpath={range .items[*]}{.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status};{end}')" = "$REAL_NODE True;" ] &&
      return 0
    [ "$i" = 1 ] && log "waiting for the node's one NMI pod to be Ready..."
    sleep 1
  done
  return 1
}

install() {
  values
  k get namespace "$RELEASE_NS" >/dev/null 2>&1 || k create namespace "$RELEASE_NS" >/dev/null
  k -n "$RELEASE_NS" create secret generic azure-json --from-file=azure.json="$STATE/azure.json" \
    --dry-run=client -o yaml | k apply -f - >/dev/null
  log "helm install $RELEASE deploy/charts/pod-identity (namespace $RELEASE_NS)..."
  helm_ install "$RELEASE" "$ROOT/deploy/charts/pod-identity" --namespace "$RELEASE_NS" \
    -f "$STATE/chart-values.yaml" "$@" >&2
  nmi_ready || die "NMI did not become Ready (kubectl -n $RELEASE_NS describe pods; $STATE/logs/kubelet.log)"
  log "NMI is Ready on $REAL_NODE"
  k -n "$RELEASE_NS" rollout status "deployment/$RELEASE-mic" --timeout=120s >&2 ||
    die "MIC's Deployment did not roll out"
  # The chart's MIC replicas take the Lease over from the sandbox's process.
  "$SB" mic-process stop
  local holder="" end=$((SECONDS + 60))
  until [[ $holder == "$RELEASE-mic-"* ]]; do
    [ $SECONDS -lt $end ] || die "no MIC pod of the chart took the Lease default/aad-pod-identity-mic (holder: $holder)"
    sleep 1
    holder=$(k -n default get lease aad-pod-identity-mic -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null || true)
  done
  log "MIC: the chart's $holder holds the Lease"
}

upgrade() {
  log "helm upgrade $RELEASE $*"
  helm_ upgrade "$RELEASE" "$ROOT/deploy/charts/pod-identity" --namespace "$RELEASE_NS" --reuse-values "$@" >&2
  nmi_ready || die "NMI did not become Ready again after the upgrade"
}

# deploy NAME SELECTOR RESOURCES SHELL-COMMAND: a Deployment of one pod of the walkthrough's image
# on the real node, labelled aadpodidbinding: SELECTOR, running SHELL-COMMAND; RESOURCES, when not
# empty, is its aadpodidentity.k8s.io/token-resources annotation (README "Readiness").
deploy() {
  local name=$1 selector=$2 resources=$3 command=$4 annotations="{}"
  if [ -n "$resources" ]; then
    annotations="{aadpodidentity.k8s.io/token-resources: \"$resources\"}"
  fi
  k -n "$APP_NS" create configmap sandbox-ca --from-file=ca.crt="$STATE/pki/ca.crt" \
    --dry-run=client -o yaml | k apply -f - >/dev/null
  k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name, namespace: $APP_NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: $name}}
  template:
    metadata:
      labels: {app: $name, aadpodidbinding: $selector}
      annotations: $annotations
    spec:
      nodeSelector: {kubernetes.io/hostname: $REAL_NODE}
      containers:
        - name: app
          image: docker.io/pod-identity/app:$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/deploy/charts/pod-identity/Chart.yaml")
          imagePullPolicy: Never
          command: ["/bin/sh", "-c", "$command"]
          env:
            - {name: STORAGE_ACCOUNT_URL, value: "https://$CP_IP:$AZURITE_PORT/devstoreaccount1"}
            - {name: REQUESTS_CA_BUNDLE, value: /etc/sandbox-ca/ca.crt}
          volumeMounts:
            - {name: ca, mountPath: /etc/sandbox-ca, readOnly: true}
      volumes:
        - {name: ca, configMap: {name: sandbox-ca}}
EOF
}

app() {
  # The seed's step 6: a Deployment whose pods carry aadpodidbinding. The container runs the
  # walkthrough's code unchanged, then stays up so that its output can be read.
  deploy myapp myapp "" "python3 /app/read_blob.py; exec sleep infinity"
  k -n "$APP_NS" rollout status deployment/myapp --timeout=120s >&2 || die "myapp did not start"
  local out="" end=$((SECONDS + 120))
  until echo "$out" | grep -qE '^(BLOB|REFUSED):'; do
    [ $SECONDS -lt $end ] || break
    sleep 1
    out=$(k -n "$APP_NS" logs deployment/myapp 2>/dev/null || true)
  done
  echo "$out"
  echo "$out" | grep -q '^BLOB: Hello from Azurite' || die "myapp did not read the blob"
}

# The walkthrough's identity (its steps 3 to 5) when `make demo` has not made it: the managed
# identity myapp-identity in the emulator, its owner's consent for the app's namespace (the tag
# MIC checks: `az identity create --tags pod-identity-namespaces=<ns>`), the cluster's service
# principal allowed to assign it,
# and the seed's AzureIdentity and AzureIdentityBinding (selector myapp) in the app's namespace.
identity() { # identity [NAME SELECTOR]
  local name=${1:-myapp-identity} selector=${2:-myapp}
  if k -n "$APP_NS" get azureidentity "$name" >/dev/null 2>&1; then
    log "AzureIdentity $name exists"
    return 0
  fi
  local created client_id resource_id
  created=$(ip netns exec "$CP" curl -sf -X POST "http://127.0.0.1:$ADMIN_PORT/admin/identities" \
    -H 'content-type: application/json' -d "{\"name\":\"$name\",\"resource_group\":\"myresourcegroup\",\"tags\":{\"pod-identity-namespaces\":\"$APP_NS\"}}") ||
    die "the emulator did not create the identity"
  client_id=$(echo "$created" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientId"])')
  resource_id=$(echo "$created" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  ip netns exec "$CP" curl -sf -X POST "http://127.0.0.1:$ADMIN_PORT/admin/roles" -H 'content-type: application/json' \
    -d "{\"principal\":\"aks-cluster-sp\",\"scope\":\"$resource_id\"}" >/dev/null || die "the role assignment failed"
  sed -e "s|<the managed identity id returned previously>|$resource_id|" \
    -e "s|<the managed identity clientId returned previously>|$client_id|" \
    -e "s|<your_managed_identity_name>|$name|" "$ROOT/examples/seed/aadpodidentity.yaml" | k -n "$APP_NS" apply -f - >&2
  sed -e "s|<your_managed_identity_name from the previous step>|$name|" \
    -e "s|<your_app_selector_name>|$selector|" -e "s|name: myapp-azure-identity-binding|name: $selector-azure-identity-binding|" \
    "$ROOT/examples/seed/aadpodidentitybinding.yaml" | k -n "$APP_NS" apply -f - >&2
}

# helm test (templates/tests/token-path.yaml): helm's report on stdout. A test pod that failed is
# kept, and its one-line verdict is shown (helm deletes one that passed, so `--logs` is not used).
helm_test() {
  log "helm test $RELEASE..."
  local out rc=0 pods ns name
  out=$(helm_ test "$RELEASE" --namespace "$RELEASE_NS" --timeout 5m "$@" 2>&1) || rc=$?
  echo "$out"
  [ $rc -eq 0 ] && return 0
  pods=$(k get pods -A -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=test-token-path" \
    -o 'jsonpath={range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' 2>/dev/null || true)
  while read -r ns name; do
    [ -n "$name" ] || continue
    log "logs of $ns/$name:"
    k -n "$ns" logs "pod/$name" >&2 || true
  done <<<"$pods"
  die "helm test failed"
}

uninstall() {
  log "helm uninstall $RELEASE..."
  helm_ uninstall "$RELEASE" --namespace "$RELEASE_NS" --wait --timeout 5m >&2
  "$SB" mic-process start
}

case ${1:-} in
  install) shift; install "$@" ;;
  upgrade) shift; upgrade "$@" ;;
  app) identity; app ;;
  deploy) shift; deploy "$@" ;;
  identity) shift; identity "$@" ;;
  test) shift; helm_test "$@" ;;
  uninstall) uninstall ;;
  *) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
