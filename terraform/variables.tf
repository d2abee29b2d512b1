# Inputs. Durations are whole numbers in the unit their name says; the functions receive them
# as Go durations ("15m", "192h"). Defaults match shared/config's production defaults, and the
# drift test loads the rendered environment through config.Load, so a value the code would
# reject fails in CI rather than at cold start.

# --- Where ---------------------------------------------------------------------------------

variable "project" {
  description = "Google Cloud project ID that holds everything: functions, topics, Firestore, the secret."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project))
    error_message = "project must be a project ID (6-30 characters: lower-case letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the functions, their Eventarc triggers, the Cloud Scheduler job, the source bucket and the image repository."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1 or us-central1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (functions, topics, service accounts, bucket). Keep it short: service account IDs are limited to 30 characters."
  type        = string
  default     = "oncesync"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,10}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-12 characters: a lower-case letter, then letters, digits or hyphens, not ending in a hyphen."
  }
}

# --- Firestore -----------------------------------------------------------------------------

variable "firestore_database" {
  description = "Firestore database ID. \"(default)\" unless the project's default database is used by something else."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database))
    error_message = "firestore_database must be \"(default)\" or 4-63 characters of lower-case letters, digits and hyphens."
  }
}

variable "firestore_location" {
  description = "Firestore location: a region (europe-west1) or multi-region (eur3, nam5). Null means the same as region. Cannot be changed after creation."
  type        = string
  default     = null
}

variable "firestore_delete_protection" {
  description = "Protect the Firestore database: delete protection on, and `terraform destroy` only forgets it (deletion_policy ABANDON). Set false before a destroy that must delete the data too."
  type        = bool
  default     = true
}

# --- Schedule ------------------------------------------------------------------------------

variable "schedule" {
  description = "Cron schedule of the tick (Cloud Scheduler unix-cron syntax). Each tick creates one Job per enabled sync setting."
  type        = string
  default     = "*/15 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.schedule))) == 5
    error_message = "schedule must be a five-field unix-cron expression, e.g. \"*/15 * * * *\"."
  }
}

variable "time_zone" {
  description = "IANA time zone the schedule is read in."
  type        = string
  default     = "Etc/UTC"
}

variable "scheduler_paused" {
  description = "Create the Cloud Scheduler job paused: nothing runs until you run a tick by hand or resume the job."
  type        = bool
  default     = false
}

# --- Source API ----------------------------------------------------------------------------

variable "source_kind" {
  description = "The connector settings are checked against (each tenant's connection names its own)."
  type        = string
  default     = "salesforce"

  validation {
    condition     = contains(["salesforce"], var.source_kind)
    error_message = "source_kind must be a connector oncesync has: salesforce."
  }
}

variable "page_size" {
  description = "Records per source page the expander requests."
  type        = number
  default     = 2000

  validation {
    condition     = var.page_size >= 200 && var.page_size <= 2000 && floor(var.page_size) == var.page_size
    error_message = "page_size must be a whole number in Salesforce's 200..2000."
  }
}

variable "source_timeout_seconds" {
  description = "Deadline of one source page request, in seconds."
  type        = number
  default     = 60

  validation {
    condition     = var.source_timeout_seconds >= 1 && floor(var.source_timeout_seconds) == var.source_timeout_seconds
    error_message = "source_timeout_seconds must be a positive whole number."
  }
}

# --- Work sizing ---------------------------------------------------------------------------

variable "chunk_size" {
  description = "Records per chunk for sync settings that do not set their own chunk size."
  type        = number
  default     = 500

  validation {
    condition     = var.chunk_size >= 1 && var.chunk_size <= 5000 && floor(var.chunk_size) == var.chunk_size
    error_message = "chunk_size must be a whole number in 1..5000."
  }
}

variable "max_chunk_bytes" {
  description = "Largest encoded chunk document the expander writes, in bytes (Firestore's document limit is 1 MiB)."
  type        = number
  default     = 800000

  validation {
    condition     = var.max_chunk_bytes >= 10000 && var.max_chunk_bytes <= 1000000 && floor(var.max_chunk_bytes) == var.max_chunk_bytes
    error_message = "max_chunk_bytes must be a whole number in 10000..1000000."
  }
}

variable "sweep_limit" {
  description = "Unfinished Jobs per page of the scheduler's recovery sweep (each page one delivery; a tick's sweep visits every page)."
  type        = number
  default     = 200

  validation {
    condition     = var.sweep_limit >= 1 && var.sweep_limit <= 500 && floor(var.sweep_limit) == var.sweep_limit
    error_message = "sweep_limit must be a whole number from 1 to 500."
  }
}

