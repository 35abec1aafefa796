#!/usr/bin/env bash
# The sandbox's real node: kubelet + containerd + runc + a CNI bridge, all in the network namespace
# $NETNS-node-$REAL_NODE that scripts/sandbox.sh made (and wired to the hub). Called by sandbox.sh:
#
#   scripts/node.sh check   fail, saying why, when this machine cannot run it (cgroups, kernel
#                           modules, binaries)
#   scripts/node.sh up      start containerd and kubelet, import target/images/*.tar, wait for Ready
#   scripts/node.sh down    stop every container, then kubelet and containerd; unmount, remove the
#                           pods' network namespaces, cgroups and CNI state the node made
#   scripts/node.sh reboot  what a reboot does to the node: every process and container stops, and
#                           what lives in memory is gone (mounts, NMI's iptables rules, conntrack,
#                           the node's tmpfs $ND/run); then containerd and kubelet start again with
#                           the configuration on disk, and the kubelet restarts the node's pods
#
# Facts this rests on (checked on this machine kind):
#   - processes enter the node's namespace with `nsenter --net`, not `ip netns exec`, which remounts
#     /sys and hides the cgroup mounts from kubelet;
#   - cgroup v1: kubelet's cgroupRoot is a cgroup of our own, nested in the memory cgroup this
#     session runs in, and made in every hierarchy (kubelet refuses a root missing from one);
#     cgroupsPerQOS off, so every pod's cgroup is <cgroupRoot>/<container id>;
#   - restrict_oom_score_adj: this machine gives no CAP_SYS_RESOURCE, and runc fails otherwise;
#   - no image can be pulled: the pod sandbox (pause) and the chart's images are imported;
#   - the node's CNI bin directory is its own ($ND/cni-bin: links to Debian's plugins), so that the
#     chart's NMI can install its plugin there without touching the machine's /usr/lib/cni; and
#     $ND/run stands for the node's /run (a tmpfs: `reboot` empties it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${POD_IDENTITY_SANDBOX:-/tmp/pod-identity-sandbox}
# shellcheck source=scripts/sandbox-layout.sh
. "$ROOT/scripts/sandbox-layout.sh"
NS=$NETNS-node-$REAL_NODE
ND=$STATE/node-$REAL_NODE
SOCK=$ND/containerd.sock
IMAGES=${IMAGES_DIR:-$ROOT/target/images}
TAG=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/deploy/charts/pod-identity/Chart.yaml")
PAUSE_IMAGE=docker.io/pod-identity/pause:$TAG
CNI_NET=$NETNS-$REAL_NODE
CGROUP_CONTROLLERS=(cpu cpuacct cpuset memory pids blkio devices freezer hugetlb net_cls net_prio perf_event systemd)

