//! Agent side of the `tpm` join, with tpm2-tss through `tss-esapi`.
//!
//! Works without a resource manager (e.g. straight to swtpm or `/dev/tpm0`):
//! every transient object and session this code creates is flushed before the
//! context is dropped, because the TPM has only a few slots. The EK is
//! recreated from the standard template (same seed, same key) in each step
//! instead of being kept loaded between `BeginJoin` and `Join`.

use super::{begin, finish, ClientJoinError, JoinParams};
use sigil_core::join_wire::tpm::{BeginPayload, ChallengePayload};

const METHOD: &str = sigil_core::domain::Method::Tpm.name();
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::str::FromStr;
use tonic::transport::Channel;
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, Private, Public, SymmetricDefinition};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, TctiNameConf};

const EK_ALG: AsymmetricAlgorithmSelection = AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);

/// Which TPM to talk to, as a TCTI string: `device:/dev/tpmrm0`,
/// `swtpm:host=127.0.0.1,port=2321`, `mssim:...`.
#[derive(Debug, Clone)]
pub struct TpmDevice {
    tcti: String,
}

/// The TPM's endorsement: EK public area and, if provisioned, its certificate.
#[derive(Debug, Clone)]
pub struct Endorsement {
    /// EK `TPMT_PUBLIC`.
    pub ek_public: Vec<u8>,
    /// EK certificate (DER) from NV index 0x01c00002, when present.
    pub ek_certificate: Option<Vec<u8>>,
}

/// An attestation key created under the EK: its public area and its private
/// blob (wrapped by the TPM; useless outside it).
#[derive(Clone)]
pub struct AttestationKey {
    /// `TPMT_PUBLIC`.
    pub public: Vec<u8>,
    private: Vec<u8>,
}

impl std::fmt::Debug for AttestationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationKey").field("public_len", &self.public.len()).finish_non_exhaustive()
    }
}

fn tpm_err(what: &str) -> impl Fn(tss_esapi::Error) -> ClientJoinError + '_ {
    move |e| ClientJoinError::Tpm(format!("{what}: {e}"))
}

impl TpmDevice {
    /// A TPM reached through `tcti`.
    pub fn new(tcti: &str) -> Self {
        Self { tcti: tcti.into() }
    }

    /// `TPM2TOOLS_TCTI` or `TCTI` from the environment, else `device:/dev/tpmrm0`.
    pub fn from_env() -> Self {
        let t = std::env::var("TPM2TOOLS_TCTI").or_else(|_| std::env::var("TCTI")).unwrap_or_else(|_| "device:/dev/tpmrm0".into());
        Self::new(&t)
    }

    fn context(&self) -> Result<Context, ClientJoinError> {
        let conf = TctiNameConf::from_str(&self.tcti).map_err(tpm_err("TCTI configuration"))?;
        Context::new(conf).map_err(tpm_err("opening the TPM"))
    }

    /// Runs `f` with the EK loaded, flushing the EK afterwards whatever happens.
    fn with_ek<T>(&self, f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, ClientJoinError>) -> Result<T, ClientJoinError> {
        let mut ctx = self.context()?;
        let ek = ek::create_ek_object_2(&mut ctx, EK_ALG, None).map_err(tpm_err("creating the EK"))?;
        let out = f(&mut ctx, ek);
        let flushed = ctx.flush_context(ObjectHandle::from(ek)).map_err(tpm_err("flushing the EK"));
        let out = out?;
        flushed?;
        Ok(out)
    }

    /// Reads the EK public area and certificate.
    pub fn endorsement(&self) -> Result<Endorsement, ClientJoinError> {
        let ek_public = self.with_ek(|ctx, ek| {
            let (public, _, _) = ctx.read_public(ek).map_err(tpm_err("reading the EK"))?;
            public.marshall().map_err(tpm_err("encoding the EK"))
        })?;
        let mut ctx = self.context()?;
        let ek_certificate = ek::retrieve_ek_pubcert(&mut ctx, EK_ALG).ok();
        Ok(Endorsement { ek_public, ek_certificate })
    }

    /// Creates a restricted RSA signing attestation key under the EK.
    pub fn create_ak(&self) -> Result<AttestationKey, ClientJoinError> {
        self.with_ek(|ctx, ek| {
            let r = ak::create_ak_2(ctx, ek, HashingAlgorithm::Sha256, EK_ALG, SignatureSchemeAlgorithm::RsaSsa, None, None)
                .map_err(tpm_err("creating the AK"))?;
            Ok(AttestationKey { public: r.out_public.marshall().map_err(tpm_err("encoding the AK"))?, private: r.out_private.value().to_vec() })
        })
    }

