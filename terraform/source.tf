# The function source: one zip shared by the three functions, holding exactly what the Go
# buildpack builds: the root package (functions.go), functions/ and shared/ (the packages it
# imports), go.mod and go.sum. It is an allow-list, so nothing else a checkout accumulates (bin/,
# docs/, the harness, test files and their data) reaches the upload or changes the zip's hash.
# The object name carries that hash: a code change uploads a new object and redeploys the
# functions; a rebuild, a benchmark run or a README edit is a no-op. The offline drift test
# (drift_test.go) fails when the list holds anything else, or lacks a file the build reads.

locals {
  source_root = "${path.module}/.."
  source_files = sort([
    for f in setunion(
      fileset(local.source_root, "*.go"),
      fileset(local.source_root, "functions/**/*.go"),
      fileset(local.source_root, "shared/**/*.go"),
      ["go.mod", "go.sum"],
    ) : f if !endswith(f, "_test.go") && !strcontains("/${f}", "/testdata/")
  ])
}

data "archive_file" "source" {
  type             = "zip"
  output_path      = "${path.module}/.build/oncesync-source.zip"
  output_file_mode = "0644" # the same tree hashes the same on every machine

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
