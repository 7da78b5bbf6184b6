{{/*
Chart name, at most 63 characters (a DNS label).
*/}}
{{- define "nbferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains
the chart name. At most 52 characters (a CronJob's limit); the gc CronJob
cuts it to 49 to add "-gc".
*/}}
{{- define "nbferry.fullname" -}}
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

{{- define "nbferry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels (stable: never add labels that change between upgrades).
*/}}
{{- define "nbferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nbferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "nbferry.labels" -}}
helm.sh/chart: {{ include "nbferry.chart" . }}
{{ include "nbferry.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nbferry
{{- end }}

{{- define "nbferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nbferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nbferry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Secret names: an existing Secret when given, else the one this chart makes.
*/}}
{{- define "nbferry.tokenSecretName" -}}
{{- default (include "nbferry.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "nbferry.tokenSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{- define "nbferry.signingSecretName" -}}
{{- default (include "nbferry.fullname" .) .Values.signing.existingSecret }}
{{- end }}

{{- define "nbferry.signingSecretKey" -}}
{{- if .Values.signing.existingSecret }}{{ .Values.signing.existingSecretKey }}{{ else }}signing-key{{ end }}
{{- end }}

{{/*
Whether S3 credentials go into the environment at all (else IRSA, Pod
Identity or the instance role provide them).
*/}}
{{- define "nbferry.hasCredentials" -}}
{{- $c := .Values.store.credentials }}
{{- if or $c.existingSecret $c.accessKeyId $c.secretAccessKey }}true{{ end }}
{{- end }}

{{- define "nbferry.credentialsSecretName" -}}
{{- default (include "nbferry.fullname" .) .Values.store.credentials.existingSecret }}
{{- end }}

{{/*
Fail early, with a message naming the value, when a required value is missing.
*/}}
{{- define "nbferry.validate" -}}
{{- $_ := required "store.url is required: the store the checkpoints live in, e.g. --set store.url=s3://my-bucket/nbferry" .Values.store.url }}
{{- if not .Values.auth.existingSecret }}
{{- $_ := required "the migrator needs a token: set auth.token (e.g. --set auth.token=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')) or auth.existingSecret" .Values.auth.token }}
{{- end }}
{{- if not .Values.signing.existingSecret }}
{{- $_ := required "the migrator needs the signing key the checkpoints were signed with: set signing.key or signing.existingSecret" .Values.signing.key }}
{{- end }}
{{- $c := .Values.store.credentials }}
{{- if and (not $c.existingSecret) (or $c.accessKeyId $c.secretAccessKey) (not (and $c.accessKeyId $c.secretAccessKey)) }}
{{- fail "store.credentials needs both accessKeyId and secretAccessKey (or existingSecret)" }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $_ := required "tls.enabled needs tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key" .Values.tls.secretName }}
{{- else if .Values.tls.clientCA.enabled }}
{{- fail "tls.clientCA.enabled needs tls.enabled: mutual TLS is TLS" }}
{{- end }}
{{- end }}

{{/*
Environment shared by the migrator and the gc job: store, credentials,
signing key.
*/}}
{{- define "nbferry.storeEnv" -}}
- name: NBFERRY_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "nbferry.signingSecretName" . }}
      key: {{ include "nbferry.signingSecretKey" . }}
{{- if include "nbferry.hasCredentials" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "nbferry.credentialsSecretName" . }}
      key: {{ if .Values.store.credentials.existingSecret }}{{ .Values.store.credentials.accessKeyIdKey }}{{ else }}AWS_ACCESS_KEY_ID{{ end }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "nbferry.credentialsSecretName" . }}
      key: {{ if .Values.store.credentials.existingSecret }}{{ .Values.store.credentials.secretAccessKeyKey }}{{ else }}AWS_SECRET_ACCESS_KEY{{ end }}
{{- end }}
{{- end }}

{{/*
A liveness or readiness probe: native gRPC (grpc.health.v1) on the container
port. Kubelet's gRPC probes cannot speak TLS, so with TLS the probe checks
that the port accepts connections.
*/}}
{{- define "nbferry.probe" -}}
{{- if .root.Values.tls.enabled -}}
tcpSocket:
  port: grpc
{{- else -}}
grpc:
  port: {{ .root.Values.containerPort }}
{{- end }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/*
The --grace seconds of `nbferry serve`: a little under the pod's termination
grace period, so the server exits on its own before Kubernetes kills it.
*/}}
{{- define "nbferry.drainSeconds" -}}
{{- max 1 (sub (int .Values.terminationGracePeriodSeconds) 5) }}
{{- end }}
