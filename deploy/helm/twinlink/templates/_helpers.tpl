{{/* The name of the release's objects. */}}
{{- define "twinlink.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The labels that select the release's pods. */}}
{{- define "twinlink.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every label of the release's objects. */}}
{{- define "twinlink.labels" -}}
{{ include "twinlink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The name of the quick-start PostGIS's objects (StatefulSet, Service, Secret). */}}
{{- define "twinlink.postgis.fullname" -}}
{{- printf "%s-postgis" (include "twinlink.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{/* The labels that select the PostGIS pod: another name than the broker's, so that the
     broker's Deployment, Service and ServiceMonitor never select it. */}}
{{- define "twinlink.postgis.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-postgis
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: database
{{- end -}}

{{/* Every label of the PostGIS objects. */}}
{{- define "twinlink.postgis.labels" -}}
{{ include "twinlink.postgis.selectorLabels" . }}
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Secret holding the PostGIS password, under the key `password`. */}}
{{- define "twinlink.postgis.secretName" -}}
{{- .Values.postgis.existingSecret | default (include "twinlink.postgis.fullname" .) -}}
{{- end -}}

{{/* "true" when the broker uses PostgreSQL (a given URL or the quick-start PostGIS), "" when it
     uses the embedded store; refuses values that name more than one database. */}}
{{- define "twinlink.database" -}}
{{- $given := list .Values.database.existingSecret .Values.database.url .Values.postgis.enabled | compact -}}
{{- if gt (len $given) 1 -}}
{{- fail "set one of database.existingSecret, database.url and postgis.enabled, not several: the broker uses one database" -}}
{{- end -}}
{{- if $given -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the database URL: the given one, or the chart's own for database.url;
     "" when neither. */}}
{{- define "twinlink.databaseSecret" -}}
{{- .Values.database.existingSecret | default (and .Values.database.url (include "twinlink.fullname" .)) -}}
{{- end -}}

{{/* The Secret holding the JWT key file: the given one, or the chart's own for jwt.key; "" when
     neither. */}}
{{- define "twinlink.jwtSecret" -}}
{{- if and .Values.jwt.existingSecret .Values.jwt.key -}}
{{- fail "set jwt.existingSecret or jwt.key, not both" -}}
{{- end -}}
{{- .Values.jwt.existingSecret | default (and .Values.jwt.key (include "twinlink.fullname" .)) -}}
{{- end -}}
