//! What every API benchmark needs in the broker: a role, a bot and a join
//! token, and N clients that joined as that bot (one connection each, like N
//! agents).

use crate::broker::BrokerProcess;
use anyhow::{bail, Context, Result};
use sigil_schemas::identity::Identity;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

/// Bot and role name used by the benchmarks.
pub const BOT: &str = "bench";
/// SPIFFE ID the benchmark bot may obtain (trust domain `bench.test`).
pub const SPIFFE_ID: &str = "spiffe://bench.test/bench/load";
/// Audience of benchmark JWT-SVIDs.
pub const AUDIENCE: &str = "bench";

/// The benchmark bot's join token secret (many uses).
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// The secret, for a Join request.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Creates the role, bot and a join token good for `uses` joins.
pub async fn provision(b: &BrokerProcess, uses: i64) -> Result<Token> {
    let mut admin = b.admin().await?;
    admin
        .create_role(pb::Role {
            name: BOT.into(),
            description: "benchmark load".into(),
            allow: Some(pb::RoleAllow {
                spiffe_ids: vec!["/bench/**".into()],
                audiences: vec![AUDIENCE.into()],
                workload_identities: vec!["bench-*".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("create role")?;
    admin
        .create_bot(pb::Bot { name: BOT.into(), roles: vec![BOT.into()], ..Default::default() })
        .await
        .context("create bot")?;
    let t = admin
        .create_join_token(pb::JoinToken {
            name: "bench".into(),
            bot: BOT.into(),
            method: "token".into(),
            expires_at: now() + 3600,
            max_uses: uses,
            ..Default::default()
        })
        .await
        .context("create join token")?
        .into_inner();
    if t.secret.is_empty() {
        bail!("CreateJoinToken returned no secret");
    }
    Ok(Token(t.secret))
}

/// A fresh P-256 key and its CSR (DER), made before any timed phase.
pub struct KeyedCsr {
    key: rcgen::KeyPair,
    csr: Vec<u8>,
}

/// `n` keys and CSRs for joins, generated up front so that key generation and
/// CSR signing (client-side work) stay out of the measured join latency.
pub fn keyed_csrs(n: usize) -> Result<Vec<KeyedCsr>> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let csr = rcgen::CertificateParams::default().serialize_request(&key)?.der().to_vec();
            Ok(KeyedCsr { key, csr })
        })
        .collect()
}

/// One Join over `anon` with a prepared key and CSR; returns the identity.
pub async fn join_with(anon: &mut SigilClient<Channel>, token: &Token, k: &KeyedCsr) -> Result<Identity, tonic::Status> {
    let r = anon
        .join(pb::JoinRequest { method: "token".into(), token: token.secret().into(), csr: k.csr.clone(), ..Default::default() })
        .await?
        .into_inner();
    Ok(Identity::new(r.certificate_pem, k.key.serialize_pem(), r.ca_pem))
}

/// `n` clients, each joined as the bot on its own connection.
pub async fn bot_clients(b: &BrokerProcess, token: &Token, n: usize) -> Result<Vec<SigilClient<Channel>>> {
    let mut anon = b.anonymous().await?;
    let mut out = Vec::with_capacity(n);
    for k in keyed_csrs(n)? {
        let id = join_with(&mut anon, token, &k).await.context("join")?;
        out.push(sigil_schemas::client::connect_with_identity(&b.addr, &id).await?);
    }
    Ok(out)
}

/// Counts audit events of `kind` with outcome ok after `after_id`; returns the
/// count and the last id seen.
pub async fn count_audit(admin: &mut SigilClient<Channel>, kind: &str, after_id: i64) -> Result<(u64, i64)> {
    let (mut n, mut last) = (0u64, after_id);
    loop {
        let page = admin
            .list_audit_events(pb::ListAuditEventsRequest { after_id: last, limit: 1000 })
            .await?
            .into_inner()
            .items;
        let Some(tail) = page.last() else { return Ok((n, last)) };
        last = tail.id;
        n += page.iter().filter(|e| e.kind == kind && e.outcome == "ok").count() as u64;
    }
}