log() { printf '[node] %s\n' "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
in_node() { nsenter --net="/run/netns/$NS" "$@"; }
ctr_k8s() { ctr -a "$SOCK" -n k8s.io "$@"; }

# ---------------------------------------------------------------------------- prerequisites
check() {
  local c
  for c in containerd containerd-shim-runc-v2 runc ctr nsenter iptables ip findmnt; do
    command -v "$c" >/dev/null 2>&1 || die "$c is missing: make deps installs containerd, runc, util-linux, iptables"
  done
  for c in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$c" ] || die "the CNI plugin /usr/lib/cni/$c is missing: make deps installs containernetworking-plugins"
  done
  # cgroup v1 with the controllers kubelet and runc need, or v2.
  if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
    for c in cpu memory pids cpuset; do
      [ -d "/sys/fs/cgroup/$c" ] || die "cgroup v1 controller '$c' is not mounted at /sys/fs/cgroup/$c; kubelet cannot run pods"
    done
  else
    die "this machine has cgroup v2; the real node is written for cgroup v1 (the machine kind it was checked on)"
  fi
  # overlayfs (containerd's snapshotter), bridge and veth (CNI), nf_tables/NAT (NMI, the bridge).
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || die "the kernel has no overlay filesystem (module overlay); containerd cannot unpack images"
  [ -e "/run/netns/$NS" ] || die "network namespace $NS is missing (scripts/sandbox.sh up makes it)"
  { in_node ip link add pi-probe type bridge && in_node ip link del pi-probe; } 2>/dev/null ||
    die "the kernel cannot make a bridge in $NS (module bridge); the CNI bridge cannot be made"
  { in_node ip link add pi-probe type veth peer name pi-probe-p && in_node ip link del pi-probe; } 2>/dev/null ||
    die "the kernel cannot make veth pairs (module veth); CNI cannot connect pods"
  local img
  for img in pause mic nmi; do
    [ -f "$IMAGES/$img.tar" ] || die "$IMAGES/$img.tar is missing: make images builds it"
  done
}

# ---------------------------------------------------------------------------- cgroups
# The cgroup this session's processes are in, per hierarchy; the node's cgroup root is one path
# that exists in all of them: below the deepest one (the memory hierarchy's, here).
session_cgroup() {
  awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' /proc/self/cgroup
}

cgroup_up() {
  local base root c dir
  base=$(session_cgroup)
  root="${base%/}/pod-identity-$NETNS-$REAL_NODE"
  : >"$ND/cgroups-made"
  for c in "${CGROUP_CONTROLLERS[@]}"; do
    [ -d "/sys/fs/cgroup/$c" ] || continue
    # Every level we create is recorded, so that down removes exactly those.
    local path="" part
    IFS=/ read -ra parts <<<"${root#/}"
    for part in "${parts[@]}"; do
      path="$path/$part"
      dir="/sys/fs/cgroup/$c$path"
      if [ ! -d "$dir" ]; then
        mkdir "$dir"
        echo "$dir" >>"$ND/cgroups-made"
      fi
    done
    # cpuset: a new cgroup has no CPUs or memory nodes until given its parent's.
    if [ "$c" = cpuset ]; then
      path=""
      for part in "${parts[@]}"; do
        path="$path/$part"
        dir="/sys/fs/cgroup/cpuset$path"
        [ -n "$(cat "$dir/cpuset.cpus")" ] || cat "$(dirname "$dir")/cpuset.cpus" >"$dir/cpuset.cpus"
        [ -n "$(cat "$dir/cpuset.mems")" ] || cat "$(dirname "$dir")/cpuset.mems" >"$dir/cpuset.mems"
      done
    fi
  done
  echo "$root" >"$ND/cgroup-root"
}

cgroup_down() {
  [ -f "$ND/cgroup-root" ] || return 0
  local root c
  root=$(cat "$ND/cgroup-root")
  for c in "${CGROUP_CONTROLLERS[@]}"; do
    [ -d "/sys/fs/cgroup/$c$root" ] || continue
    # The pods' cgroups below the root, deepest first (a cgroup is removed with rmdir once empty).
    find "/sys/fs/cgroup/$c$root" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  if [ -f "$ND/cgroups-made" ]; then
    tac "$ND/cgroups-made" | while read -r dir; do rmdir "$dir" 2>/dev/null || log "cgroup $dir could not be removed"; done
  fi
}

# ---------------------------------------------------------------------------- configuration
configure() {
  mkdir -p "$ND"/{containerd,cni,cni-bin,kubelet,pods-logs,runc,cni-ipam,certs,run}
  local plugin
  for plugin in /usr/lib/cni/*; do ln -sfn "$plugin" "$ND/cni-bin/$(basename "$plugin")"; done
  cat >"$ND/containerd.toml" <<EOF
version = 2
root = "$ND/containerd/root"
state = "$ND/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.opt"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$ND/containerd.ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$ND/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$ND/cni-bin"
    conf_dir = "$ND/cni"
    max_conf_num = 1
EOF
  # The pods' network: a bridge in the node's namespace, the node its gateway. No ipMasq here: the
  # sandbox masquerades the range towards eth0 itself (sandbox.sh, as for the process nodes).
  cat >"$ND/cni/10-$CNI_NET.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "$CNI_NET", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$ND/cni-ipam", "ranges": [[{"subnet": "$REAL_NODE_POD_CIDR"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}
]}
EOF
  cat >"$ND/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 on this machine kind: 1.35 refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
cgroupRoot: $(cat "$ND/cgroup-root")
enforceNodeAllocatable: []
failSwapOn: false
providerID: "$REAL_NODE_PROVIDER"
podLogsDir: $ND/pods-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
address: $REAL_NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# No image is ever pulled, so nothing is garbage-collected either.
imageGCHighThresholdPercent: 100
evictionHard: {}
serializeImagePulls: false
resolvConf: /etc/resolv.conf
containerLogMaxSize: 1Mi
EOF
}

# ---------------------------------------------------------------------------- up / down
start_bg() { # start_bg NAME CMD… : in the node's namespace, pid in $STATE/pids/node-NAME
  local name=$1; shift
  mkdir -p "$STATE/logs" "$STATE/pids"
  nohup nsenter --net="/run/netns/$NS" "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$ND/$name.pid"
}

wait_until() { # wait_until WHAT SECONDS CMD…
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { log "$what did not happen in ${secs}s (logs: $STATE/logs/)"; return 1; }
    sleep 0.5
  done
}

up() {
  check
  mkdir -p "$ND"
  cgroup_up
  configure
  in_node sysctl -qw net.ipv4.ip_forward=1
  # The VM's IMDS, as pods reach it on Azure when nothing intercepts 169.254.169.254 (the emulator's
  # IMDS of vm-k). NMI's chain, inserted first in PREROUTING, takes the traffic before this rule.
  local imds=(-d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination "$CP_IP:$REAL_NODE_IMDS")
  in_node iptables -w -t nat -C PREROUTING "${imds[@]}" 2>/dev/null || in_node iptables -w -t nat -A PREROUTING "${imds[@]}"
  log "starting containerd in $NS..."
  start_bg containerd containerd --config "$ND/containerd.toml"
  wait_until "containerd's socket" 30 ctr -a "$SOCK" version
  local img
  for img in pause mic nmi kubectl azure-emulator app; do
    [ -f "$IMAGES/$img.tar" ] || continue
    ctr_k8s images import --no-unpack=false "$IMAGES/$img.tar" >/dev/null || die "ctr could not import $IMAGES/$img.tar"
  done
  log "images: $(ctr_k8s images ls -q | grep -v '^sha256' | tr '\n' ' ')"
  start_kubelet
}

start_kubelet() {
  log "starting kubelet as node $REAL_NODE..."
  start_bg kubelet "$KUBELET" --config "$ND/kubelet.yaml" --kubeconfig "$STATE/kubeconfig-$REAL_NODE" \
    --container-runtime-endpoint "unix://$SOCK" --hostname-override "$REAL_NODE" --node-ip "$REAL_NODE_IP" \
    --root-dir "$ND/kubelet" --cert-dir "$ND/certs" --v=1
  wait_until "node $REAL_NODE Ready" 120 node_ready
  # The NodeTaint admission plugin gives every new Node node.kubernetes.io/not-ready:NoSchedule, and
  # the node lifecycle controller lifts it once the node is Ready. The sandbox runs no such
  # controller (its process nodes send no heartbeats, it would evict their pods): lift it here.
  ip netns exec "$CP" "$KUBECTL" --kubeconfig "$STATE/kubeconfig" taint nodes "$REAL_NODE" \
    node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  log "node $REAL_NODE is Ready"
}

node_ready() {
  ip netns exec "$CP" "$KUBECTL" --kubeconfig "$STATE/kubeconfig" get node "$REAL_NODE" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}

stop_pid() { # stop_pid FILE: TERM, then KILL after 10 s; waits until gone
  local f=$1 pid _
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

# Every process and container of the node stops, and its mounts go: what a reboot and `down` share.
stop_all() {
  stop_pid "$ND/kubelet.pid"
  local netnses=() id path
  if [ -S "$SOCK" ] && ctr -a "$SOCK" version >/dev/null 2>&1; then
    # Each container: its pod's network namespace (CRI bind-mounts it under /run/netns), then the
    # task killed and deleted (runc removes its cgroup), then the container.
    for id in $(ctr_k8s containers ls -q 2>/dev/null); do
      path=$(ctr_k8s containers info "$id" 2>/dev/null | sed -n 's|.*"path": "\(/var/run/netns/cni-[^"]*\)".*|\1|p' | head -n 1)
      [ -n "$path" ] && netnses+=("$path")
      ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      # CNI's cached results of a pod sandbox (its loopback; the bridge's are named after our
      # network, below): no CNI DEL runs for containers stopped this way.
      rm -f "/var/lib/cni/results/cni-loopback-$id-lo"
    done
    sleep 0.5
    for id in $(ctr_k8s containers ls -q 2>/dev/null); do
      ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
      ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid "$ND/containerd.pid"
  # The shims (one per pod) name our socket on their command line; they end with their tasks.
  local pid
  for pid in $(pgrep -f -- "-address $SOCK" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
  for path in "${netnses[@]}"; do
    umount "$path" 2>/dev/null || true
    rm -f "$path"
  done
  # Overlay mounts of containers, tmpfs of secrets and service account tokens, shm of sandboxes.
  findmnt -rn -o TARGET | grep -F "$ND/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null || true
}

down() {
  [ -d "$ND" ] || return 0
  stop_all
  cgroup_down
}

# A reboot: everything stops, and what lives in memory goes. The node's own netfilter rules are
# kept (the node's boot, kube-proxy and the CNI put theirs back before any pod runs); NMI's go, and
# come back only when NMI runs again. Then the node starts with the configuration on disk (the CNI
# configuration as NMI left it, plugin chained), and the kubelet restarts the pods bound to it.
reboot() {
  [ -f "$ND/containerd.toml" ] || die "the node is not up"
  log "rebooting $REAL_NODE: stopping every container, kubelet and containerd..."
  stop_all
  while in_node iptables -w -t nat -D PREROUTING -j aad-metadata 2>/dev/null; do :; done
  in_node iptables -w -t nat -F aad-metadata 2>/dev/null || true
  in_node iptables -w -t nat -X aad-metadata 2>/dev/null || true
  if command -v conntrack >/dev/null 2>&1; then in_node conntrack -F >/dev/null 2>&1 || true; fi
  rm -rf "$ND/run" && mkdir -p "$ND/run"
  log "starting containerd and kubelet again..."
  start_bg containerd containerd --config "$ND/containerd.toml"
  wait_until "containerd's socket" 30 ctr -a "$SOCK" version
  start_kubelet
}

case ${1:-} in
  check) check ;;
  up) # shellcheck disable=SC1091
    . "$STATE/env"; up ;;
  down) down ;;
  reboot) # shellcheck disable=SC1091
    . "$STATE/env"; reboot ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
