#!/usr/bin/env bash
# The pod-identity sandbox: a whole cluster on one machine, in network namespaces of its own.
#
#   scripts/sandbox.sh up        build what is missing, start everything (idempotent)
#   scripts/sandbox.sh down      stop every process, remove every namespace and the state dir
#   scripts/sandbox.sh status    what runs
#   scripts/sandbox.sh kubectl … kubectl against the sandbox's kube-apiserver
#   scripts/sandbox.sh pod run [--namespace NS] --name NAME --node NODE [--label K=V]… [--service-account SA] [--keep] -- CMD…
#                                run CMD in a sandbox pod (see README "Run your own code")
#   scripts/sandbox.sh demo      the seed walkthrough, step by step (make demo)
#
# Topology (nothing touches the root namespace's routes or netfilter rules):
#   pi-hub   a bridge joining the others
#   pi-cp    10.250.0.2: etcd, kube-apiserver, the Azure emulator (ARM, Entra, one IMDS per
#            VM instance), Azurite (https, --oauth basic), MIC
#   pi-node-a-0, pi-node-a-1 (scale set ss-a), pi-node-c-0 (VM vm-c): 10.250.0.1x, each with
#            its NMI and its iptables rules; pods' traffic to 169.254.169.254 is DNATed to NMI
#   pi-p-…   one namespace per pod, 10.244.<node>.<n>, routed through its node's namespace
#   pi-node-k-0  10.250.0.14 (VM vm-k): the real node, kubelet + containerd + runc + a CNI bridge
#            (scripts/node.sh); the chart's pods run there (scripts/chart.sh, make demo)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${POD_IDENTITY_SANDBOX:-/tmp/pod-identity-sandbox}
CACHE=${POD_IDENTITY_CACHE:-$HOME/.cache/pod-identity}
# shellcheck source=scripts/sandbox-layout.sh
. "$ROOT/scripts/sandbox-layout.sh"

log() { printf '[sandbox] %s\n' "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "the sandbox creates network namespaces and iptables rules inside them: run as root"
  for c in ip iptables openssl python3 curl; do
    command -v "$c" >/dev/null 2>&1 || die "$c is missing (make deps installs it)"
  done
}

# ---------------------------------------------------------------------------- build
build() {
  # One profile for the sandbox's processes and the real node's images: dev, the binaries
  # `cargo test` builds anyway (a first build takes about 4 minutes on 2 cores). The fat-LTO
  # release profile is for what users ship (the Dockerfiles, IMAGE_PROFILE=release) and took 13
  # minutes more; POD_IDENTITY_SANDBOX_PROFILE=release runs the sandbox's processes on it.
  if [ "${POD_IDENTITY_SANDBOX_PROFILE:-dev}" = dev ]; then
    log "building mic, nmi and azure-emulator (debug; a first build takes about 4 minutes)..."
    (cd "$ROOT" && cargo build --locked -p mic -p nmi -p azure-emulator >&2)
    BIN="$ROOT/target/debug"
  else
    log "building mic, nmi and azure-emulator (release, fat LTO; a first build takes about 15 minutes)..."
    (cd "$ROOT" && cargo build --release --locked -p mic -p nmi -p azure-emulator >&2)
    BIN="$ROOT/target/release"
  fi
  eval "$("$ROOT/scripts/testbin.sh" kube-apiserver etcd kubectl kubelet kube-controller-manager kube-scheduler helm)"
  # The real node's images (debug binaries, stripped: built once, shared with `cargo test`).
  "$ROOT/scripts/images.sh" >/dev/null
  # The walkthrough's application (Debian's python3 and the Azure SDKs), for `make demo`'s pod on it.
  "$ROOT/scripts/app-image.sh" >/dev/null
  PY=$("$ROOT/scripts/python-venv.sh" | tail -n 1)
  [ -x "$PY" ] || die "the Python venv is missing ($PY)"
  AZURITE_BIN=$("$ROOT/scripts/azurite.sh" install | sed -n 's/^AZURITE=//p')
  cat > "$STATE/env" <<EOF
BIN=$BIN
KUBE_APISERVER=$KUBE_APISERVER
ETCD=$ETCD
KUBECTL=$KUBECTL
KUBELET=$KUBELET
KUBE_CONTROLLER_MANAGER=$KUBE_CONTROLLER_MANAGER
KUBE_SCHEDULER=$KUBE_SCHEDULER
HELM=$HELM
PY=$PY
AZURITE_BIN=$AZURITE_BIN
EOF
}

