# Tenants' credentials (#23): each tenant's connection is stored in Firestore
# (connections/{tenant}) with its credential — a JWT bearer flow's private key or a refresh
# token — sealed with envelope encryption: a tink AEAD keyset (the data key) that is itself
# encrypted by this Cloud KMS key. The encrypted keyset is a Secret Manager secret mounted into the
# expander only; it is useless without the KMS key, which only the expander and the operators'
# principals may use to decrypt. Create the keyset once, before the first full apply:
#
#   bin/oncesync-ops keyset create --kms-key "gcp-kms://$(terraform output -raw credentials_kms_key)" \
#     | gcloud secrets versions add oncesync-credentials-keyset --data-file=-
#
# (docs/deploy.md, "Connect the first tenant".) Terraform never holds the keyset or a credential.

resource "google_kms_key_ring" "credentials" {
  project  = var.project
  name     = "${var.name_prefix}-credentials"
  location = var.region

  depends_on = [google_project_service.enabled]
}

resource "google_kms_crypto_key" "credentials" {
  name            = "keyset"
  key_ring        = google_kms_key_ring.credentials.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days: old versions still decrypt the keyset they encrypted
}

# The expander opens tenants' credentials: it decrypts the keyset, nothing else.
resource "google_kms_crypto_key_iam_member" "expander_credentials" {
  crypto_key_id = google_kms_crypto_key.credentials.id
  role          = "roles/cloudkms.cryptoKeyDecrypter"
  member        = "serviceAccount:${google_service_account.expander.email}"
}

# Operators connect tenants (oncesync-ops tenants connect): they seal credentials, so they may
# decrypt the keyset; creating it needs encrypt once (roles/cloudkms.cryptoKeyEncrypterDecrypter,
# granted by hand for that step).
resource "google_kms_crypto_key_iam_member" "operators_credentials" {
  for_each      = toset(var.operators)
  crypto_key_id = google_kms_crypto_key.credentials.id
  role          = "roles/cloudkms.cryptoKeyDecrypter"
  member        = each.value
}

resource "google_secret_manager_secret" "credentials_keyset" {
  project   = var.project
  secret_id = "${var.name_prefix}-credentials-keyset"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

resource "google_secret_manager_secret_iam_member" "expander_credentials_keyset" {
  project   = var.project
  secret_id = google_secret_manager_secret.credentials_keyset.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.expander.email}"
}

resource "google_secret_manager_secret_iam_member" "operators_credentials_keyset" {
  for_each  = toset(var.operators)
  project   = var.project
  secret_id = google_secret_manager_secret.credentials_keyset.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
