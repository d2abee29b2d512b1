# The function source: one zip of the module root, shared by the three functions. The Go
# buildpack builds only the root package (functions.go and the packages it imports), so tooling,
# fixtures and tests stay out of the upload. The object name carries the zip's hash: a code change
# uploads a new object and redeploys the functions; an unchanged tree is a no-op.

data "archive_file" "source" {
  type             = "zip"
  source_dir       = "${path.module}/.."
  output_path      = "${path.module}/.build/oncesync-source.zip"
  output_file_mode = "0644" # the same tree hashes the same on every machine

  excludes = [
    ".git", ".git/**",
    ".ci", ".ci/**",
    "harness", "harness/**",
    "terraform", "terraform/**",
    "fixtures", "fixtures/**",
    "**/testdata", "**/testdata/**",
    "**/*_test.go",
    "oncesync", # the operator binary `go build ./harness/cmd/oncesync` leaves in the root
  ]
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
