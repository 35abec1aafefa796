#!/usr/bin/env bash
# `make demo`: the seed walkthrough on the local sandbox, step by step.
# Each step prints `DEMO STEP <n> PASS <what>` or `DEMO STEP <n> FAIL <what> <why>`; the last line
# is `DEMO PASSED` or `DEMO FAILED`, and the exit status is 0 only when every step passed.
# The sandbox stays up for exploring; `make demo CLEAN=1` tears it down afterwards.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SB="$ROOT/scripts/sandbox.sh"
# shellcheck source=scripts/sandbox-layout.sh
. "$ROOT/scripts/sandbox-layout.sh"
STATE=${POD_IDENTITY_SANDBOX:-/tmp/pod-identity-sandbox}
IDENTITY=myapp-identity
SELECTOR=myapp
RG=myresourcegroup
FAILED=0

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step() { # step N WHAT STATUS [WHY]
  local t=$((SECONDS - STEP_T0))
  if [ "$3" = PASS ]; then
    echo "DEMO STEP $1 PASS $2 (${t}s)"
  else
    echo "DEMO STEP $1 FAIL $2 ${4:-}"
    FAILED=1
  fi
}
begin() { STEP_T0=$SECONDS; say "$*"; }
k() { "$SB" kubectl "$@"; }

finish() {
  if [ "$FAILED" -eq 0 ]; then echo "DEMO PASSED"; else echo "DEMO FAILED"; fi
  if [ -n "${CLEAN:-}" ]; then "$SB" down; fi
  exit "$FAILED"
}

"$SB" up || { echo "DEMO STEP 0 FAIL sandbox could not start (see $STATE/logs)"; FAILED=1; finish; }
# shellcheck source=/dev/null  # written by `sandbox.sh up`
. "$STATE/env"
PYTHON=$PY

begin "Step 1: deploy aad-pod-identity (kubectl apply of the CRDs and deploy/manifests/deployment-rbac.yaml)"
out=$(k apply -f "$ROOT/deploy/crds/aadpodidentity.k8s.io.yaml" 2>&1) && echo "$out"
rc=$?
if [ -f "$ROOT/deploy/manifests/deployment-rbac.yaml" ]; then
  out=$(k apply -f "$ROOT/deploy/manifests/deployment-rbac.yaml" 2>&1); rc=$((rc + $?)); echo "$out"
fi
echo "(Nodes a-0, a-1 and c-0 have no kubelet: their MIC and NMI run as processes in its namespaces; the manifests' RBAC is real. k-0 is a real node: the chart's steps below run there.)"
if [ $rc -eq 0 ]; then
  step 1 "CRDs and deployment manifests applied" PASS
else
  step 1 "deploy" FAIL "kubectl apply failed"
fi

begin "Step 2: az identity create -g $RG -n $IDENTITY (in the emulator) and grant it Storage Blob Data Reader"
created=$(ip netns exec pi-cp curl -sf -X POST "http://127.0.0.1:$ADMIN_PORT/admin/identities" \
  -H 'content-type: application/json' -d "{\"name\":\"$IDENTITY\",\"resource_group\":\"$RG\"}" || true)
# What `az identity create` prints: the ARM resource, in the CLI's flattened shape.
echo "$created" | "$PYTHON" -c '
import json, sys
r = json.load(sys.stdin)
az = {
    "clientId": r["clientId"],
    "clientSecretUrl": "https://control-%s.identity.azure.net%s/credentials?tid=%s&oid=%s&aid=%s"
        % (r["location"], r["id"], r["tenantId"], r["principalId"], r["clientId"]),
    "id": r["id"], "location": r["location"], "name": r["name"], "principalId": r["principalId"],
    "resourceGroup": r["resourceGroup"], "tags": r["tags"], "tenantId": r["tenantId"], "type": r["type"],
}
print(json.dumps(az, indent=2))' 2>/dev/null || echo "$created"
CLIENT_ID=$(echo "$created" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["clientId"])' 2>/dev/null || true)
RESOURCE_ID=$(echo "$created" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null || true)
PRINCIPAL_ID=$(echo "$created" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["principalId"])' 2>/dev/null || true)
# The seed's step 5: the cluster's service principal gets "Managed Identity Operator" on the identity,
# and the identity "Storage Blob Data Reader" on the storage account (recorded; Azurite checks no roles).
grants=0
ip netns exec pi-cp curl -sf -X POST http://127.0.0.1:$ADMIN_PORT/admin/roles -H 'content-type: application/json' \
  -d "{\"principal\":\"aks-cluster-sp\",\"scope\":\"$RESOURCE_ID\"}" >/dev/null || grants=1
if [ -n "$CLIENT_ID" ] && [ -n "$RESOURCE_ID" ] && [ $grants -eq 0 ]; then
  echo "az role assignment create --role \"Managed Identity Operator\" --assignee <cluster SP> --scope $RESOURCE_ID: done"
  echo "az role assignment create --role \"Storage Blob Data Reader\" --assignee $PRINCIPAL_ID --scope <storage account>: Azurite accepts any valid token"
  step 2 "managed identity $IDENTITY created (clientId $CLIENT_ID)" PASS
