{{/* Labels of every object: deploy/base's commonLabels, and Helm's own. */}}
{{- define "flannel-bot.labels" -}}
app.kubernetes.io/name: flannel-bot
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The ServiceAccount every binding names, in the release namespace. */}}
{{- define "flannel-bot.subject" -}}
- kind: ServiceAccount
  name: flannel-bot
  namespace: {{ .Release.Namespace }}
{{- end }}

{{- define "flannel-bot.lease" -}}
{{- .Values.leader.lease | default (printf "%s/flannel-bot" .Release.Namespace) -}}
{{- end }}

{{/* A TOML value or quoted key: strings, numbers, booleans and lists of them are valid TOML as
JSON writes them (a quoted key is a string), so no value from values.yaml can end a line or a
table early. */}}
{{- define "flannel-bot.toml" -}}
{{- toJson . -}}
{{- end }}
