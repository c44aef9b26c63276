provider "sigil" {
  addr          = var.sigil_addr
  identity_file = var.sigil_identity_file
}

# What CI deployers may obtain: their own SPIFFE ID and AWS-audience JWTs.
resource "sigil_role" "deployer" {
  name        = "deployer"
  description = "CI deployers"
  spiffe_ids  = ["/ci/{{bot.name}}", "/svc/{{bot.traits.service}}"]
  audiences   = ["sts.amazonaws.com"]

  workload_identities = ["web-*"]
}

# The CI runner's machine identity.
resource "sigil_bot" "ci" {
  name  = "ci-runner"
  roles = [sigil_role.deployer.name]
  traits = {
    service = ["web"]
  }
}

# A single-use token the runner joins with once; afterwards it renews its identity.
resource "sigil_join_token" "ci" {
  name       = "ci-runner-bootstrap"
  bot        = sigil_bot.ci.name
  expires_at = var.token_expires_at
}

# SVIDs the runner's agent may issue to local workloads running as uid 1000.
resource "sigil_workload_identity" "web" {
  name      = "web-frontend"
  spiffe_id = "/svc/web/{{bot.name}}/uid-{{workload.unix.uid}}"
  dns_sans  = ["web.internal"]

  jwt_extra_claims = {
    team = "platform"
  }

  allow {
    attribute = "workload.unix.uid"
    values    = ["1000"]
  }
}

# Wiring Sigil into clouds: the trust bundle and OIDC issuer.
data "sigil_trust_bundle" "this" {}
data "sigil_oidc_issuer" "this" {}

# Incident response: `terraform apply -var lock_ci_runner=true` stops the runner
# at its next request (join, renewal, SVID), on every broker replica, and the
# refusals are audited with the reason. Setting it back to false deletes the lock.
resource "sigil_lock" "ci_incident" {
  count  = var.lock_ci_runner ? 1 : 0
  name   = "ci-runner-incident"
  reason = "runner credentials suspected leaked"

  target {
    bot = sigil_bot.ci.name
  }
}
