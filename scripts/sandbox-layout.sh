# shellcheck shell=bash
# The sandbox's addresses, ports and Azure names, in one place: sourced by sandbox.sh (which lays
# the sandbox out) and demo.sh (which talks to it). Variables only; nothing runs here.
# shellcheck disable=SC2034  # each user reads its own part

# The network namespaces' prefix: pi-hub, pi-cp, pi-node-<node>, pi-p-<pod>. The chart's end-to-end
# test (crates/testbed/tests/chart_e2e.rs) lays out a sandbox of its own under another prefix, beside a user's `make up`.
NETNS=${POD_IDENTITY_NETNS:-pi}
HUB=$NETNS-hub
CP=$NETNS-cp

SUB=0b1f6471-1bf0-4dda-aec3-cb9272f09590
TENANT=72f988bf-86f1-41af-91ab-2d7cd011db47
MIC_CLIENT_ID=5c8f2a10-0000-4000-8000-00000000000a

# pi-cp: etcd, kube-apiserver, the Azure emulator, Azurite, MIC.
CP_IP=10.250.0.2
ETCD_PORT=2379
APISERVER_PORT=6443
ARM_PORT=8443
ENTRA_PORT=8444
ADMIN_PORT=8090        # the emulator's admin API, on pi-cp's loopback
AZURITE_PORT=10000
MIC_PROBE_PORT=8080
# The service-account issuer (federated mode): reachable by the emulator's Entra on pi-cp.
SA_ISSUER=https://$CP_IP:$APISERVER_PORT

# The nodes: the two instances of scale set ss-a and the VM vm-c, each with its NMI.
NODES=(a-0 a-1 c-0)
declare -A NODE_IP=([a-0]=10.250.0.11 [a-1]=10.250.0.12 [c-0]=10.250.0.13)
declare -A NODE_NET=([a-0]=1 [a-1]=2 [c-0]=3)       # pods of a node get 10.244.<net>.<n>
declare -A NODE_IMDS=([a-0]=18001 [a-1]=18002 [c-0]=18003)
declare -A NODE_PROVIDER=(
  [a-0]="azure:///subscriptions/$SUB/resourceGroups/mc-sandbox/providers/Microsoft.Compute/virtualMachineScaleSets/ss-a/virtualMachines/0"
  [a-1]="azure:///subscriptions/$SUB/resourceGroups/mc-sandbox/providers/Microsoft.Compute/virtualMachineScaleSets/ss-a/virtualMachines/1"
  [c-0]="azure:///subscriptions/$SUB/resourceGroups/mc-sandbox/providers/Microsoft.Compute/virtualMachines/vm-c"
)
NMI_PROBE_PORT=8085

# The real node (scripts/node.sh): kubelet, containerd, runc and a CNI bridge in pi-node-k-0, the
# VM vm-k of the emulator. Its pods get 10.244.9.0/24 on the bridge cni0, a range routed nowhere
# outside that namespace. The chart's pods run there (helm install, scripts/chart-up.sh).
REAL_NODE=k-0
REAL_NODE_IP=10.250.0.14
REAL_NODE_IMDS=18004
REAL_NODE_POD_CIDR=10.244.9.0/24
REAL_NODE_PROVIDER="azure:///subscriptions/$SUB/resourceGroups/mc-sandbox/providers/Microsoft.Compute/virtualMachines/vm-k"
# The ClusterIP of the `kubernetes` Service: the node DNATs it to the apiserver, as kube-proxy would.
KUBERNETES_SERVICE_IP=10.96.0.1