    /// `TPM2_ActivateCredential` with `ak` and the EK on the broker's challenge.
    pub fn activate(&self, ak_key: &AttestationKey, challenge: &ChallengePayload) -> Result<Vec<u8>, ClientJoinError> {
        let decode = |f: &str, s: &str| B64.decode(s).map_err(|_| ClientJoinError::Tpm(format!("broker challenge field {f} is not base64")));
        let id_object = IdObject::try_from(decode("id_object", &challenge.id_object)?).map_err(tpm_err("credential blob"))?;
        let secret = EncryptedSecret::try_from(decode("encrypted_secret", &challenge.encrypted_secret)?).map_err(tpm_err("encrypted secret"))?;
        let public = Public::unmarshall(&ak_key.public).map_err(tpm_err("AK public"))?;
        let private = Private::try_from(ak_key.private.clone()).map_err(tpm_err("AK private"))?;
        self.with_ek(|ctx, ek| {
            let loaded = ak::load_ak(ctx, ek, None, private, public).map_err(tpm_err("loading the AK"))?;
            let out = activate_with(ctx, loaded, ek, id_object, secret);
            let flushed = ctx.flush_context(ObjectHandle::from(loaded)).map_err(tpm_err("flushing the AK"));
            let out = out?;
            flushed?;
            Ok(out)
        })
    }
}

/// The AK is authorized by an HMAC session, the EK by a policy session
/// satisfying its PolicySecret(endorsement) policy. Both sessions are flushed.
fn activate_with(ctx: &mut Context, ak_handle: KeyHandle, ek: KeyHandle, id_object: IdObject, secret: EncryptedSecret) -> Result<Vec<u8>, ClientJoinError> {
    let hmac = start_session(ctx, SessionType::Hmac)?;
    let policy = match start_session(ctx, SessionType::Policy) {
        Ok(p) => p,
        Err(e) => {
            let _ = ctx.flush_context(SessionHandle::from(hmac).into());
            return Err(e);
        }
    };
    let result = (|| {
        let policy_session = PolicySession::try_from(policy).map_err(tpm_err("policy session"))?;
        ctx.execute_with_session(Some(hmac), |ctx| {
            ctx.policy_secret(policy_session, AuthHandle::Endorsement, Default::default(), Default::default(), Default::default(), None)
        })
        .map_err(tpm_err("PolicySecret(endorsement)"))?;
        ctx.set_sessions((Some(hmac), Some(policy), None));
        let r = ctx.activate_credential(ak_handle, ek, id_object, secret).map_err(tpm_err("ActivateCredential"));
        ctx.clear_sessions();
        r.map(|d| d.value().to_vec())
    })();
    let _ = ctx.flush_context(SessionHandle::from(hmac).into());
    let _ = ctx.flush_context(SessionHandle::from(policy).into());
    result
}

fn start_session(ctx: &mut Context, kind: SessionType) -> Result<AuthSession, ClientJoinError> {
    let s = ctx
        .start_auth_session(None, None, None, kind, SymmetricDefinition::AES_128_CFB, HashingAlgorithm::Sha256)
        .map_err(tpm_err("starting a session"))?
        .ok_or_else(|| ClientJoinError::Tpm("TPM returned no session".into()))?;
    let (attrs, mask) = SessionAttributesBuilder::new().build();
    ctx.tr_sess_set_attributes(s, attrs, mask).map_err(tpm_err("session attributes"))?;
    Ok(s)
}

/// The `BeginJoin` payload for an endorsement and attestation key.
pub fn begin_payload(e: &Endorsement, ak_key: &AttestationKey) -> Result<Vec<u8>, ClientJoinError> {
    let p = BeginPayload {
        ek_public: B64.encode(&e.ek_public),
        ek_certificate: e.ek_certificate.as_deref().map(|c| B64.encode(c)).unwrap_or_default(),
        ak_public: B64.encode(&ak_key.public),
    };
    serde_json::to_vec(&p).map_err(|e| ClientJoinError::Tpm(e.to_string()))
}

/// Joins with the `tpm` method: endorsement + fresh AK, `BeginJoin`,
/// `ActivateCredential`, `Join`. TPM work runs on a blocking thread.
pub async fn join(client: &mut SigilClient<Channel>, params: &JoinParams, device: &TpmDevice) -> Result<pb::IdentityResponse, ClientJoinError> {
    let d = device.clone();
    let (endorsement, ak_key) = blocking(move || Ok((d.endorsement()?, d.create_ak()?))).await?;
    let ch = begin(client, METHOD, &params.token_name, begin_payload(&endorsement, &ak_key)?).await?;
    let challenge: ChallengePayload = serde_json::from_slice(&ch.payload).map_err(|e| ClientJoinError::Tpm(format!("broker challenge: {e}")))?;
    let d = device.clone();
    let secret = blocking(move || d.activate(&ak_key, &challenge)).await?;
    finish(client, METHOD, params, ch.challenge_id, secret).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ClientJoinError> + Send + 'static) -> Result<T, ClientJoinError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ClientJoinError::Tpm(format!("TPM thread: {e}")))?
}
