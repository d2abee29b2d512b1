# The source API token. Terraform creates the secret and its access binding but never the value:
# a google_secret_manager_secret_version would put the token in the state file. Add the value
# with gcloud (README, Deploy) before the first full apply.

resource "google_secret_manager_secret" "source_token" {
  project   = var.project
  secret_id = "${var.name_prefix}-source-token"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_iam_member" "expander_source_token" {
  project   = var.project
  secret_id = google_secret_manager_secret.source_token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.expander.email}"
}
