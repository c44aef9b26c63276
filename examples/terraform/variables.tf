variable "sigil_addr" {
  description = "Broker address, HOST:PORT."
  type        = string
}

variable "sigil_identity_file" {
  description = "Admin identity file, e.g. .data/sigil/admin.identity from `sigil server --dev`."
  type        = string
}

variable "token_expires_at" {
  description = "Expiry of the bootstrap join token, Unix seconds."
  type        = number
  default     = 1893456000 # 2030-01-01T00:00:00Z
}

variable "lock_ci_runner" {
  description = "Incident switch: true locks the CI runner (joins, renewals and SVIDs refused on every replica); false lifts the lock."
  type        = bool
  default     = false
}
