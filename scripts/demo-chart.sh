# shellcheck shell=bash
# `make demo`'s steps on the real node k-0 (sourced by scripts/demo.sh, which defines begin/step/k):
# MIC and NMI as the Helm chart installs them, from the images of `make images`, and the
# walkthrough's application as a Deployment in a real container.

begin "Step 8: helm install pod-identity deploy/charts/pod-identity on the real node $REAL_NODE (kubelet + containerd; images from make images)"
# Step 1 deployed with the plain manifests (rendered from this chart, release name pod-identity):
# Helm adopts no object it did not create, so they go first, as when moving a cluster to the chart.
echo "kubectl delete -f deploy/manifests/deployment-rbac.yaml (the plain manifests of step 1; the chart replaces them)"
k delete -f "$ROOT/deploy/manifests/deployment-rbac.yaml" --ignore-not-found --wait=true >/dev/null 2>&1 || true
if out=$("$ROOT/scripts/chart.sh" install 2>&1); then
  echo "$out" | grep -v '^Waiting for'
  k -n pod-identity get daemonset,deployment,pods -o wide
  step 10 "helm install: MIC's Deployment rolled out, its pod holds the Lease" PASS
else
  echo "$out"
  step 10 "helm install" FAIL "$(echo "$out" | tail -n 1)"
fi

begin "Step 9: NMI Ready (its readiness probe: interception rules in place, watches synced)"
nmi=$(k -n pod-identity get pods -l app.kubernetes.io/component=nmi \
  -o 'jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
echo "$nmi"
ip netns exec "$NETNS-node-$REAL_NODE" iptables -t nat -S aad-metadata 2>&1 || true
if echo "$nmi" | grep -q " $REAL_NODE True$"; then
  step 11 "the chart's NMI pod is Ready on $REAL_NODE, on the host network" PASS
else
  step 11 "NMI Ready" FAIL "no Ready NMI pod on $REAL_NODE"
fi

begin "Step 10: the walkthrough's Deployment myapp (label aadpodidbinding: $SELECTOR) in a real container on $REAL_NODE"
if out=$("$ROOT/scripts/chart.sh" app 2>&1); then
  echo "$out" | grep -v '^Waiting for'
  k get azureassignedidentities -A
  step 12 "the Deployment's pod read the blob through the chart's NMI" PASS
else
  echo "$out"
  step 12 "myapp reads the blob" FAIL "$(echo "$out" | tail -n 1)"
fi
