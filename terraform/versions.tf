# Terraform and provider versions. Commit the .terraform.lock.hcl that the first
# `terraform init` writes, so every apply uses the same provider builds.
terraform {
  # 1.9 is the first release whose variable validations may refer to other variables
  # (lease_minutes is checked against the function timeouts).
  required_version = ">= 1.9.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 8.0" # validate and plan -refresh=false pass with 8.0.0 built from source
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.8" # the schema the offline checks hold the configuration against
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region

  default_labels = {
    app = var.name_prefix
  }
}
