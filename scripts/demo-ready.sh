# shellcheck shell=bash
# `make demo`'s readiness steps on the real node k-0 (sourced by scripts/demo.sh after
# scripts/demo-chart.sh; README "Readiness" and "Upgrading NMI without a gap"):
# - a Deployment whose identity is not yet on the VM, with ARM operations slowed to several
#   seconds: `kubectl rollout status` returns only once NMI's IdentityReady condition is True, and
#   the pod's first ManagedIdentityCredential() call is answered from NMI's cache (no IMDS call);
# - `helm upgrade` of NMI under a pod asking for a token every 50 ms: not one ask fails or retries.

READY_LATENCY_MS=8000
admin() { ip netns exec pi-cp curl -sf -H 'content-type: application/json' "http://127.0.0.1:$ADMIN_PORT$1" "${@:2}"; }
# The completion latency of ARM's identity writes on k-0's VM vm-k.
arm_latency() { admin /admin/arm/latency -X PUT -d "{\"resource\":\"vm-k\",\"latency_ms\":$1}" >/dev/null; }
# IMDS calls of vm-k (k-0's VM) in the emulator's call log after sequence number $1.
imds_calls_of_k() {
  admin "/admin/calls?since=$1" | "$PYTHON" -c '
import json, sys
calls = json.load(sys.stdin)["calls"]
print(sum(1 for c in calls if c["endpoint"] == "imds" and c["target"] == "vm-k"))'
}

begin "Step 11: Ready means it works: Deployment reports, whose identity is not on $REAL_NODE's VM yet (ARM operations of $((READY_LATENCY_MS / 1000)) s)"
latency_set=yes
arm_latency "$READY_LATENCY_MS" || latency_set="no (the emulator refused PUT /admin/arm/latency)"
"$ROOT/scripts/chart.sh" identity reports-identity reports
# The resource the app's SDK will ask for (BlobServiceClient: https://storage.azure.com), so that
# NMI warms exactly that token; the app itself waits: a service's first request arrives once the
# pod is Ready, here through kubectl exec below.
"$ROOT/scripts/chart.sh" deploy reports reports https://storage.azure.com "exec sleep infinity"
t0=$SECONDS
# While MIC's ARM operation runs, NMI says why the pod is not Ready yet.
first=""
for _ in $(seq 1 60); do
  first=$(k get pods -l app=reports -o 'jsonpath={range .items[0].status.conditions[?(@.type=="aadpodidentity.k8s.io/IdentityReady")]}{.status} {.reason}{end}' 2>/dev/null || true)
  [ -n "$first" ] && break
  sleep 0.25
done
echo "IdentityReady while MIC assigns the identity: $first"
echo "kubectl rollout status deployment/reports (the webhook gave the pod the readiness gate: it waits for the identity)"
k rollout status deployment/reports --timeout=180s || true
waited=$((SECONDS - t0))
pod=$(k get pods -l app=reports -o 'jsonpath={.items[0].metadata.name}')
gates=$(k get pod "$pod" -o 'jsonpath={.spec.readinessGates[*].conditionType}')
cond=$(k get pod "$pod" -o 'jsonpath={range .status.conditions[?(@.type=="aadpodidentity.k8s.io/IdentityReady")]}{.status} {.reason}{end}')
echo "pod $pod: readinessGates: $gates; IdentityReady: $cond; rollout status returned after ${waited}s"
explain default "$pod" | grep -i -A1 'IdentityReady' || true
since=$(calls_seq || echo 0)
echo "kubectl exec deploy/reports -- python3 /app/read_blob.py (the app's first ManagedIdentityCredential() call)"
out=$(k exec deploy/reports -- python3 /app/read_blob.py 2>&1 || true)
echo "$out"
imds=$(imds_calls_of_k "$since" 2>/dev/null || echo "?")
echo "IMDS calls of vm-k during the app's first call: $imds (NMI answered from the token it had warmed)"
arm_latency 0
if [ "$latency_set" = yes ] && [ "$first" = "False IdentityNotAssigned" ] && [ "$gates" = "aadpodidentity.k8s.io/IdentityReady" ] && [ "$cond" = "True TokenObtained" ] &&
  [ "$waited" -ge $((READY_LATENCY_MS / 1000)) ] && echo "$out" | grep -q '^BLOB: Hello from Azurite' && [ "$imds" = 0 ]; then
  step 13 "rollout held ${waited}s (IdentityReady False/IdentityNotAssigned, then True); the first token came from NMI's cache" PASS
else
  step 13 "rollout held until the identity works" FAIL "ARM latency set: $latency_set; first condition: '$first'; gates: '$gates'; condition: '$cond'; waited ${waited}s; IMDS calls: $imds; app: $(echo "$out" | tail -n 1)"
fi

begin "Step 12: helm upgrade of NMI under a pod asking for a token every 50 ms (README \"Upgrading NMI without a gap\")"
k -n default create configmap token-poller --from-file=poll_token.py="$ROOT/crates/testbed/tests/poll_token.py" \
  --dry-run=client -o yaml | k apply -f - >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: token-poller, namespace: default, labels: {aadpodidbinding: myapp}}
spec:
  nodeSelector: {kubernetes.io/hostname: $REAL_NODE}
  containers:
    - name: poll
      image: docker.io/pod-identity/app:$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/deploy/charts/pod-identity/Chart.yaml")
      imagePullPolicy: Never
      command: ["python3", "/poll/poll_token.py"]
      volumeMounts: [{name: poll, mountPath: /poll}]
  volumes: [{name: poll, configMap: {name: token-poller}}]
EOF
k wait --for=condition=Ready pod/token-poller --timeout=120s >/dev/null || true
sleep 2
before=$(k logs token-poller 2>/dev/null | grep -c '^ASK' || true)
old_nmi=$(k -n pod-identity get pods -l app.kubernetes.io/component=nmi -o 'jsonpath={.items[*].metadata.name}')
echo "NMI pod before: $old_nmi; the poller has asked $before times"
upgraded=yes
upgrade=$("$ROOT/scripts/chart.sh" upgrade --set nmi.iptUpdateIntervalSec=45 2>&1) || { upgraded=no; echo "$upgrade"; }
new_nmi=$(k -n pod-identity get pods -l app.kubernetes.io/component=nmi -o 'jsonpath={.items[*].metadata.name}')
sleep 2
log=$(k logs token-poller 2>/dev/null || true)
k delete pod token-poller --wait=false >/dev/null 2>&1 || true
asks=$(echo "$log" | grep -c '^ASK' || true)
bad=$(echo "$log" | grep '^ASK' | grep -v ' OK retries=0 ' || true)
echo "NMI pod after: $new_nmi; the poller asked $((asks - before)) times during the upgrade, $asks in all"
if [ -n "$bad" ]; then
  echo "asks that failed or needed a retry, and why:"
  echo "$bad"
  echo "$log" | grep '^RETRY' || true
fi
if [ "$upgraded" = yes ] && [ "$old_nmi" != "$new_nmi" ] && [ -n "$new_nmi" ] && [ "$asks" -gt "$before" ] && [ -z "$bad" ]; then
  step 14 "NMI rolled ($old_nmi → $new_nmi) with 0 failed or retried asks out of $asks" PASS
else
  step 14 "NMI rolled without a gap" FAIL "upgrade succeeded: $upgraded; NMI $old_nmi → $new_nmi; asks $asks; failed or retried: $(echo "$bad" | grep -c ASK || true)"
fi
