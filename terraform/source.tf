# The function source: one zip shared by the three functions, holding exactly what the Go
# buildpack builds: go.mod, go.sum and the Go files of every package of the module the root
# package (functions.go) needs, as `go list -deps .` lists them. source-files.json is that list,
# written by `make source-files`; the offline drift test (drift_test.go) fails when the zip would
# hold a file the functions do not build (the operator's code under shared/ops, the harness, a
# test) or lacks one they do. Nothing else a checkout accumulates reaches the upload or changes
# the zip's hash. The object name carries that hash: a change to the functions' code uploads a new
# object and redeploys them; an operator-tool change, a benchmark run or a README edit is a no-op.

locals {
  source_root  = "${path.module}/.."
  source_files = jsondecode(file("${path.module}/source-files.json"))
}

data "archive_file" "source" {
  type        = "zip"
  output_path = "${path.module}/.build/oncesync-source.zip"
  # No output_file_mode: archive 2.8.0 applies it only to source_dir and source_file, not to
  # source blocks (checked against the real provider); the zip is deterministic without it: the
  # same list and contents give the same hash.

  dynamic "source" {
    for_each = local.source_files
    content {
      filename = source.value
      content  = file("${local.source_root}/${source.value}")
    }
  }
}

resource "google_storage_bucket" "source" {
  project                     = var.project
  name                        = "${var.project}-${var.name_prefix}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true # holds only build inputs

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_object" "source" {
  name   = "oncesync-${data.archive_file.source.output_md5}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}

# Images go to a repository of our own, so the build identity can be given write access to
# exactly this repository instead of to every repository in the project.
resource "google_artifact_registry_repository" "functions" {
  project       = var.project
  location      = var.region
  repository_id = "${var.name_prefix}-functions"
  format        = "DOCKER"
  description   = "Images of the ${var.name_prefix} functions, written by Cloud Build."

  depends_on = [google_project_service.enabled]
}
