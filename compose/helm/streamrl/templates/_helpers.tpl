{{/* Names ------------------------------------------------------------------------------------- */}}
{{- define "streamrl.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "streamrl.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: include "streamrl.selector" (list $ "worker") */}}
{{- define "streamrl.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ $root.Chart.Name }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Topic names and consumer group ids, as streamrl.config computes them ---------------------- */}}
{{- define "streamrl.topicPrefix" -}}
{{- $topics := default dict .Values.config.topics -}}
{{- if hasKey $topics "prefix" }}{{ $topics.prefix }}{{ else }}streamrl.{{ end -}}
{{- end -}}

{{/* Settings.group_id(name): prefix stripped of trailing ".-_" (or "streamrl") + "-" + name */}}
{{- define "streamrl.groupId" -}}
{{- $root := index . 0 -}}
{{- $stem := regexReplaceAll "[._-]+$" (include "streamrl.topicPrefix" $root) "" | default "streamrl" -}}
{{- printf "%s-%s" $stem (index . 1) -}}
{{- end -}}

{{- define "streamrl.samplesPartitions" -}}
{{- $topics := default dict .Values.config.topics -}}
{{- $parts := default dict $topics.partitions -}}
{{- default 6 (index $parts "samples") -}}
{{- end -}}

{{- define "streamrl.bootstrap" -}}
{{- if eq .Values.kafka.mode "strimzi" -}}
{{- printf "%s-kafka-kafka-bootstrap:9092" (include "streamrl.fullname" .) -}}
{{- else -}}
{{- required "kafka.bootstrapServers is required with kafka.mode=external" .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{/* Paths inside the pods ------------------------------------------------------------------------ */}}
{{- define "streamrl.configPath" -}}/etc/streamrl/streamrl.yaml{{- end -}}
{{- define "streamrl.tlsDir" -}}/etc/streamrl/kafka-tls{{- end -}}
{{- define "streamrl.stateDir" -}}/var/lib/streamrl/streams{{- end -}}

{{/* The effective streamrl.yaml: .Values.config with the keys that describe the cluster set by the chart */}}
{{- define "streamrl.config" -}}
{{- $v := .Values -}}
{{- $sec := $v.kafka.security -}}
{{- $kafka := dict "bootstrap_servers" (include "streamrl.bootstrap" .) "security_protocol" $sec.protocol -}}
{{- if $sec.saslMechanism }}{{ $_ := set $kafka "sasl_mechanism" $sec.saslMechanism }}{{ end -}}
{{- if $sec.saslUsername }}{{ $_ := set $kafka "sasl_username" $sec.saslUsername }}{{ end -}}
{{- if $sec.tlsSecret.name -}}
{{- $_ := set $kafka "ssl_ca_location" (printf "%s/%s" (include "streamrl.tlsDir" .) $sec.tlsSecret.caKey) -}}
{{- if $sec.tlsSecret.certKey }}{{ $_ := set $kafka "ssl_certificate_location" (printf "%s/%s" (include "streamrl.tlsDir" .) $sec.tlsSecret.certKey) }}{{ end -}}
{{- if $sec.tlsSecret.keyKey }}{{ $_ := set $kafka "ssl_key_location" (printf "%s/%s" (include "streamrl.tlsDir" .) $sec.tlsSecret.keyKey) }}{{ end -}}
{{- end -}}
{{- $inference := dict "backend" $v.inference.backend "host" "0.0.0.0" "port" $v.inference.port "model" $v.model.path -}}
{{- if eq $v.inference.backend "vllm" -}}
{{- $_ := set $inference "vllm" (dict "tensor_parallel_size" (max 1 $v.inference.gpus)) -}}
{{- end -}}
{{- $over := dict
  "kafka" $kafka
  "inference" $inference
  "gateway" (dict "upstream_url" (printf "http://%s-inference:%v/v1" (include "streamrl.fullname" .) $v.inference.port))
  "sampler" (dict "metrics_port" $v.metrics.ports.sampler "exit_when_done" false)
  "worker" (dict "metrics_port" $v.metrics.ports.worker)
  "streams" (dict "metrics_port" $v.metrics.ports.streams "state_dir" (include "streamrl.stateDir" .) "blob_dir" "/data/blobs")
  "trainer" (dict "metrics_port" $v.metrics.ports.trainer "checkpoint_dir" "/data/checkpoints" "model_path" $v.model.path "device" $v.trainer.device)
-}}
{{- toYaml (mergeOverwrite (deepCopy $v.config) $over) -}}
{{- end -}}

{{/* Pod pieces ------------------------------------------------------------------------------------ */}}
{{- define "streamrl.podAnnotations" -}}
{{- $root := index . 0 -}}
checksum/config: {{ include "streamrl.config" $root | sha256sum }}
{{- if $root.Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* env of every StreamRL container; (list $ extraEnv) */}}
{{- define "streamrl.env" -}}
{{- $root := index . 0 -}}
- name: STREAMRL_CONFIG
  value: {{ include "streamrl.configPath" $root }}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
{{- with $root.Values.kafka.security.passwordSecret }}{{ if .name }}
- name: STREAMRL_KAFKA__SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .name }}, key: {{ .key }}}}
{{- end }}{{ end }}
{{- with $root.Values.security.adminTokenSecret }}{{ if .name }}
- name: STREAMRL_SECURITY__ADMIN_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .name }}, key: {{ .key }}}}
{{- end }}{{ end }}
{{- with $root.Values.security.metricsTokenSecret }}{{ if .name }}
- name: STREAMRL_SECURITY__METRICS_TOKEN
  valueFrom: {secretKeyRef: {name: {{ .name }}, key: {{ .key }}}}
{{- end }}{{ end }}
{{- with (index . 1) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "streamrl.volumeMounts" -}}
- {name: config, mountPath: /etc/streamrl/streamrl.yaml, subPath: streamrl.yaml, readOnly: true}
{{- if .Values.kafka.security.tlsSecret.name }}
- {name: kafka-tls, mountPath: {{ include "streamrl.tlsDir" . }}, readOnly: true}
{{- end }}
{{- end -}}

