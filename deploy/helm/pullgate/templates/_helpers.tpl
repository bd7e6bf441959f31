{{/* Chart name, overridable. */}}
{{- define "pullgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the prefix of every object. Truncated to 52 characters so that the longest suffix the
chart adds ("-selfsigned", 11 characters) still fits the 63-character limit of label values.
*/}}
{{- define "pullgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pullgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pullgate.labels" -}}
helm.sh/chart: {{ include "pullgate.chart" . }}
{{ include "pullgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pullgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pullgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pullgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pullgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repo:tag, or repo:tag@digest / repo@digest when image.digest is set. */}}
{{- define "pullgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- if $tag }}{{ printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}{{ else }}{{ printf "%s@%s" .Values.image.repository .Values.image.digest }}{{ end }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Names of the TLS objects; the e2e test and the README refer to them. */}}
{{- define "pullgate.servingCertName" -}}{{ include "pullgate.fullname" . }}-serving{{- end }}
{{- define "pullgate.tlsSecretName" -}}{{ include "pullgate.fullname" . }}-tls{{- end }}
{{- define "pullgate.caName" -}}{{ include "pullgate.fullname" . }}-ca{{- end }}
{{- define "pullgate.selfSignedName" -}}{{ include "pullgate.fullname" . }}-selfsigned{{- end }}

{{/*
Sorted, de-duplicated names of the mirror credential Secrets the webhook may read, as a JSON list
(templates return strings).
*/}}
{{- define "pullgate.credentialSecrets" -}}
{{- $names := list }}
{{- range concat (.Values.policy.mirrors | default list) (.Values.policy.registries | default list) }}
{{- if .credentialsSecret }}{{ $names = append $names .credentialsSecret }}{{ end }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{/*
Sorted, de-duplicated names of the pull secrets the policy injects into pods (imagePullSecrets
and rules[].imagePullSecrets), as a JSON list: the webhook checks that they exist.
*/}}
{{- define "pullgate.injectedSecrets" -}}
{{- $names := .Values.policy.imagePullSecrets | default list }}
{{- range .Values.policy.rules | default list }}
{{- $names = concat $names (.imagePullSecrets | default list) }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{/*
Namespaces never sent to the webhook, as a JSON list: kube-system, the release namespace (the
webhook must not gate its own pods, or a failurePolicy of Fail could never recover), extra names
from values, and the plain names of policy.exclude.namespaces. Globs are left to the webhook: a
label selector value cannot hold "*".
*/}}
{{- define "pullgate.excludedNamespaces" -}}
{{- $names := list "kube-system" .Release.Namespace }}
{{- range .Values.webhook.excludeNamespaces }}{{ $names = append $names . }}{{ end }}
{{- range ((.Values.policy.exclude).namespaces) }}
{{- if regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" . }}{{ $names = append $names . }}{{ end }}
{{- end }}
{{- $names | uniq | toJson }}
{{- end }}

{{/*
Milliseconds in a Go duration string ("2s", "1m30s", "500ms"); the schema has already checked the
format. Sprig cannot parse durations, so the units are summed here.
*/}}
{{- define "pullgate.durationMillis" -}}
{{- $total := 0.0 }}
{{- $units := dict "h" 3600000.0 "m" 60000.0 "s" 1000.0 "ms" 1.0 "us" 0.001 "µs" 0.001 "ns" 0.000001 }}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(h|ms|m|s|us|µs|ns)" . -1 }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" . }}
{{- $unit := trimPrefix $num . }}
{{- $total = addf $total (mulf (float64 $num) (get $units $unit)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
Refuse values that would make the API server give up before the webhook can answer: the registry
lookups of one admission are bounded by policy.resolve.timeout, and the answer (pinned, or kept
with a warning) must reach the API server within webhook.timeoutSeconds.
*/}}
{{- define "pullgate.validate" -}}
{{- $resolve := .Values.policy.resolve | default dict }}
{{- /* 2s is the webhook's own default (pkg/policy DefaultTimeout) when the key is left out. */}}
{{- $timeout := $resolve.timeout | default "2s" }}
{{- if ne (toString $resolve.enabled) "false" }}
{{- $resolveMs := include "pullgate.durationMillis" $timeout | float64 }}
{{- $webhookMs := mulf .Values.webhook.timeoutSeconds 1000.0 }}
{{- if le $webhookMs $resolveMs }}
{{- fail (printf "webhook.timeoutSeconds (%vs) must exceed policy.resolve.timeout (%s): the API server would give up before pullgate can answer" .Values.webhook.timeoutSeconds $timeout) }}
{{- end }}
{{- end }}
{{- if and ((.Values.policy).prepull) (not .Values.controller.enabled) }}
{{- fail "policy.prepull needs controller.enabled=true: the controller keeps the pre-pull DaemonSets (or use `webhook prepull render` and apply its output yourself, without policy.prepull in the chart)" }}
{{- end }}
{{- if and .Values.controller.enabled (gt (int .Values.controller.replicas) 1) (not .Values.controller.leaderElection) }}
{{- fail "controller.replicas > 1 needs controller.leaderElection: two active controllers would fight over the DaemonSets" }}
{{- end }}
{{- with .Values.podDisruptionBudget }}
{{- if and .enabled (not (kindIs "string" .minAvailable)) (ge (int .minAvailable) (int $.Values.replicaCount)) }}
{{- fail (printf "podDisruptionBudget.minAvailable (%v) must be below replicaCount (%v), or no node drain could ever evict a pullgate pod; with one replica set podDisruptionBudget.enabled=false" .minAvailable $.Values.replicaCount) }}
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when some policy.prepull group sets startupTaint: the controller then watches and patches Nodes. */}}
{{- define "pullgate.startupTaints" -}}
{{- $on := false }}
{{- range ((.Values.policy).prepull | default list) }}{{ if .startupTaint }}{{ $on = true }}{{ end }}{{ end }}
{{- if $on }}true{{ end }}
{{- end }}

{{/* The controller's objects. */}}
{{- define "pullgate.controllerName" -}}{{ include "pullgate.fullname" . }}-controller{{- end }}

{{- define "pullgate.controllerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "pullgate.name" . }}-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pullgate.controllerServiceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "pullgate.controllerName" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pullgate.controllerLabels" -}}
helm.sh/chart: {{ include "pullgate.chart" . }}
{{ include "pullgate.controllerSelectorLabels" . }}
app.kubernetes.io/component: controller
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
