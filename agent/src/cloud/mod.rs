//! Cloud federation: hand SVIDs to AWS, Azure and GCP in the forms their SDKs and
//! token services accept, and check an issuer against each cloud's rules.
//!
//! - [`aws_web_identity`]: STS AssumeRoleWithWebIdentity with a JWT-SVID; AWS config profiles.
//! - [`sigv4_x509`] + [`roles_anywhere`]: IAM Roles Anywhere CreateSession signed with an X.509-SVID.
//! - [`aws_credentials`]: credentials file and `credential_process` JSON.
//! - [`azure`]: token file for `AZURE_FEDERATED_TOKEN_FILE`; client-assertion exchange.
//! - [`gcp`]: `external_account` configuration (file / executable source, impersonation); STS exchange.
//! - [`verify`]: `sigil federation verify` rules.
//! - [`setup`]: what each cloud needs configured (text and Terraform).
//!
//! Every exchange takes an [`http::HttpClient`] and plain parameter structs, so the
//! agent's outputs and the CLI share one implementation (docs/cloud/README.md).

pub mod aws_credentials;
pub mod aws_web_identity;
pub mod azure;
pub mod files;
pub mod gcp;
pub mod http;
pub mod oauth;
pub mod roles_anywhere;
pub mod setup;
pub mod sigv4_x509;
pub mod verify;