else
  step 2 "create identity" FAIL "the emulator did not create it: $created"
fi

begin "Step 3: apply the seed's aadpodidentity.yaml and aadpodidentitybinding.yaml, placeholders filled"
fill() {
  sed -e "s|<the managed identity id returned previously>|$RESOURCE_ID|" \
    -e "s|<the managed identity clientId returned previously>|$CLIENT_ID|" \
    -e "s|<your_managed_identity_name from the previous step>|$IDENTITY|" \
    -e "s|<your_managed_identity_name>|$IDENTITY|" \
    -e "s|<your_app_selector_name>|$SELECTOR|" "$1"
}
fill "$ROOT/examples/seed/aadpodidentity.yaml" | tee "$STATE/aadpodidentity.yaml"
fill "$ROOT/examples/seed/aadpodidentitybinding.yaml" | tee "$STATE/aadpodidentitybinding.yaml"
if k apply -f "$STATE/aadpodidentity.yaml" && k apply -f "$STATE/aadpodidentitybinding.yaml"; then
  k get azureidentity,azureidentitybinding
  step 3 "AzureIdentity and AzureIdentityBinding applied verbatim" PASS
else
  step 3 "apply the seed's YAML" FAIL "kubectl apply refused it"
fi

run_pod() { # run_pod NS NAME NODE LABEL|- SCRIPT
  local labels=()
  [ "$4" != - ] && labels=(--label "$4")
  timeout 150 "$SB" pod run --namespace "$1" --name "$2" --node "$3" "${labels[@]}" -- "$PYTHON" "$ROOT/examples/sandbox/$5" 2>&1
}

begin "Step 4: a pod labelled aadpodidbinding: $SELECTOR runs the seed's Python (ManagedIdentityCredential + BlobServiceClient)"
out=$(run_pod default myapp a-0 "aadpodidbinding=$SELECTOR" read_blob.py)
echo "$out"
k get azureassignedidentities -A
if echo "$out" | grep -q '^BLOB: Hello from Azurite'; then
  step 4 "the pod read the blob with its own identity" PASS
else
  step 4 "read the blob" FAIL "$(echo "$out" | tail -n 1)"
fi

begin "Step 5a: a rogue pod in another namespace reuses the label aadpodidbinding: $SELECTOR"
out=$(run_pod rogue rogue a-1 "aadpodidbinding=$SELECTOR" whoami.py)
echo "$out"
if echo "$out" | grep -q '^REFUSED'; then
  step 5 "rogue pod with the same label in another namespace refused" PASS
else
  step 5 "rogue pod refused" FAIL "it got a token: $(echo "$out" | tail -n 1)"
fi

begin "Step 5b: a pod without the label"
out=$(run_pod default unlabelled a-0 - whoami.py)
echo "$out"
if echo "$out" | grep -q '^REFUSED'; then
  step 6 "unlabelled pod refused" PASS
else
  step 6 "unlabelled pod refused" FAIL "it got a token: $(echo "$out" | tail -n 1)"
fi

begin "Step 5c: the seed's AzurePodIdentityException (PodLabels: noaad: true) lets a pod use the node's identity"
k apply -f "$ROOT/examples/seed/aad-identity-exception.yaml"
out=$(run_pod default excepted a-0 "noaad=true" whoami.py)
echo "$out"
if echo "$out" | grep -qi '^IDENTITY: xms_mirid=/subscriptions/[^ ]*/virtualMachineScaleSets/ss-a '; then
  step 7 "excepted pod got the node's own (scale set) identity" PASS
else
  step 7 "exception" FAIL "$(echo "$out" | tail -n 1)"
fi

begin "Step 6: pods that come and go, as a Job's runs do: one after another, alternating between the two instances of ss-a"
# Each pod ends as the next starts on the other instance: MIC's removal of the identity from the
# scale set (nothing there needs it any more) races the next pod's assignment (issue 13).
churn_ok=1
for run in 1 2 3; do
  node=a-$((run % 2))
  out=$(run_pod default "job-run-$run" "$node" "aadpodidbinding=$SELECTOR" read_blob.py)
  echo "[job-run-$run on $node] $(echo "$out" | tail -n 1)"
  echo "$out" | grep -q '^BLOB: Hello from Azurite' || { churn_ok=0; churn_why="job-run-$run on $node: $(echo "$out" | tail -n 1)"; }
done
if [ $churn_ok -eq 1 ]; then
  step 8 "three pods one after another on ss-a's two instances all read the blob" PASS
else
  step 8 "pods one after another on ss-a's instances" FAIL "$churn_why"
fi

# shellcheck source=scripts/demo-chart.sh
. "$ROOT/scripts/demo-chart.sh"

finish
