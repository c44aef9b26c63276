terraform {
  required_version = ">= 1.0"
  required_providers {
    sigil = {
      # Until the provider is published, install it with dev_overrides or a
      # filesystem mirror (see README.md).
      source = "sigil.dev/sigil/sigil"
    }
  }
}
