# The tick. The message body is an empty JSON object: the Scheduler function takes the tick's
# identity from the Pub/Sub message ID and its time from the publish time. Cloud Scheduler
# publishes as its own service agent, which may publish to topics of its project.

resource "google_cloud_scheduler_job" "tick" {
  project     = var.project
  region      = var.region
  name        = "${var.name_prefix}-tick"
  description = "Starts one ${var.name_prefix} import round: one Job per enabled sync setting."
  schedule    = var.schedule
  time_zone   = var.time_zone
  paused      = var.scheduler_paused

  pubsub_target {
    topic_name = google_pubsub_topic.ticks.id
    data       = base64encode("{}")
  }

  depends_on = [google_project_service.enabled]
}