variable "tick_unit_size" {
  description = "Sync settings per unit of a tick: each unit is one scheduler delivery, creating its Jobs 8 at a time."
  type        = number
  default     = 100

  validation {
    condition     = var.tick_unit_size >= 1 && var.tick_unit_size <= 1000 && floor(var.tick_unit_size) == var.tick_unit_size
    error_message = "tick_unit_size must be a whole number from 1 to 1000."
  }
}

variable "bulk_after_records" {
  description = "A Job whose window counts more records than this is bulk: its chunks go to the bulk lane (its own topic and ImporterBulk function), so small tenants' Jobs never queue behind it. 0: one lane for every Job."
  type        = number
  default     = 20000

  validation {
    condition     = var.bulk_after_records >= 0 && floor(var.bulk_after_records) == var.bulk_after_records
    error_message = "bulk_after_records must be a whole number >= 0."
  }
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel IDs (projects/P/notificationChannels/N) the alert policies notify; empty: the alerts open incidents but notify no one."
  type        = list(string)
  default     = []
}

variable "alert_job_grace_minutes" {
  description = "How long Jobs may stay unfinished past stuck_after_minutes before the Job alert fires."
  type        = number
  default     = 60
}

variable "alert_takeovers_per_hour" {
  description = "Lease takeovers (crashed owners) per hour above which the takeover alert fires."
  type        = number
  default     = 20
}

variable "alert_5xx_per_minute" {
  description = "5xx answers of the functions per minute, sustained 5 minutes, above which the error alert fires."
  type        = number
  default     = 5
}

variable "trace_sample_ratio" {
  description = "Share of ticks whose trace (every delivery of the three functions for that tick, duplicates included) goes to Cloud Trace, 0..1; 0 turns tracing off."
  type        = number
  default     = 1

  validation {
    condition     = var.trace_sample_ratio >= 0 && var.trace_sample_ratio <= 1
    error_message = "trace_sample_ratio must be between 0 and 1."
  }
}

variable "window_lag_seconds" {
  description = "How far behind the tick a Job's window ends, in seconds, so records that commit after their SystemModstamp are not missed. At least the longest transaction in the org (Salesforce's limit: 10 minutes); more delays every import by as much."
  type        = number
  default     = 600

  validation {
    condition     = var.window_lag_seconds >= 0 && floor(var.window_lag_seconds) == var.window_lag_seconds
    error_message = "window_lag_seconds must be a whole number, zero or more."
  }
}

# --- Leases and retention ------------------------------------------------------------------

variable "lease_minutes" {
  description = "In-progress lease on an idempotency key, in minutes. Must outlast every function's timeout, or a redelivery could take over work that is still running."
  type        = number
  default     = 15

  validation {
    condition = (
      floor(var.lease_minutes) == var.lease_minutes &&
      var.lease_minutes * 60 > max(var.scheduler.timeout_seconds, var.expander.timeout_seconds, var.importer.timeout_seconds, var.importer_bulk.timeout_seconds)
    )
    error_message = "lease_minutes must be a whole number of minutes longer than every function's timeout_seconds."
  }
}

variable "stuck_after_minutes" {
  description = "Age, in minutes, after which the scheduler's recovery sweep re-publishes a Job's unfinished work."
  type        = number
  default     = 20

  validation {
    condition     = var.stuck_after_minutes >= 1 && floor(var.stuck_after_minutes) == var.stuck_after_minutes
    error_message = "stuck_after_minutes must be a positive whole number."
  }
}

variable "max_delivery_age_minutes" {
  description = "Application-level dead-letter cutoff, in minutes: a message still failing this long after it was published is recorded as a dead letter and acknowledged. Must stay below Eventarc's 24 h retention, or Pub/Sub drops the message first."
  type        = number
  default     = 1380

  validation {
    condition     = var.max_delivery_age_minutes >= 1 && var.max_delivery_age_minutes <= 1410 && floor(var.max_delivery_age_minutes) == var.max_delivery_age_minutes
    error_message = "max_delivery_age_minutes must be a whole number in 1..1410 (23.5 h): the last retries before 24 h need room at the 10-minute maximum backoff."
  }
}

variable "key_retention_hours" {
  description = "How long idempotency keys live before Firestore's TTL policy deletes them, in hours. Must outlive both the lease and every redelivery window."
  type        = number
  default     = 192

  validation {
    condition = (
      floor(var.key_retention_hours) == var.key_retention_hours &&
      var.key_retention_hours * 60 > var.lease_minutes &&
      var.key_retention_hours * 60 > var.max_delivery_age_minutes
    )
    error_message = "key_retention_hours must be a whole number of hours longer than lease_minutes and max_delivery_age_minutes."
  }
}

