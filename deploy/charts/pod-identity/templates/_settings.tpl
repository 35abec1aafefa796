{{- /*
Effective settings of MIC and NMI, computed from this chart's values and from the keys of
upstream's aad-pod-identity chart (4.1.x), which a values file may use instead. Each upstream key
either maps onto the setting of ours that does its job, or is passed to the binary as upstream's
flag (our binaries accept every v1.8.17 flag and log what replaced the ones they do not honour).
README.md, "Upstream chart values", lists every key and where it goes.
*/ -}}

{{/* "true" when a value is true or "true" (upstream wrote many booleans as strings), else "". */}}
{{- define "pod-identity.isTrue" -}}
{{- if eq (toString .) "true" }}true{{ end }}
{{- end }}

{{/* "true" when pods may match bindings and identities of other namespaces, else "". */}}
{{- define "pod-identity.crossNamespace" -}}
{{- if and (eq .Values.operationMode "standard") (include "pod-identity.isTrue" .Values.allowCrossNamespace) }}true{{ end }}
{{- end }}

{{/*
`image:` and `imagePullPolicy:` of MIC's or NMI's container; call with (dict "ctx" $ "component" "mic").
Ours: mic.image.{repository,tag,pullPolicy}. Upstream's: image.repository + "/" + mic.image (a
name), mic.tag, image.imagePullPolicy. Unset parts: <image.repository>/<component>, appVersion.
*/}}
{{- define "pod-identity.componentImage" -}}
{{- $values := index .ctx.Values .component }}
{{- $top := .ctx.Values.image | default dict }}
{{- $prefix := $top.repository | default "ghcr.io/pod-identity" | trimSuffix "/" }}
{{- $own := dict }}
{{- $repository := printf "%s/%s" $prefix .component }}
{{- if kindIs "string" $values.image }}
{{- $repository = printf "%s/%s" $prefix $values.image }}
{{- else if kindIs "map" $values.image }}
{{- $own = $values.image }}
{{- $repository = $own.repository | default $repository }}
{{- end }}
{{- if hasPrefix "mcr.microsoft.com/oss/azure/aad-pod-identity/" $repository }}
{{- fail (printf "image.repository (or %s.image): %s is upstream's aad-pod-identity image, which does not take this chart's flags and probes. Push pod-identity's images (deploy/docker/%s.Dockerfile) to your registry and set image.repository to it, or leave image.repository, %s.image and %s.tag unset" .component $repository .component .component .component) }}
{{- end }}
{{- $tag := $values.tag | default $own.tag | default .ctx.Chart.AppVersion -}}
image: {{ printf "%s:%s" $repository $tag }}
imagePullPolicy: {{ $own.pullPolicy | default $top.imagePullPolicy | default "IfNotPresent" }}
{{- end }}

