output "join_token_name" {
  value = sigil_join_token.ci.name
}

# Hand the secret to the runner's bootstrap without printing it:
#   SIGIL_TOKEN=$(terraform output -raw join_token_secret) sigil join --ca-file tls-ca.pem --out bot.identity
output "join_token_secret" {
  value     = sigil_join_token.ci.secret
  sensitive = true
}

output "oidc_issuer_url" {
  value = data.sigil_oidc_issuer.this.issuer_url
}

output "trust_domain" {
  value = data.sigil_trust_bundle.this.trust_domain
}
