# Alerts and a dashboard on the metrics the functions emit through OpenTelemetry
# (workload.googleapis.com/<name>: the names are telemetry.MetricDocs, and the drift test fails
# when an alert or the dashboard names a metric the code does not emit, or the dashboard leaves
# one out). Notifications go to var.notification_channels.

locals {
  metric = "workload.googleapis.com"
  # One dashboard tile per metric the code emits, in telemetry.MetricDocs order.
  dashboard_metrics = {
    "messaging.client.consumed.messages"   = { title = "Deliveries by function and outcome (ack, suppressed, sent_back, retry, dead_lettered)", group_by = ["metric.label.oncesync_function", "metric.label.oncesync_delivery_outcome"] }
    "messaging.process.duration"           = { title = "Delivery duration", group_by = ["metric.label.oncesync_function"] }
    "oncesync.records.imported"            = { title = "Records imported", group_by = ["metric.label.oncesync_target"] }
    "oncesync.records.unchanged"           = { title = "Records unchanged (that version or a newer one already there)", group_by = [] }
    "oncesync.records.tombstoned"          = { title = "Records tombstoned (deleted in the source)", group_by = [] }
    "oncesync.leases.taken_over"           = { title = "Leases taken over (a crashed owner)", group_by = ["metric.label.oncesync_scope"] }
    "oncesync.fencing.rejections"          = { title = "Fenced writes refused (zombie owners stopped)", group_by = ["metric.label.oncesync_scope"] }
    "oncesync.dead_letters"                = { title = "Dead letters by reason", group_by = ["metric.label.oncesync_reason"] }
    "oncesync.source.requests"             = { title = "Source API requests by status", group_by = ["metric.label.http_response_status_code"] }
    "oncesync.source.api_budget.remaining" = { title = "Source API requests left today", group_by = [] }
    "oncesync.job.lag"                     = { title = "Job lag, tick to COMPLETED", group_by = [] }
    "oncesync.jobs.stuck"                  = { title = "Unfinished Jobs past the stuck bound", group_by = [] }
    "oncesync.chunks.in_flight"            = { title = "Chunks planned, not yet imported", group_by = [] }
    "oncesync.tenants.disconnected"        = { title = "Searches paused: tenant disconnected", group_by = [] }
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project
  display_name          = "${var.name_prefix}: dead letters recorded"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "ERROR"

  conditions {
    display_name = "a message or a source row was dead-lettered"
    condition_threshold {
      filter          = "metric.type=\"${local.metric}/oncesync.dead_letters\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.oncesync_function", "metric.label.oncesync_reason"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A message or a bad source row was set aside. List them with `oncesync-ops deadletters list`, fix the cause, replay with `oncesync-ops deadletters replay` (docs/operations.md, Dead letters)."
  }
}

resource "google_monitoring_alert_policy" "job_not_completed" {
  project               = var.project
  display_name          = "${var.name_prefix}: a Job is not COMPLETED within ${var.stuck_after_minutes + var.alert_job_grace_minutes} minutes"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "WARNING"

  conditions {
    display_name = "unfinished Jobs past the stuck bound, at every sweep for the grace period"
    condition_threshold {
      filter          = "metric.type=\"${local.metric}/oncesync.jobs.stuck\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "${var.alert_job_grace_minutes * 60}s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The recovery sweep keeps finding unfinished Jobs. `oncesync-ops audit tenant` lists them; `oncesync-ops audit job JOB` says what each waits for (a budget pause, a dead letter, a source that refuses the search)."
  }
}

resource "google_monitoring_alert_policy" "lease_takeovers" {
  project               = var.project
  display_name          = "${var.name_prefix}: lease takeovers above ${var.alert_takeovers_per_hour} an hour"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "WARNING"

  conditions {
    display_name = "leases taken over from crashed owners"
    condition_threshold {
      filter          = "metric.type=\"${local.metric}/oncesync.leases.taken_over\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_takeovers_per_hour
      duration        = "0s"
      aggregations {
        alignment_period     = "3600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Function instances are dying mid-work (timeouts, out of memory, crashes): the work is resumed, but look at the functions' 5xx and memory, and at the `lease_taken_over` log lines."
  }
}

resource "google_monitoring_alert_policy" "server_errors" {
  project               = var.project
  display_name          = "${var.name_prefix}: 5xx answers above ${var.alert_5xx_per_minute} a minute"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "WARNING"

  conditions {
    display_name = "deliveries answered 5xx (redelivered by Pub/Sub)"
    condition_threshold {
      filter          = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND metric.label.response_code_class=\"5xx\" AND resource.label.service_name=starts_with(\"${var.name_prefix}-\")"
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_5xx_per_minute
      duration        = "300s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A transient failure is answered 5xx so that Pub/Sub redelivers; a steady rate means a backend (Firestore, the source) is failing. The `retry` log lines say which."
  }
}

resource "google_monitoring_dashboard" "oncesync" {
  project = var.project
  dashboard_json = jsonencode({
    displayName = "${var.name_prefix}: imports, deliveries, duplicates, dead letters"
    mosaicLayout = {
      columns = 12
      tiles = [for i, name in keys(local.dashboard_metrics) : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = {
          title = local.dashboard_metrics[name].title
          xyChart = {
            dataSets = [{
              plotType = "LINE"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = "metric.type=\"${local.metric}/${name}\""
                  aggregation = {
                    alignmentPeriod    = "60s"
                    perSeriesAligner   = startswith(name, "oncesync.jobs") || endswith(name, "remaining") || endswith(name, "in_flight") ? "ALIGN_MEAN" : (endswith(name, "duration") || endswith(name, "lag") ? "ALIGN_DELTA" : "ALIGN_RATE")
                    crossSeriesReducer = endswith(name, "duration") || endswith(name, "lag") ? "REDUCE_PERCENTILE_95" : "REDUCE_SUM"
                    groupByFields      = local.dashboard_metrics[name].group_by
                  }
                }
              }
            }]
          }
        }
      }]
    }
  })
}

resource "google_monitoring_alert_policy" "tenant_disconnected" {
  project               = var.project
  display_name          = "${var.name_prefix}: a tenant is disconnected"
  combiner              = "OR"
  notification_channels = var.notification_channels
  severity              = "ERROR"

  conditions {
    display_name = "searches paused because a tenant's connection cannot authenticate"
    condition_threshold {
      filter          = "metric.type=\"${local.metric}/oncesync.tenants.disconnected\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A tenant's connection stopped working (consent revoked, user deactivated, app removed, a permission missing, an interrupted refresh). Its Jobs are paused, nothing is lost. `oncesync-ops tenants show TENANT` says why; fix it and run `oncesync-ops tenants connect TENANT …`: the next recovery sweep resumes every paused Job (docs/operations.md, Disconnected tenants)."
  }
}