{{- define "streamrl.volumes" -}}
- name: config
  configMap: {name: {{ include "streamrl.fullname" . }}-config}
{{- if .Values.kafka.security.tlsSecret.name }}
- name: kafka-tls
  secret: {secretName: {{ .Values.kafka.security.tlsSecret.name }}}
{{- end }}
{{- end -}}

{{- define "streamrl.dataVolume" -}}
- name: data
  persistentVolumeClaim: {claimName: {{ .Values.persistence.data.existingClaim | default (printf "%s-data" (include "streamrl.fullname" .)) }}}
{{- end -}}

{{- define "streamrl.modelsVolume" -}}
- name: models
  persistentVolumeClaim: {claimName: {{ .Values.persistence.models.existingClaim | default (printf "%s-models" (include "streamrl.fullname" .)) }}}
{{- end -}}

{{/* init containers: create the topics (idempotent; retried by Kubernetes until Kafka answers) */}}
{{- define "streamrl.initTopics" -}}
- name: topics
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["streamrl", "topics", "create"]
  env:
    {{- include "streamrl.env" (list . list) | nindent 4 }}
  volumeMounts:
    {{- include "streamrl.volumeMounts" . | nindent 4 }}
{{- end -}}

{{/* wait until the model Job has put a complete model directory in place */}}
{{- define "streamrl.initModel" -}}
- name: wait-for-model
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["sh", "-c", "until test -f {{ .Values.model.path }}/config.json; do echo waiting for {{ .Values.model.path }}; sleep 5; done"]
  volumeMounts:
    - {name: models, mountPath: /models}
{{- end -}}
