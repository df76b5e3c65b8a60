{{- define "outpost.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "outpost.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "outpost.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "outpost.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "outpost.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outpost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret holding the connection string, or "" when there is none. */}}
{{- define "outpost.connectionSecret" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else if .Values.connectionString -}}
{{- include "outpost.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the TLS certificate and key, or "" for plain HTTP. */}}
{{- define "outpost.tlsSecret" -}}
{{- if .Values.tls.secret -}}
{{- .Values.tls.secret -}}
{{- else if and .Values.tls.crt .Values.tls.key -}}
{{- printf "%s-tls" (include "outpost.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* "k=v,k2=v2" for OUTPOST_MIRROR_NAMESPACES. */}}
{{- define "outpost.mirrorNamespaces" -}}
{{- $out := list -}}
{{- range $host, $prefix := .Values.mirrorNamespaces -}}
{{- $out = append $out (printf "%s=%s" $host (default "" $prefix)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