{{/*
Where MIC's azure.json comes from, as JSON {"source": "hostPath"|"secret"|"env", "path": …}.
mic.cloudConfig is ours ({hostPath, secretName}) or upstream's (a path on the node); upstream's
`adminsecret` means environment variables from a Secret instead of a file.
*/}}
{{- define "pod-identity.mic.cloudConfig" -}}
{{- $cc := .Values.mic.cloudConfig }}
{{- $default := "/etc/kubernetes/azure.json" }}
{{- $out := dict "source" "hostPath" "path" $default }}
{{- if kindIs "string" $cc }}
{{- $out = ternary (dict "source" "env") (dict "source" "hostPath" "path" $cc) (eq $cc "") }}
{{- else if kindIs "map" $cc }}
{{- if $cc.secretName }}
{{- $out = dict "source" "secret" "secretName" $cc.secretName }}
{{- else if hasKey $cc "hostPath" }}
{{- $out = ternary (dict "source" "env") (dict "source" "hostPath" "path" $cc.hostPath) (eq (toString $cc.hostPath) "") }}
{{- end }}
{{- end }}
{{- if .Values.adminsecret }}
{{- if eq $out.source "secret" }}
{{- fail "adminsecret and mic.cloudConfig.secretName both give MIC its Azure credentials: keep one" }}
{{- end }}
{{- $out = dict "source" "adminsecret" }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* RUST_LOG for upstream's klog verbosity (mic.logVerbosity / nmi.logVerbosity); call with (dict "v" … "crate" "mic"). Empty at 0. */}}
{{- define "pod-identity.rustLog" -}}
{{- $v := .v | default 0 | int }}
{{- if ge $v 6 }}info,{{ .crate }}=trace
{{- else if ge $v 1 }}info,{{ .crate }}=debug
{{- end }}
{{- end }}

{{/* MIC's arguments, as a YAML list. */}}
{{- define "pod-identity.mic.args" -}}
{{- $m := .Values.mic }}
{{- $le := $m.leaderElection | default dict }}
{{- $cc := include "pod-identity.mic.cloudConfig" . | fromJson }}
{{- $args := list }}
{{- if has $cc.source (list "hostPath" "secret") }}
{{- $args = append $args "--cloudconfig=/etc/kubernetes/azure.json" }}
{{- end }}
{{- $args = append $args (printf "--leader-election-name=%s" ($le.name | default "aad-pod-identity-mic")) }}
{{- $args = append $args (printf "--leader-election-duration=%s" ($le.duration | default "15s")) }}
{{- with $le.instance }}
{{- $args = append $args (printf "--leader-election-instance=%s" .) }}
{{- end }}
{{- with $le.namespace }}
{{- $args = append $args (printf "--leader-election-namespace=%s" .) }}
{{- end }}
{{- $args = append $args (printf "--http-probe-port=%d" (include "pod-identity.mic.probePort" . | int)) }}
{{- $args = append $args (printf "--prometheus-port=%d" (include "pod-identity.mic.prometheusPort" . | int)) }}
{{- $args = append $args (printf "--identity-assignment-reconcile-interval=%s" ($m.identityAssignmentReconcileInterval | default "60s")) }}
{{- /* Upstream's periodic sync retried failed assignments; ours retries each failed VM/VMSS after this wait. */}}
{{- with $m.syncRetryDuration }}
{{- $args = append $args (printf "--failure-retry-interval=%s" .) }}
{{- end }}
{{- $args = append $args (printf "--log-format=%s" ($m.loggingFormat | default .Values.logFormat)) }}
{{- if include "pod-identity.crossNamespace" . }}
{{- $args = append $args "--allow-cross-namespace" }}
{{- end }}
{{- /* Off only when set to false explicitly: a missing value keeps the owner's consent checked. */}}
{{- if eq (toString $m.identityConsent) "false" }}
{{- $args = append $args "--identity-consent=false" }}
{{- end }}
{{- with $m.immutableUserMSIs }}
{{- $args = append $args (printf "--immutable-user-msis=%s" (join "," .)) }}
{{- end }}
{{- /* Upstream's flags with no value of ours: passed as upstream spelt them. */}}
{{- with $m.createDeleteBatch }}
{{- $args = append $args (printf "--createDeleteBatch=%v" .) }}
{{- end }}
{{- with $m.clientQps }}
{{- $args = append $args (printf "--clientQps=%v" .) }}
{{- end }}
{{- with $m.updateUserMSIMaxRetry }}
{{- $args = append $args (printf "--update-user-msi-max-retry=%v" .) }}
{{- end }}
{{- with $m.updateUserMSIRetryInterval }}
{{- $args = append $args (printf "--update-user-msi-retry-interval=%s" .) }}
{{- end }}
{{- with .Values.customUserAgent }}
{{- $args = append $args (printf "--custom-user-agent=%s" .) }}
{{- end }}
{{- $args = concat $args ($m.extraArgs | default list) }}
{{- toYaml $args }}
{{- end }}

{{- define "pod-identity.mic.probePort" -}}{{ .Values.mic.probePort | default 8080 }}{{- end }}
{{- define "pod-identity.mic.prometheusPort" -}}{{ .Values.mic.prometheusPort | default 8888 }}{{- end }}
{{/* NMI's readiness socket, in the pod's emptyDir `ready` (templates/nmi.yaml); not under the
node's /run/pod-identity, the CNI gate's hostPath, which the old and the new NMI share. */}}
{{- define "pod-identity.nmi.readySocket" -}}/run/nmi/ready.sock{{- end }}

{{- define "pod-identity.nmi.probePort" -}}{{ .Values.nmi.probePort | default 8085 }}{{- end }}
{{- define "pod-identity.nmi.prometheusPort" -}}{{ .Values.nmi.prometheusPort | default 9090 }}{{- end }}

{{/*
NMI's --identity-wait in seconds from upstream's retry keys, or "" when none is set. Upstream's NMI
polled for the pod's AzureAssignedIdentity (retryAttemptsForCreated + retryAttemptsForAssigned)
times, findIdentityRetryIntervalInSeconds apart (defaults 16, 4, 5); ours waits on the watch for
at most that long.
*/}}
{{- define "pod-identity.nmi.identityWait" -}}
{{- $n := .Values.nmi }}
{{- if or $n.retryAttemptsForCreated $n.retryAttemptsForAssigned $n.findIdentityRetryIntervalInSeconds }}
{{- $created := $n.retryAttemptsForCreated | default 16 | int }}
{{- $assigned := $n.retryAttemptsForAssigned | default 4 | int }}
{{- $interval := $n.findIdentityRetryIntervalInSeconds | default 5 | int }}
{{- mul (add $created $assigned) $interval }}
{{- end }}
{{- end }}

{{/* NMI's arguments, as a YAML list. */}}
{{- define "pod-identity.nmi.args" -}}
{{- $n := .Values.nmi }}
{{- $args := list "--node=$(NODE_NAME)" }}
{{- $args = append $args (printf "--operation-mode=%s" .Values.operationMode) }}
{{- $args = append $args (printf "--http-probe-port=%d" (include "pod-identity.nmi.probePort" . | int)) }}
{{- $args = append $args (printf "--ready-socket=%s" (include "pod-identity.nmi.readySocket" .)) }}
{{- $args = append $args (printf "--prometheus-port=%d" (include "pod-identity.nmi.prometheusPort" . | int)) }}
{{- $args = append $args (printf "--metadata-header-required=%t" (ne (toString $n.metadataHeaderRequired) "false")) }}
{{- $args = append $args (printf "--ipt-update-interval-sec=%d" ($n.ipTableUpdateTimeIntervalInSeconds | default $n.iptUpdateIntervalSec | default 60 | int)) }}
{{- $args = append $args (printf "--log-format=%s" ($n.loggingFormat | default .Values.logFormat)) }}
{{- if include "pod-identity.isTrue" $n.blockInstanceMetadata }}
{{- $args = append $args "--block-instance-metadata" }}
{{- end }}
{{- if include "pod-identity.isTrue" $n.setRetryAfterHeader }}
{{- $args = append $args "--set-retry-after-header" }}
{{- end }}
{{- if include "pod-identity.crossNamespace" . }}
{{- $args = append $args "--allow-cross-namespace" }}
{{- end }}
{{- with (include "pod-identity.exceptionNamespaces" .) }}
{{- $args = append $args (printf "--exception-namespaces=%s" .) }}
{{- end }}
{{- with (include "pod-identity.nmi.identityWait" .) }}
{{- $args = append $args (printf "--identity-wait=%s" .) }}
{{- end }}
{{- with $n.federatedTenantID }}
{{- $args = append $args (printf "--federated-tenant-id=%s" .) }}
{{- end }}
{{- /* Upstream's flags with no value of ours: passed as upstream spelt them. */}}
{{- with $n.micNamespace }}
{{- $args = append $args (printf "--MICNamespace=%s" .) }}
{{- end }}
{{- if not (kindIs "invalid" $n.enableScaleFeatures) }}
{{- $args = append $args (printf "--enableScaleFeatures=%t" (eq (toString $n.enableScaleFeatures) "true")) }}
{{- end }}
{{- if include "pod-identity.isTrue" $n.allowNetworkPluginKubenet }}
{{- $args = append $args "--allow-network-plugin-kubenet=true" }}
{{- end }}
{{- with $n.kubeletConfig }}
{{- $args = append $args (printf "--kubelet-config=%s" .) }}
{{- end }}
{{- if include "pod-identity.isTrue" $n.enableConntrackDeletion }}
{{- $args = append $args "--enable-conntrack-deletion=true" }}
{{- end }}
{{- with .Values.customUserAgent }}
{{- $args = append $args (printf "--custom-user-agent=%s" .) }}
{{- end }}
{{- $args = concat $args (include "pod-identity.nmi.cniArgs" . | fromYamlArray) }}
{{- if not (include "pod-identity.isTrue" $n.cni.enabled) }}
{{- $args = append $args "--cni-plugin=false" }}
{{- end }}
{{- $args = concat $args ($n.extraArgs | default list) }}
{{- toYaml $args }}
{{- end }}

{{/*
The CNI gate's flags, of NMI and of `nmi cleanup`: the node's CNI directories and the ready file,
each mounted at the same path in the container as on the node (the plugin, run by the container
runtime on the node, reads the ready file at the path NMI chains into the network configuration).
*/}}
{{- define "pod-identity.nmi.cniArgs" -}}
{{- $c := .Values.nmi.cni -}}
- --cni-conf-dir={{ $c.confDir }}
- --cni-bin-dir={{ $c.binDir }}
- --cni-ready-file={{ trimSuffix "/" $c.readyDir }}/interception-ready
{{- end }}

{{- define "pod-identity.nmi.cniVolumes" -}}
{{- $c := .Values.nmi.cni -}}
- name: cni-conf
  hostPath:
    path: {{ $c.confDir }}
    type: DirectoryOrCreate
- name: cni-bin
  hostPath:
    path: {{ $c.binDir }}
    type: DirectoryOrCreate
# A tmpfs that a reboot empties: the ready file must not outlive the rules.
- name: cni-ready
  hostPath:
    path: {{ $c.readyDir }}
    type: DirectoryOrCreate
{{- end }}

{{- define "pod-identity.nmi.cniVolumeMounts" -}}
{{- $c := .Values.nmi.cni -}}
- name: cni-conf
  mountPath: {{ $c.confDir }}
- name: cni-bin
  mountPath: {{ $c.binDir }}
- name: cni-ready
  mountPath: {{ $c.readyDir }}
{{- end }}

{{/*
Namespaces where NMI may `get` Secrets, as JSON {namespace: [secret names]} (an empty list: every
Secret there): nmi.secretNamespaces, plus the namespace and Secret of every service-principal
identity in azureIdentities (unless upstream's rbac.allowAccessToSecrets is false).
*/}}
{{- define "pod-identity.nmi.secretGrants" -}}
{{- $grants := dict }}
{{- $all := dict }}
{{- range .Values.nmi.secretNamespaces }}
{{- if kindIs "map" . }}
{{- $ns := required "each nmi.secretNamespaces entry needs a namespace" .namespace }}
{{- if .names }}
{{- $_ := set $grants $ns (concat (get $grants $ns | default list) .names) }}
{{- else }}
{{- $_ := set $all $ns true }}
{{- end }}
{{- else }}
{{- $_ := set $all . true }}
{{- end }}
{{- end }}
{{- if ne (toString .Values.rbac.allowAccessToSecrets) "false" }}
{{- range $key, $id := .Values.azureIdentities }}
{{- if and $id (ne (int $id.type) 0) }}
{{- $ns := $id.namespace | default $.Release.Namespace }}
{{- $secret := (include "pod-identity.identity.clientPassword" (dict "ctx" $ "key" $key "id" $id) | fromJson).name }}
{{- $_ := set $grants $ns (append (get $grants $ns | default list) $secret) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $ns, $_ := $all }}
{{- $_ := set $grants $ns (list) }}
{{- end }}
{{- $out := dict }}
{{- range $ns, $names := $grants }}
{{- $_ := set $out $ns ($names | uniq | sortAlpha) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
NMI's cluster-wide `get secrets`: ours (rbac.allowClusterWideSecretAccess), or upstream's
rbac.allowAccessToSecrets=true when no namespace is listed in nmi.secretNamespaces (upstream's
grant, kept for values files that ask for it).
*/}}
{{- define "pod-identity.nmi.clusterWideSecrets" -}}
{{- if or .Values.rbac.allowClusterWideSecretAccess (and (include "pod-identity.isTrue" .Values.rbac.allowAccessToSecrets) (not .Values.nmi.secretNamespaces)) }}true{{ end }}
{{- end }}

{{/*
An azureIdentities entry's clientPassword as JSON {name, namespace}; call with (dict "ctx" $ "key" …
"id" …). Upstream wrote it as a JSON string; a map works too. The Secret must be in the identity's
own namespace, the only one our NMI reads it from.
*/}}
{{- define "pod-identity.identity.clientPassword" -}}
{{- $where := printf "azureIdentities.%s.clientPassword" .key }}
{{- $ref := required (printf "%s is required for type %v (service principal): {name: <Secret>}" $where .id.type) .id.clientPassword }}
{{- if kindIs "string" $ref }}
{{- $ref = $ref | fromJson }}
{{- if $ref.Error }}
{{- fail (printf "%s is not JSON such as {\"name\":\"<secret>\",\"namespace\":\"<namespace>\"}: %s" $where $ref.Error) }}
{{- end }}
{{- end }}
{{- $ns := .id.namespace | default .ctx.Release.Namespace }}
{{- if not $ref.name }}
{{- fail (printf "%s needs the Secret's name" $where) }}
{{- end }}
{{- if and $ref.namespace (ne $ref.namespace $ns) }}
{{- fail (printf "%s names a Secret in namespace %s, but the identity is in %s: NMI reads a service principal's Secret only from the identity's own namespace" $where $ref.namespace $ns) }}
{{- end }}
{{- toJson (dict "name" $ref.name "namespace" $ns) }}
{{- end }}