variable "dead_letter_retention_days" {
  description = "How long the dead-letter subscription (and topic) keep messages, acknowledged or not, for inspection and replay."
  type        = number
  default     = 31

  validation {
    condition     = var.dead_letter_retention_days >= 1 && var.dead_letter_retention_days <= 31 && floor(var.dead_letter_retention_days) == var.dead_letter_retention_days
    error_message = "dead_letter_retention_days must be a whole number in 1..31 (Pub/Sub's maximum)."
  }
}

# --- Function sizing -----------------------------------------------------------------------
# One object per function. Any attribute left out takes the default shown. Event-driven
# functions time out after at most 540 s; a concurrency above 1 needs at least one whole CPU.

variable "scheduler" {
  description = "Scheduler function sizing: timeout_seconds (1-540), memory (e.g. 256Mi), cpu (null: derived from memory), min_instances, max_instances (a tick's units of settings and sweep pages run on this many instances at once), concurrency (requests per instance)."
  type = object({
    timeout_seconds = optional(number, 300)
    memory          = optional(string, "256Mi")
    cpu             = optional(string)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 10)
    concurrency     = optional(number, 1)
  })
  default = {}

  validation {
    condition = (
      var.scheduler.timeout_seconds >= 1 && var.scheduler.timeout_seconds <= 540 &&
      can(regex("^[0-9]+(Mi|Gi|M|G)$", var.scheduler.memory)) &&
      var.scheduler.min_instances >= 0 && var.scheduler.max_instances >= 1 &&
      var.scheduler.min_instances <= var.scheduler.max_instances &&
      var.scheduler.concurrency >= 1 && var.scheduler.concurrency <= 1000 &&
      (var.scheduler.concurrency == 1 || try(tonumber(var.scheduler.cpu) >= 1, false))
    )
    error_message = "scheduler: timeout_seconds 1..540, memory like 256Mi, 0 <= min_instances <= max_instances, concurrency 1..1000, and cpu >= 1 when concurrency > 1."
  }
}

variable "expander" {
  description = "Expander function sizing: timeout_seconds (1-540), memory (e.g. 512Mi), cpu (null: derived from memory), min_instances, max_instances, concurrency (requests per instance)."
  type = object({
    timeout_seconds = optional(number, 540)
    memory          = optional(string, "512Mi")
    cpu             = optional(string)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 10)
    concurrency     = optional(number, 1)
  })
  default = {}

  validation {
    condition = (
      var.expander.timeout_seconds >= 1 && var.expander.timeout_seconds <= 540 &&
      can(regex("^[0-9]+(Mi|Gi|M|G)$", var.expander.memory)) &&
      var.expander.min_instances >= 0 && var.expander.max_instances >= 1 &&
      var.expander.min_instances <= var.expander.max_instances &&
      var.expander.concurrency >= 1 && var.expander.concurrency <= 1000 &&
      (var.expander.concurrency == 1 || try(tonumber(var.expander.cpu) >= 1, false))
    )
    error_message = "expander: timeout_seconds 1..540, memory like 512Mi, 0 <= min_instances <= max_instances, concurrency 1..1000, and cpu >= 1 when concurrency > 1."
  }
}

variable "importer" {
  description = "Importer function sizing: timeout_seconds (1-540), memory (e.g. 512Mi), cpu (null: derived from memory), min_instances, max_instances, concurrency (requests per instance)."
  type = object({
    timeout_seconds = optional(number, 300)
    memory          = optional(string, "512Mi")
    cpu             = optional(string)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 20)
    concurrency     = optional(number, 1)
  })
  default = {}

  validation {
    condition = (
      var.importer.timeout_seconds >= 1 && var.importer.timeout_seconds <= 540 &&
      can(regex("^[0-9]+(Mi|Gi|M|G)$", var.importer.memory)) &&
      var.importer.min_instances >= 0 && var.importer.max_instances >= 1 &&
      var.importer.min_instances <= var.importer.max_instances &&
      var.importer.concurrency >= 1 && var.importer.concurrency <= 1000 &&
      (var.importer.concurrency == 1 || try(tonumber(var.importer.cpu) >= 1, false))
    )
    error_message = "importer: timeout_seconds 1..540, memory like 512Mi, 0 <= min_instances <= max_instances, concurrency 1..1000, and cpu >= 1 when concurrency > 1."
  }
}

