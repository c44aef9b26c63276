//! `sigil join --method iam|ec2|tpm|gcp|azure`: the platform-attested joins, run on the
//! machine that joins (AWS credentials, the local TPM, the GCE metadata server).

use sigil_core::domain::Method;
use sigil_agent::join::client::{self, ClientJoinError, JoinParams};
use anyhow::{anyhow, Context, Result};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// Method-specific options from the command line.
#[derive(Debug, Default)]
pub(crate) struct CloudOpts {
    /// iam: the broker address as dialed (its host is signed into the request).
    pub broker_addr: String,
    /// iam: signing region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's region, else us-east-1).
    pub aws_region: Option<String>,
    /// iam: STS endpoint URL (default: the regional AWS endpoint).
    pub sts_endpoint: Option<String>,
    /// tpm: TCTI (default: TPM2TOOLS_TCTI, TCTI, else device:/dev/tpmrm0).
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    pub tcti: Option<String>,
    /// gcp: audience of the instance identity token (the join token's config.audience);
    /// azure: resource of the managed identity token (default https://management.azure.com/).
    pub audience: Option<String>,
    /// gcp/azure/ec2: metadata server base URL (default: GCE_METADATA_HOST, else
    /// metadata.google.internal; azure: http://169.254.169.254; ec2:
    /// AWS_EC2_METADATA_SERVICE_ENDPOINT, else http://169.254.169.254).
    pub metadata_url: Option<String>,
}

fn plain(e: ClientJoinError) -> anyhow::Error {
    anyhow!(e.to_string())
}

/// Joins with `method` and returns the broker's answer.
pub(crate) async fn join(cl: &mut SigilClient<Channel>, method: Method, token_name: Option<&str>, o: &CloudOpts, csr: Vec<u8>, ttl: i64) -> Result<pb::IdentityResponse> {
    let token_name = token_name.with_context(|| format!("--token-name is required for --method {method}"))?.to_string();
    let params = JoinParams { token_name, csr, ttl_seconds: ttl };
    match method {
        Method::Iam => {
            let creds = client::aws_chain::CachedCredentials::standard().get().await.map_err(|e| anyhow!("{e}"))?;
            let target = client::aws_iam::StsTarget::resolve(o.aws_region.clone(), o.sts_endpoint.clone(), &client::aws_chain::Env::process());
            client::aws_iam::join(cl, &o.broker_addr, &params, &creds.credentials, &target).await.map_err(plain)
        }
        #[cfg(feature = "tpm")]
        Method::Tpm => {
            let device = match &o.tcti {
                Some(t) => client::tpm::TpmDevice::new(t),
                None => client::tpm::TpmDevice::from_env(),
            };
            client::tpm::join(cl, &params, &device).await.map_err(plain)
        }
        #[cfg(not(feature = "tpm"))]
        Method::Tpm => Err(anyhow!("this sigil was built without the `tpm` feature (cargo build --features tpm; needs libtss2-dev)")),
        Method::Gcp => {
            let audience = o.audience.as_deref().context("--audience is required for --method gcp (the join token's config.audience)")?;
            let base = o.metadata_url.clone().unwrap_or_else(client::gcp::metadata_base_from_env);
            client::gcp::join(cl, &params, &base, audience).await.map_err(plain)
        }
        Method::Azure => {
            let mut imds = client::azure::Imds::default();
            if let Some(u) = &o.metadata_url {
                imds.base = u.clone();
            }
            if let Some(a) = &o.audience {
                imds.resource = a.clone();
            }
            client::azure::join(cl, &params, &imds).await.map_err(plain)
        }
        Method::Ec2 => {
            let imds = match &o.metadata_url {
                Some(u) => client::imds::Imds::new(u),
                None => client::imds::Imds::from_env().context("AWS_EC2_METADATA_DISABLED is set: --method ec2 needs the instance metadata service")?,
            };
            client::ec2::join(cl, &params, &imds).await.map_err(plain)
        }
        other => Err(anyhow!("join method {:?} is not a platform-attested method", other.name())),
    }
}