load_env() {
  [ -f "$STATE/env" ] || die "the sandbox is not up: run 'make up'"
  # shellcheck disable=SC1091
  . "$STATE/env"
}

# ---------------------------------------------------------------------------- processes
# start NAME NETNS CMD… : runs CMD in NETNS in the background, its log in $STATE/logs/NAME.log
start() {
  local name=$1 ns=$2; shift 2
  mkdir -p "$STATE/logs" "$STATE/pids"
  nohup ip netns exec "$ns" "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
}

alive() { [ -f "$STATE/pids/$1" ] && kill -0 "$(cat "$STATE/pids/$1")" 2>/dev/null; }

wait_for() { # wait_for WHAT SECONDS CMD…
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { log "$what did not come up in ${secs}s"; return 1; }
    sleep 0.3
  done
}

stop_all() {
  [ -d "$STATE/pids" ] || return 0
  local f pid
  for f in "$STATE"/pids/*; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
  done
  sleep 1
  local pids=()
  for f in "$STATE"/pids/*; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -KILL "$pid" 2>/dev/null || true
    pids+=("$pid")
    rm -f "$f"
  done
  # "down" means gone: wait (5 s at most) until each has exited (a zombie has, it awaits its reaper).
  local i
  for i in $(seq 50); do
    for pid in "${pids[@]}"; do
      if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        sleep 0.1
        continue 2
      fi
    done
    break
  done
}

# ---------------------------------------------------------------------------- network
veth_to_hub() { # veth_to_hub NETNS SHORTNAME IP
  local ns=$1 short=$2 addr=$3
  ip link add "h$NETNS-$short" type veth peer name "e$NETNS-$short"
  ip link set "h$NETNS-$short" netns "$HUB"
  ip link set "e$NETNS-$short" netns "$ns"
  nsx "$HUB" ip link set "h$NETNS-$short" master br0 up
  nsx "$ns" ip link set "e$NETNS-$short" name eth0
  nsx "$ns" ip addr add "$addr/24" dev eth0
  nsx "$ns" ip link set eth0 up
  nsx "$ns" ip link set lo up
}

network_up() {
  ip netns add "$HUB"
  nsx "$HUB" ip link add br0 type bridge
  nsx "$HUB" ip link set br0 up
  nsx "$HUB" ip link set lo up
  ip netns add "$CP"
  veth_to_hub "$CP" cp "$CP_IP"
  local n
  for n in "${NODES[@]}"; do
    ip netns add "$NETNS-node-$n"
    veth_to_hub "$NETNS-node-$n" "$n" "${NODE_IP[$n]}"
    nsx "$NETNS-node-$n" sysctl -qw net.ipv4.ip_forward=1
    # NMI listens on 127.0.0.1: DNAT from PREROUTING to loopback needs route_localnet.
    nsx "$NETNS-node-$n" sysctl -qw net.ipv4.conf.all.route_localnet=1
    # Pods reach the control plane (Azurite) through their node, as through a CNI's SNAT.
    nsx "$NETNS-node-$n" iptables -t nat -A POSTROUTING -s "10.244.${NODE_NET[$n]}.0/24" -o eth0 -j MASQUERADE
  done
  real_node_network
}

# The real node's namespace (scripts/node.sh runs kubelet and containerd in it): wired like the
# others, its pods' range masqueraded towards the hub, and the `kubernetes` Service's ClusterIP
# DNATed to the apiserver (what kube-proxy does; pods in the chart reach the API that way).
real_node_network() {
  local ns=$NETNS-node-$REAL_NODE
  ip netns add "$ns"
  veth_to_hub "$ns" "$REAL_NODE" "$REAL_NODE_IP"
  nsx "$ns" sysctl -qw net.ipv4.ip_forward=1
  nsx "$ns" sysctl -qw net.ipv4.conf.all.route_localnet=1
  nsx "$ns" iptables -t nat -A POSTROUTING -s "$REAL_NODE_POD_CIDR" ! -d "$REAL_NODE_POD_CIDR" -o eth0 -j MASQUERADE
  # A route for the ClusterIP, so that the node's own processes (NMI on the host network) get as
  # far as the OUTPUT chain's DNAT.
  nsx "$ns" ip route add "$KUBERNETES_SERVICE_IP/32" dev eth0
  # The apiserver calls the chart's admission webhook (MIC's pods; README "Readiness"). With no
  # kube-proxy here, it dials the Service's endpoints (--enable-aggregator-routing, as a control
  # plane without a route to ClusterIPs does), through the node.
  nsx "$CP" ip route add "$REAL_NODE_POD_CIDR" via "$REAL_NODE_IP"
  local chain
  for chain in PREROUTING OUTPUT; do
    nsx "$ns" iptables -t nat -A "$chain" -d "$KUBERNETES_SERVICE_IP/32" -p tcp --dport 443 \
      -j DNAT --to-destination "$CP_IP:$APISERVER_PORT"
  done
}

network_down() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NETNS-" || true); do
    # Processes still inside keep a namespace alive: end them first.
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
  done
}

# ---------------------------------------------------------------------------- certificates
pki() {
  local d="$STATE/pki"
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
      -days 30 -subj "/CN=pod-identity sandbox CA" >/dev/null 2>&1
    issue() { # issue NAME SUBJECT SAN EKU
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" >/dev/null 2>&1
      printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 30 \
        -extfile "$1.ext" >/dev/null 2>&1
    }
    issue apiserver "/CN=kube-apiserver" "IP:$CP_IP,IP:127.0.0.1,IP:$KUBERNETES_SERVICE_IP,DNS:localhost,DNS:kubernetes.default.svc" serverAuth
    # The real node's kubelet: a node identity, for the Node authorizer.
    issue "node-$REAL_NODE" "/O=system:nodes/CN=system:node:$REAL_NODE" "DNS:$REAL_NODE" clientAuth
    issue admin "/O=system:masters/CN=sandbox-admin" "DNS:sandbox-admin" clientAuth
    issue azurite "/CN=azurite" "IP:$CP_IP,IP:127.0.0.1,DNS:localhost" serverAuth
    # RSA, as AKS's service-account keys are: tokens are RS256, which Entra verifies federated
    # assertions with (README "Federated mode").
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

kubeconfig() { # kubeconfig SERVER_IP FILE [CLIENT_CERT_NAME]
  local user=${3:-admin}
  cat >"$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster:
    server: https://$1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$STATE/pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$STATE/pki/$user.crt")
    client-key-data: $(base64 -w0 "$STATE/pki/$user.key")
contexts:
- name: sandbox
  context: {cluster: sandbox, user: admin}
current-context: sandbox
EOF
}

# ---------------------------------------------------------------------------- services
world() {
  cat >"$STATE/world.yaml" <<EOF
# The sandbox's Azure: one subscription, a scale set of two instances and a VM.
tenant_id: $TENANT
location: westeurope
allow_non_loopback: true
subscriptions:
  - id: $SUB
    resource_groups: [mc-sandbox, myresourcegroup]
vms:
  - {name: vm-c, resource_group: mc-sandbox, node: c-0, system_assigned: true, imds: "$CP_IP:${NODE_IMDS[c-0]}"}
  - {name: vm-k, resource_group: mc-sandbox, node: $REAL_NODE, system_assigned: true, imds: "$CP_IP:$REAL_NODE_IMDS"}
vmss:
  - name: ss-a
    resource_group: mc-sandbox
    system_assigned: true
    instances:
      - {name: ss-a_0, node: a-0, imds: "$CP_IP:${NODE_IMDS[a-0]}"}
      - {name: ss-a_1, node: a-1, imds: "$CP_IP:${NODE_IMDS[a-1]}"}
service_principals:
  # The cluster's service principal, as in the seed: MIC acts with it.
  - {name: aks-cluster-sp, client_id: $MIC_CLIENT_ID, client_secret: sandbox-cluster-secret}
oidc_issuers:
  # The sandbox cluster's service-account issuer: Entra fetches its keys from its discovery.
  - {issuer: "$SA_ISSUER", ca_file: "$STATE/pki/ca.crt"}
arm: {listen: "$CP_IP:$ARM_PORT"}
entra: {listen: "$CP_IP:$ENTRA_PORT"}
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
tls: {enabled: true, dir: "$STATE/emulator-tls"}
EOF
}

kctl() { nsx "$CP" "$KUBECTL" --kubeconfig "$STATE/kubeconfig" "$@"; }

up() {
  need_root
  if [ -f "$STATE/up" ] && alive kube-apiserver && { alive mic || [ -f "$STATE/mic-from-chart" ]; }; then
    log "already up"
    usage_hint
    return 0
  fi
  down quiet
  mkdir -p "$STATE"
  local t0=$SECONDS
  build
  load_env
  log "creating network namespaces..."
  network_up
  pki
  kubeconfig 127.0.0.1 "$STATE/kubeconfig"
  kubeconfig "$CP_IP" "$STATE/kubeconfig-nodes"
  kubeconfig "$CP_IP" "$STATE/kubeconfig-$REAL_NODE" "node-$REAL_NODE"

  log "starting etcd and kube-apiserver..."
  start etcd "$CP" "$ETCD" --data-dir="$STATE/etcd" --listen-client-urls=http://127.0.0.1:$ETCD_PORT \
    --advertise-client-urls=http://127.0.0.1:$ETCD_PORT --listen-peer-urls=http://127.0.0.1:$((ETCD_PORT + 1)) \
    --listen-metrics-urls= --unsafe-no-fsync=true --log-level=warn
  wait_for etcd 30 nsx "$CP" curl -sf http://127.0.0.1:$ETCD_PORT/health
  start kube-apiserver "$CP" "$KUBE_APISERVER" --etcd-servers=http://127.0.0.1:$ETCD_PORT --secure-port=$APISERVER_PORT \
    --bind-address=0.0.0.0 --advertise-address="$CP_IP" \
    --tls-cert-file="$STATE/pki/apiserver.crt" --tls-private-key-file="$STATE/pki/apiserver.key" \
    --client-ca-file="$STATE/pki/ca.crt" --authorization-mode=Node,RBAC \
    --service-account-issuer="$SA_ISSUER" --service-account-key-file="$STATE/pki/sa.pub" \
    --service-account-signing-key-file="$STATE/pki/sa.key" --service-cluster-ip-range=10.96.0.0/24 \
    --allow-privileged=true --cert-dir="$STATE/pki/apiserver-certs" \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="$STATE/pki/admin.crt" --kubelet-client-key="$STATE/pki/admin.key" \
    --enable-aggregator-routing=true
  wait_for kube-apiserver 90 nsx "$CP" curl -sf --cacert "$STATE/pki/ca.crt" https://127.0.0.1:$APISERVER_PORT/readyz
  kctl apply -f "$ROOT/deploy/crds/aadpodidentity.k8s.io.yaml" >/dev/null
  # Federated mode: the emulator's Entra reads the issuer's discovery anonymously, as Entra reads
  # AKS's public issuer; this built-in role allows nothing but those two documents.
  kctl create clusterrolebinding sandbox:issuer-discovery --clusterrole=system:service-account-issuer-discovery \
    --group=system:unauthenticated --dry-run=client -o yaml | kctl apply -f - >/dev/null
  kctl wait --for=condition=Established --timeout=60s crd --all >/dev/null
  # The controllers (ServiceAccounts, kube-root-ca.crt, DaemonSets, Deployments) and the scheduler
  # the real node's pods need. No node lifecycle controller: the process nodes send no heartbeats.
  start kube-controller-manager "$CP" "$KUBE_CONTROLLER_MANAGER" --kubeconfig "$STATE/kubeconfig" \
    --controllers='*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle' --leader-elect=false \
    --service-account-private-key-file="$STATE/pki/sa.key" --root-ca-file="$STATE/pki/ca.crt" \
    --use-service-account-credentials=false --bind-address=127.0.0.1 --secure-port=10257
  start kube-scheduler "$CP" "$KUBE_SCHEDULER" --kubeconfig "$STATE/kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=10259
  wait_for "the default ServiceAccount" 60 kctl get serviceaccount default

  log "starting the Azure emulator and Azurite..."
  world
  start azure-emulator "$CP" "$BIN/azure-emulator" --config "$STATE/world.yaml"
  wait_for azure-emulator 30 test -s "$STATE/emulator-tls/ca.pem"
  wait_for azure-emulator 30 nsx "$CP" curl -sf "http://127.0.0.1:$ADMIN_PORT/admin/nodes"
  mkdir -p "$STATE/azurite"
  start azurite "$CP" "$AZURITE_BIN" --blobHost "$CP_IP" --blobPort "$AZURITE_PORT" --location "$STATE/azurite" \
    --silent --skipApiVersionCheck --disableTelemetry --oauth basic --loose \
    --cert "$STATE/pki/azurite.crt" --key "$STATE/pki/azurite.key"
  wait_for azurite 60 nsx "$CP" curl -s --cacert "$STATE/pki/ca.crt" -o /dev/null "https://$CP_IP:$AZURITE_PORT/devstoreaccount1?comp=list"
  seed_blob

  log "registering nodes..."
  local n
  for n in "${NODES[@]}"; do
    kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels: {kubernetes.io/hostname: $n, kubernetes.io/os: linux}
spec:
  providerID: ${NODE_PROVIDER[$n]}
EOF
    kctl patch node "$n" --subresource=status --type=merge -p \
      "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"${NODE_IP[$n]}\"}],\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"Sandbox\",\"message\":\"a network namespace\"}]}}" >/dev/null
  done

  log "starting MIC..."
  start_mic

  log "starting one NMI per node..."
  for n in "${NODES[@]}"; do
    start "nmi-$n" "$NETNS-node-$n" "$BIN/nmi" --node "$n" --kubeconfig "$STATE/kubeconfig-nodes" \
      --metadata-ip "$CP_IP" --metadata-port "${NODE_IMDS[$n]}" \
      --entra-endpoint "https://$CP_IP:$ENTRA_PORT/" --entra-ca-file "$STATE/emulator-tls/ca.pem" \
      --federated-tenant-id "$TENANT"
  done
  for n in "${NODES[@]}"; do
    wait_for "nmi-$n" 60 nsx "$NETNS-node-$n" curl -sf http://127.0.0.1:$NMI_PROBE_PORT/readyz
  done

  log "starting the real node $REAL_NODE (kubelet, containerd)..."
  "$ROOT/scripts/node.sh" up || die "the real node did not start (logs: $STATE/logs/kubelet.log, containerd.log)"
  touch "$STATE/up"
  log "up in $((SECONDS - t0))s"
  usage_hint
}

# MIC as a process in pi-cp, candidate for the Lease default/aad-pod-identity-mic. The chart's MIC
# (scripts/chart.sh) takes over that Lease: `mic-process stop` before, `mic-process start` after.
start_mic() {
  cat >"$STATE/azure.json" <<EOF
{"cloud": "AzurePublicCloud", "tenantId": "$TENANT", "subscriptionId": "$SUB", "resourceGroup": "mc-sandbox",
 "aadClientId": "$MIC_CLIENT_ID", "aadClientSecret": "sandbox-cluster-secret", "useManagedIdentityExtension": false, "vmType": "vmss"}
EOF
  start mic "$CP" env MIC_POD_NAMESPACE=default "$BIN/mic" --kubeconfig "$STATE/kubeconfig" \
    --cloudconfig "$STATE/azure.json" --arm-endpoint "https://$CP_IP:$ARM_PORT" \
    --aad-endpoint "https://$CP_IP:$ENTRA_PORT" --ca-file "$STATE/emulator-tls/ca.pem" \
    --leader-election-instance mic-0 --arm-poll-interval 500ms
  wait_for mic 60 nsx "$CP" curl -sf http://127.0.0.1:$MIC_PROBE_PORT/readyz
  rm -f "$STATE/mic-from-chart"
}

stop_mic() {
  [ -f "$STATE/pids/mic" ] || return 0
  local pid
  pid=$(cat "$STATE/pids/mic")
  kill -TERM "$pid" 2>/dev/null || true
  wait_for "MIC to stop" 20 bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$STATE/pids/mic"
  touch "$STATE/mic-from-chart"
}

seed_blob() {
  # The blob the demo's pod reads, written with the storage account key (Azurite's well-known one).
  nsx "$CP" env REQUESTS_CA_BUNDLE="$STATE/pki/ca.crt" "$PY" - <<EOF
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
svc = BlobServiceClient("https://$CP_IP:$AZURITE_PORT/devstoreaccount1", credential={"account_name": "devstoreaccount1", "account_key": key})
c = svc.get_container_client("demo")
if not c.exists():
    c.create_container()
c.upload_blob("hello.txt", b"Hello from Azurite, read with this pod's own identity!\n", overwrite=True)
EOF
}

usage_hint() {
  cat >&2 <<EOF

The sandbox is up. Use kubectl through the wrapper:
  scripts/sandbox.sh kubectl get nodes,azureidentities,azureassignedidentities -A
Run your own code in a pod (it can call 169.254.169.254 like any pod on AKS):
  scripts/sandbox.sh pod run --namespace default --name my-pod --node a-0 --label aadpodidbinding=<selector> -- \\
      $CACHE/venv/bin/python my_script.py
The real node $REAL_NODE (kubelet + containerd): install the chart there and run the walkthrough's app:
  scripts/chart.sh install && scripts/chart.sh app
Logs: $STATE/logs/   Stop it all: make down
EOF
}

down() {
  local quiet=${1:-}
  # The real node first: its containers are stopped through containerd, which must still run.
  "$ROOT/scripts/node.sh" down
  stop_all
  network_down
  rm -rf "$STATE"
  [ -n "$quiet" ] || log "down: no sandbox process, namespace or state left"
}

status() {
  local f
  for f in "$STATE"/pids/*; do
    [ -e "$f" ] || { log "nothing runs"; return 0; }
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "running  $(basename "$f")"; else echo "stopped  $(basename "$f")"; fi
  done
  ip netns list | grep "^$NETNS-" || true
}

# ---------------------------------------------------------------------------- pods
# pod run [--namespace NS] --name NAME --node NODE [--label K=V]… [--service-account SA] [--keep] -- CMD…
# --keep: the Pod object stays after CMD ends (for `kubectl describe pod`); its network goes.
pod_run() {
  need_root
  load_env
  local ns=default name="" node="" labels=() cmd=() sa=default keep=no
  while [ $# -gt 0 ]; do
    case $1 in
      --keep) keep=yes; shift ;;
      --namespace) ns=$2; shift 2 ;;
      --name) name=$2; shift 2 ;;
      --node) node=$2; shift 2 ;;
      --label) labels+=("$2"); shift 2 ;;
      --service-account) sa=$2; shift 2 ;;
      --) shift; cmd=("$@"); break ;;
      *) die "pod run: unknown argument $1" ;;
    esac
  done
  { [ -n "$name" ] && [ -n "$node" ] && [ ${#cmd[@]} -gt 0 ]; } || die "usage: pod run [--namespace NS] --name NAME --node NODE [--label K=V]... -- CMD..."
  [ -n "${NODE_NET[$node]:-}" ] || die "unknown node $node (nodes: ${NODES[*]})"
  local label_json="" kv
  for kv in "${labels[@]}"; do label_json+="\"${kv%%=*}\": \"${kv#*=}\","; done
  label_json="{${label_json%,}}"
  kctl get namespace "$ns" >/dev/null 2>&1 || kctl create namespace "$ns" >/dev/null
  # The ServiceAccount admission plugin refuses a pod until its namespace's `default` exists.
  wait_for "ServiceAccount $ns/default" 30 kctl get serviceaccount -n "$ns" default || die "no ServiceAccount default in $ns"

  # An address on the node's pod network, never reused while a pod holds it.
  mkdir -p "$STATE/ipam"
  local i ip=""
  for i in $(seq 10 250); do
    if mkdir "$STATE/ipam/$node-$i" 2>/dev/null; then ip="10.244.${NODE_NET[$node]}.$i"; break; fi
  done
  [ -n "$ip" ] || die "no free pod address on $node"
  local pns="$NETNS-p-${node}-$i" vh="v$NETNS-${node}-$i"
  # The EXIT trap runs after this function has returned: it gets its values baked in.
  # shellcheck disable=SC2064
  trap "$(declare -f nsx kctl); \
    [ '$keep' = yes ] || kctl delete pod -n '$ns' '$name' --grace-period=0 --force --wait=false >/dev/null 2>&1 || true; \
    nsx '$NETNS-node-$node' ip link del '$vh' 2>/dev/null || true; \
    ip netns delete '$pns' 2>/dev/null || true; \
    rmdir '$STATE/ipam/$node-$i' 2>/dev/null || true" EXIT

  kctl apply -f - >/dev/null <<EOF
{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "$name", "namespace": "$ns", "labels": $label_json},
 "spec": {"nodeName": "$node", "serviceAccountName": "$sa", "containers": [{"name": "main", "image": "sandbox/process"}]}}
EOF
  ip netns add "$pns"
  ip link add "$vh" type veth peer name "p$NETNS-$node-$i"
  ip link set "$vh" netns "$NETNS-node-$node"
  ip link set "p$NETNS-$node-$i" netns "$pns"
  nsx "$pns" ip link set "p$NETNS-$node-$i" name eth0
  nsx "$pns" ip link set lo up
  nsx "$pns" ip addr add "$ip/32" dev eth0
  nsx "$pns" ip link set eth0 up
  nsx "$pns" ip route add "10.244.${NODE_NET[$node]}.1" dev eth0
  nsx "$pns" ip route add default via "10.244.${NODE_NET[$node]}.1"
  nsx "$NETNS-node-$node" ip addr add "10.244.${NODE_NET[$node]}.1/32" dev "$vh" 2>/dev/null || true
  nsx "$NETNS-node-$node" ip link set "$vh" up
  nsx "$NETNS-node-$node" sysctl -qw "net.ipv4.conf.$vh.route_localnet=1"
  nsx "$NETNS-node-$node" ip route add "$ip/32" dev "$vh"
  kctl patch pod -n "$ns" "$name" --subresource=status --type=merge -p \
    "{\"status\":{\"phase\":\"Running\",\"podIP\":\"$ip\",\"podIPs\":[{\"ip\":\"$ip\"}],\"hostIP\":\"${NODE_IP[$node]}\"}}" >/dev/null

  local rc=0
  nsx "$pns" env REQUESTS_CA_BUNDLE="$STATE/pki/ca.crt" SSL_CERT_FILE="$STATE/pki/ca.crt" \
    STORAGE_ACCOUNT_URL="https://$CP_IP:$AZURITE_PORT/devstoreaccount1" POD_NAME="$name" POD_NAMESPACE="$ns" \
    "${cmd[@]}" || rc=$?
  return $rc
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  kubectl) shift; load_env; kctl "$@" ;;
  pod) shift; [ "${1:-}" = run ] || die "usage: pod run …"; shift; pod_run "$@" ;;
  demo) shift; exec "$ROOT/scripts/demo.sh" "$@" ;;
  mic-process) load_env
    case ${2:-} in start) alive mic || start_mic ;; stop) stop_mic ;; *) die "usage: mic-process start|stop" ;; esac ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