variable "importer_bulk" {
  description = "ImporterBulk function sizing (the bulk lane's importer), as importer: timeout_seconds (1-540), memory, cpu (null: derived from memory), min_instances, max_instances, concurrency. Its max_instances bounds what bulk Jobs take of Firestore at once; the standard lane keeps importer's."
  type = object({
    timeout_seconds = optional(number, 300)
    memory          = optional(string, "512Mi")
    cpu             = optional(string)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 20)
    concurrency     = optional(number, 1)
  })
  default = {}

  validation {
    condition = (
      var.importer_bulk.timeout_seconds >= 1 && var.importer_bulk.timeout_seconds <= 540 &&
      can(regex("^[0-9]+(Mi|Gi|M|G)$", var.importer_bulk.memory)) &&
      var.importer_bulk.min_instances >= 0 && var.importer_bulk.max_instances >= 1 &&
      var.importer_bulk.min_instances <= var.importer_bulk.max_instances &&
      var.importer_bulk.concurrency >= 1 && var.importer_bulk.concurrency <= 1000 &&
      (var.importer_bulk.concurrency == 1 || try(tonumber(var.importer_bulk.cpu) >= 1, false))
    )
    error_message = "importer_bulk: timeout_seconds 1..540, memory like 512Mi, 0 <= min_instances <= max_instances, concurrency 1..1000, and cpu >= 1 when concurrency > 1."
  }
}

# --- Optional ------------------------------------------------------------------------------

variable "legacy_pubsub_token_creator" {
  description = "Grant the Pub/Sub service agent Token Creator on each trigger service account. Only projects whose Pub/Sub service agent was enabled on or before 2021-04-08 need it to mint the push tokens Eventarc uses."
  type        = bool
  default     = false
}

variable "expansion_budget_percent" {
  description = "Share of the expander's timeout_seconds, in percent, after which one expansion delivery checkpoints and hands the rest of the search to a continuation message. What runs after it (one source page, one chunk write, the wait for its messages) must fit in the rest."
  type        = number
  default     = 50
  validation {
    condition     = var.expansion_budget_percent >= 1 && var.expansion_budget_percent <= 80 && floor(var.expansion_budget_percent) == var.expansion_budget_percent
    error_message = "expansion_budget_percent must be a whole number from 1 to 80."
  }
}

variable "slice_rows" {
  description = "Rows one slice of a Job's window aims at. The expander measures the window with the source's aggregate query and cuts a larger one into slices by time, each searched by its own delivery, in parallel. 0 never slices."
  type        = number
  default     = 20000
  validation {
    condition     = var.slice_rows >= 0 && floor(var.slice_rows) == var.slice_rows
    error_message = "slice_rows must be a whole number, 0 or more."
  }
}

variable "max_slices" {
  description = "Most slices one Job's window is cut into."
  type        = number
  default     = 32
  validation {
    condition     = var.max_slices >= 1 && var.max_slices <= 999 && floor(var.max_slices) == var.max_slices
    error_message = "max_slices must be a whole number from 1 to 999."
  }
}

variable "search_concurrency" {
  description = "Searches one tenant runs at once, for tenants whose document sets no searchConcurrency, shared by the Jobs of its enabled settings (at least one each). Salesforce limits the long-running queries an org runs at once (25 by default, shared with every other integration)."
  type        = number
  default     = 4
  validation {
    condition     = var.search_concurrency >= 1 && var.search_concurrency <= 10 && floor(var.search_concurrency) == var.search_concurrency
    error_message = "search_concurrency must be a whole number in 1..10: Salesforce runs at most 10 long-running queries of an org at once."
  }
}

variable "parallel_search_after_ms" {
  description = "A Job's slices are searched in parallel only when the first source page took at least this many milliseconds to arrive. A faster source is searched one slice after another: parallel searches would only compete with the imports for Firestore. 0 always searches in parallel."
  type        = number
  default     = 300
  validation {
    condition     = var.parallel_search_after_ms >= 0 && floor(var.parallel_search_after_ms) == var.parallel_search_after_ms
    error_message = "parallel_search_after_ms must be a whole number, 0 or more."
  }
}

variable "operators" {
  description = "Principals (user:…, group:…, serviceAccount:…) who connect tenants with oncesync-ops: they may read the encrypted credentials keyset and decrypt it with the KMS key. They also need Firestore access (roles/datastore.user) to write connections."
  type        = list(string)
  default     = []
}

variable "token_max_age_minutes" {
  description = "A tenant's access token this old is refreshed before it is used: under the shortest session timeout of the tenants' orgs (15 minutes is Salesforce's shortest). A token refused sooner is refreshed at once."
  type        = number
  default     = 15
  validation {
    condition     = var.token_max_age_minutes >= 1 && var.token_max_age_minutes <= 1440 && floor(var.token_max_age_minutes) == var.token_max_age_minutes
    error_message = "token_max_age_minutes must be a whole number in 1..1440."
  }
}
