{{/* Chart name, truncated to a label value. */}}
{{- define "pod-identity.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name appended unless it is already in it. Room is left for "-mic"/"-nmi-cleanup". */}}
{{- define "pod-identity.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pod-identity.mic.name" -}}{{ include "pod-identity.fullname" . }}-mic{{- end }}
{{- define "pod-identity.nmi.name" -}}{{ include "pod-identity.fullname" . }}-nmi{{- end }}
{{- define "pod-identity.cleanup.name" -}}{{ include "pod-identity.fullname" . }}-nmi-cleanup{{- end }}

{{/* Labels on every object. */}}
{{- define "pod-identity.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "pod-identity.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "mic"). */}}
{{- define "pod-identity.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pod-identity.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image of (dict "ctx" $ "image" {repository, tag}); the tag defaults to the chart's appVersion. */}}
{{- define "pod-identity.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* The ServiceAccount a component's pods run as; empty (the namespace's default) when rbac.enabled is off. */}}
{{- define "pod-identity.serviceAccountName" -}}
{{- if ne (toString .ctx.Values.rbac.enabled) "false" -}}
serviceAccountName: {{ .name }}
{{- end }}
{{- end }}

{{/* Fails on value combinations the components would refuse at start-up, and on upstream values whose meaning this chart cannot keep. */}}
{{- define "pod-identity.validate" -}}
{{- if not (has .Values.operationMode (list "standard" "managed")) }}
{{- fail (printf "operationMode must be standard or managed, not %q" .Values.operationMode) }}
{{- end }}
{{- $cross := include "pod-identity.isTrue" .Values.allowCrossNamespace }}
{{- $forced := ne (toString .Values.forceNamespaced) "false" }}
{{- if and $cross (eq .Values.operationMode "managed") }}
{{- fail "allowCrossNamespace cannot be used with operationMode=managed: managed mode is namespaced" }}
{{- end }}
{{- if and $cross $forced }}
{{- fail "allowCrossNamespace=true contradicts forceNamespaced=true; set forceNamespaced=false" }}
{{- end }}
{{- if and (not $forced) (kindIs "invalid" .Values.allowCrossNamespace) (eq .Values.operationMode "standard") }}
{{- fail "forceNamespaced=false (upstream's default) asks for cross-namespace matching, which this chart leaves off: set allowCrossNamespace=true to keep it (pods may then use bindings and identities of any namespace), or allowCrossNamespace=false (or forceNamespaced=true) for namespaced matching" }}
{{- end }}
{{- if not (has .Values.nmi.iptablesMode (list "nft" "legacy")) }}
{{- fail (printf "nmi.iptablesMode must be nft or legacy, not %q" .Values.nmi.iptablesMode) }}
{{- end }}
{{- if not (has .Values.logFormat (list "text" "json")) }}
{{- fail (printf "logFormat must be text or json, not %q" .Values.logFormat) }}
{{- end }}
{{- if include "pod-identity.isTrue" .Values.rbac.pspEnabled }}
{{- fail "rbac.pspEnabled=true: PodSecurityPolicy was removed in Kubernetes 1.25, which this chart requires; use Pod Security Admission instead (NMI needs the privileged level in its namespace, see README.md)" }}
{{- end }}
{{- end }}

{{/* NMI's --exception-namespaces, with the namespaces of the chart's own exceptions added (the release namespace for MIC's, kube-system for the AKS add-ons'). Empty: every namespace. */}}
{{- define "pod-identity.exceptionNamespaces" -}}
{{- $ns := .Values.exceptionNamespaces }}
{{- if and $ns (include "pod-identity.isTrue" .Values.installMICException) (eq .Values.operationMode "standard") }}
{{- $ns = append $ns .Release.Namespace }}
{{- end }}
{{- if and $ns .Values.installAKSAddonException }}
{{- $ns = append $ns "kube-system" }}
{{- end }}
{{- $ns | uniq | join "," }}
{{- end }}

{{/* Container security context of NMI and of the cleanup pods: root (iptables needs it, see the README), NET_ADMIN only (+NET_RAW for the legacy backend). */}}
{{- define "pod-identity.nmi.securityContext" -}}
runAsUser: 0
runAsGroup: 0
runAsNonRoot: false
privileged: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
seccompProfile:
  type: RuntimeDefault
capabilities:
  drop:
    - ALL
  add:
    - NET_ADMIN
    {{- if eq .Values.nmi.iptablesMode "legacy" }}
    - NET_RAW
    {{- end }}
{{- end }}

{{/* PATH of NMI's containers: the legacy backend's iptables/iptables-restore links come first when asked for. */}}
{{- define "pod-identity.nmi.env" -}}
{{- if eq .Values.nmi.iptablesMode "legacy" }}
- name: PATH
  value: /usr/lib/pod-identity/iptables-legacy:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{{- end }}
{{- end }}

{{/* The DaemonSet that runs `nmi cleanup` on every node: used by the uninstall hook (as a file in a ConfigMap) and, for plain manifests, as a standalone resource. */}}
{{- define "pod-identity.cleanupDaemonSet" -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ include "pod-identity.cleanup.name" . }}
  namespace: {{ .Release.Namespace }}
  labels:
    {{- include "pod-identity.labels" . | nindent 4 }}
    app.kubernetes.io/component: nmi-cleanup
spec:
  selector:
    matchLabels:
      {{- include "pod-identity.selectorLabels" (dict "ctx" . "component" "nmi-cleanup") | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "pod-identity.selectorLabels" (dict "ctx" . "component" "nmi-cleanup") | nindent 8 }}
    spec:
      # Needs no Kubernetes API access.
      automountServiceAccountToken: false
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- with .Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        seccompProfile:
          type: RuntimeDefault
      initContainers:
        - name: cleanup
          {{- include "pod-identity.componentImage" (dict "ctx" . "component" "nmi") | nindent 10 }}
          # The CNI gate's plugin out first, then the rules, then its ready file.
          args:
            {{- include "pod-identity.nmi.cniArgs" . | nindent 12 }}
            - cleanup
          {{- with (include "pod-identity.nmi.env" .) }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- include "pod-identity.nmi.securityContext" . | nindent 12 }}
          resources:
            requests:
              cpu: 10m
              memory: 16Mi
            limits:
              memory: 64Mi
          volumeMounts:
            - name: xtables-lock
              mountPath: /run/xtables.lock
            {{- include "pod-identity.nmi.cniVolumeMounts" . | nindent 12 }}
      containers:
        # Ready once the init container succeeded: the waiting Job counts ready pods.
        - name: done
          {{- include "pod-identity.componentImage" (dict "ctx" . "component" "nmi") | nindent 10 }}
          command: ["sleep", "infinity"]
          securityContext:
            runAsUser: 65532
            runAsGroup: 65532
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop:
                - ALL
          resources:
            requests:
              cpu: 1m
              memory: 4Mi
            limits:
              memory: 16Mi
      volumes:
        - name: xtables-lock
          hostPath:
            path: /run/xtables.lock
            type: FileOrCreate
        {{- include "pod-identity.nmi.cniVolumes" . | nindent 8 }}
      {{- with .Values.nmi.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.nmi.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.nmi.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}

{{/* One kubectl step of the uninstall Job; call with (dict "ctx" $ "image" "…" "step" (dict "name" … "args" …)). */}}
{{- define "pod-identity.cleanup.kubectlContainer" -}}
name: {{ .step.name }}
image: {{ .image }}
imagePullPolicy: {{ .ctx.Values.cleanup.kubectlImage.pullPolicy }}
args:
  {{- toYaml .step.args | nindent 2 }}
env:
  # kubectl's discovery cache goes to $HOME/.kube; the root filesystem is read-only.
  - name: HOME
    value: /tmp
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop:
      - ALL
resources:
  requests:
    cpu: 10m
    memory: 32Mi
  limits:
    memory: 128Mi
volumeMounts:
  - name: manifest
    mountPath: /manifest
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- end }}
