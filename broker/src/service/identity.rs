//! Bot identities: authentication of callers, joins and renewals.

use super::{Broker, ServiceError};
use crate::ca::lifetime;
use crate::ca::x509::{self, BotIdentityClaims, LeafKind};
use sigil_core::domain::{Attributes, Bot, Caller, Method, Role};
use crate::join::{JoinEnv, JoinInput};
use sigil_core::peer::PeerKey;
use crate::store::{BotInstance, CallerRecords, Kind};
use serde_json::json;

/// A freshly issued bot identity.
#[derive(Debug, Clone)]
pub struct IssuedIdentity {
    /// Bot name.
    pub bot: String,
    /// Certificate DER.
    pub cert_der: Vec<u8>,
    /// NotAfter.
    pub expires_at: i64,
    /// Generation.
    pub generation: i64,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Id of the internal CA key that signed it.
    pub ca_key: String,
    /// Bot instance id.
    pub instance: String,
}

impl IssuedIdentity {
    /// What the issuance audit event records of the certificate (so it can
    /// be revoked by serial or instance: `store::ISSUANCE_KINDS`).
    fn audit_detail(&self) -> serde_json::Value {
        json!({"generation": self.generation, "serial": self.serial, "ca_key": self.ca_key, "instance": self.instance, "expires_at": self.expires_at})
    }
}

/// An authenticated caller plus the certificate facts renewal needs.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Resolved bot and roles.
    pub caller: Caller,
    /// Certificate claims.
    pub claims: BotIdentityClaims,
}

/// The outcome a join counts as in metrics: a broker failure (backend,
/// signing) is an error; everything the caller can cause is a refusal.
fn join_outcome<T>(r: &Result<T, ServiceError>) -> crate::metrics::JoinOutcome {
    use crate::metrics::JoinOutcome;
    match r {
        Ok(_) => JoinOutcome::Ok,
        Err(ServiceError::Internal(_) | ServiceError::Store(crate::store::StoreError::Backend(_) | crate::store::StoreError::Corrupt { .. })) => JoinOutcome::Error,
        Err(_) => JoinOutcome::Refused,
    }
}

impl Broker {
    /// Resolves the caller from its verified client certificate (DER), sent
    /// from `peer`, and refuses it if a lock stops its bot or instance (every
    /// request: see [`super::locks`]). rustls has already chain-validated the
    /// certificate against the internal CAs published when the connection was
    /// made; the issuer must still be published now (a connection opened
    /// before an internal CA was retired is refused too).
    pub async fn authenticate(&self, cert_der: Option<&[u8]>, peer: Option<std::net::IpAddr>) -> Result<Authenticated, ServiceError> {
        let a = self.resolve(cert_der).await?;
        self.check_caller_locks(&a, peer).await?;
        Ok(a)
    }

    /// The caller of a certificate, from the cache when neither the store nor
    /// the CAs have changed since it was resolved.
    async fn resolve(&self, cert_der: Option<&[u8]>) -> Result<Authenticated, ServiceError> {
        let der = cert_der.ok_or_else(|| {
            ServiceError::Unauthenticated("this call needs a bot identity (mTLS client certificate); pass --identity".into())
        })?;
        let counter = self.store.change_counter();
        let authority = self.authority.current();
        if let Some(a) = self.callers.get(der, counter, &authority) {
            if a.claims.not_after <= self.now() {
                return Err(ServiceError::Unauthenticated("bot identity expired; join again".into()));
            }
            return Ok(a);
        }
        let claims = x509::bot_identity_claims(der)
            .ok_or_else(|| ServiceError::Unauthenticated("client certificate is not a Sigil bot identity".into()))?;
        if claims.uri != self.bot_uri(&claims.bot) {
            return Err(ServiceError::Unauthenticated(format!("identity URI {} does not match bot {}", claims.uri, claims.bot)));
        }
        if claims.not_after <= self.now() {
            return Err(ServiceError::Unauthenticated("bot identity expired; join again".into()));
        }
        if !x509::issued_by_any(der, &authority.internal_roots) {
            return Err(ServiceError::Unauthenticated("bot identity was signed by an internal CA that is no longer trusted (retired); join again".into()));
        }
        // Instance, bot and roles in one store call (one lock, one snapshot).
        let rec = self
            .store
            .caller_records(&claims.instance, &claims.bot)
            .await
            .map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        let inst = &rec.instance;
        if inst.bot != claims.bot {
            return Err(ServiceError::Unauthenticated("bot instance belongs to another bot".into()));
        }
        // After the records: a revocation committed since the counter was
        // read moves it, so the entry cached below is retired.
        if self.identity_revoked(&claims.serial).await? {
            return Err(ServiceError::Unauthenticated(format!("bot identity {} was revoked; join again", claims.serial)));
        }
        if inst.locked {
            return Err(ServiceError::Unauthenticated(format!(
                "bot instance {} is locked (a copied identity was detected); join again",
                inst.id
            )));
        }
        let caller = resolve_caller(&claims.bot, rec)?;
        let a = Authenticated { caller, claims };
        self.callers.put(der, counter, &authority, &a);
        Ok(a)
    }

    /// The validity of a bot identity for `bot` asked for `ttl` seconds, signed by `ca`.
    fn identity_validity(&self, bot: &Bot, ttl: i64, ca: &crate::ca::Authority) -> Result<lifetime::Validity, ServiceError> {
        // A bot may lower the ceiling, never raise it (the internal CA's retire_safe_at counts on it).
        let max = self.settings.identity_max_ttl;
        let cap = if bot.max_session_ttl_seconds > 0 { bot.max_session_ttl_seconds.min(max) } else { max };
        lifetime::validity(self.now(), ttl, self.settings.identity_default_ttl.min(cap), cap, ca.internal.not_after)
            .map_err(|e| ServiceError::invalid("ttl_seconds", e.to_string()))
    }

    async fn issue_identity(
        &self,
        bot: &Bot,
        instance: &str,
        generation: i64,
        spki: &[u8],
        ttl: i64,
    ) -> Result<IssuedIdentity, ServiceError> {
        let ca = self.authority.current();
        let v = self.identity_validity(bot, ttl, &ca)?;
        self.sign_identity(&ca, bot, instance, generation, spki, v)
    }

    fn sign_identity(
        &self,
        ca: &crate::ca::Authority,
        bot: &Bot,
        instance: &str,
        generation: i64,
        spki: &[u8],
        v: lifetime::Validity,
    ) -> Result<IssuedIdentity, ServiceError> {
        let kind = LeafKind::BotIdentity {
            uri: self.bot_uri(bot.name.as_str()),
            bot: bot.name.to_string(),
            instance: instance.to_string(),
            generation,
        };
        let cert_der = ca.internal.sign_leaf(spki, &kind, v).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let serial = x509::serial_hex(&cert_der).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(IssuedIdentity {
            bot: bot.name.to_string(),
            cert_der,
            expires_at: v.not_after,
            generation,
            serial,
            ca_key: ca.internal.key_id.clone(),
            instance: instance.to_string(),
        })
    }

    async fn load_bot(&self, name: &str) -> Result<Bot, ServiceError> {
        let d = self.store.get(Kind::Bot, name).await?;
        serde_json::from_value(d.spec).map_err(|e| ServiceError::Internal(e.to_string()))
    }

    /// Creates a new bot instance at generation 1 and issues its identity.
    /// The instance records the identity's NotAfter before it is signed, so
    /// the expiry sweep never deletes an instance whose identity is valid.
    pub async fn start_instance(&self, bot: &str, attrs: &Attributes, spki: &[u8], ttl: i64) -> Result<IssuedIdentity, ServiceError> {
        self.start_bound_instance(bot, attrs, spki, ttl, None).await
    }

    /// [`Self::start_instance`], binding the outside identity a join proved
    /// (an EC2 instance) to the new instance in the same store transaction:
    /// already bound (and no rebind allowed), the join is refused and no
    /// instance is created.
    pub async fn start_bound_instance(
        &self,
        bot: &str,
        attrs: &Attributes,
        spki: &[u8],
        ttl: i64,
        binding: Option<&crate::join::Binding>,
    ) -> Result<IssuedIdentity, ServiceError> {
        let bot = self.load_bot(bot).await?;
        let id = crate::ca::random_id()?;
        let ca = self.authority.current();
        let v = self.identity_validity(&bot, ttl, &ca)?;
        let inst = BotInstance {
            id: id.clone(),
            bot: bot.name.to_string(),
            generation: 1,
            pending: 1,
            locked: false,
            join_attributes: json!(attrs),
            created_at: self.now(),
            identity_expires_at: v.not_after,
        };
        match binding {
            None => self.store.create_instance(&inst).await?,
            Some(b) => self.store.create_bound_instance(&inst, &b.key, b.rebind).await.map_err(|e| match e {
                crate::store::StoreError::AlreadyExists { kind: "instance_binding", name } => {
                    ServiceError::JoinRefused(format!("{name} is already bound to a bot instance (a concurrent join won); config.allow_rejoin is not set"))
                }
                other => other.into(),
            })?,
        }
        self.sign_identity(&ca, &bot, &id, 1, spki, v)
    }

    /// The `Join` call: verifies the credential, then issues a bot identity for
    /// the CSR's key. Nothing is consumed if the CSR is bad.
    pub async fn join(&self, input: &JoinInput, csr: &[u8], ttl: i64) -> Result<IssuedIdentity, ServiceError> {
        let result = self.join_inner(input, csr, ttl).await;
        if let Ok(method) = input.method.parse::<Method>() {
            self.metrics.join(method, join_outcome(&result));
        }
        match &result {
            Ok(id) => {
                let mut detail = id.audit_detail();
                detail["method"] = json!(input.method);
                self.audit.record(self.now(), "join", "anonymous", &id.bot, "ok", detail).await
            }
            // Rate-limited per peer: anyone can cause refusals (crate::audit::throttle).
            Err(e) => {
                let detail = json!({"method": input.method, "reason": e.audit_reason()});
                self.audit.refused(PeerKey::of(input.peer), self.now(), "join", &input.token_name, detail).await
            }
        }
        result
    }

    fn join_env(&self, peer: Option<std::net::IpAddr>) -> JoinEnv<'_> {
        JoinEnv {
            store: self.store.as_ref(),
            challenges: &self.challenges,
            now: self.now(),
            server_names: &self.settings.server_names,
            peer: PeerKey::of(peer),
            kubernetes_clusters: &self.settings.kubernetes_clusters,
        }
    }

    async fn join_inner(&self, input: &JoinInput, csr: &[u8], ttl: i64) -> Result<IssuedIdentity, ServiceError> {
        // Check the CSR before touching the token, so a bad request uses nothing up.
        let spki = x509::csr_public_key(csr).map_err(|e| ServiceError::invalid("csr", e.to_string()))?;
        if ttl < 0 {
            return Err(ServiceError::invalid("ttl_seconds", "must not be negative"));
        }
        self.check_join_locks_early(&input.method, &input.token_name, &input.token).await?;
        let verified = crate::join::verify(&self.join_env(input.peer), input).await?;
        self.check_join_locks(&verified.token_name, &verified.bot).await?;
        self.start_bound_instance(&verified.bot, &verified.attributes, &spki, ttl, verified.binding.as_ref()).await
    }

    /// The `BeginJoin` call of challenge-response methods, from `peer`.
    pub async fn begin_join(
        &self,
        peer: Option<std::net::IpAddr>,
        method: &str,
        token_name: &str,
        payload: &[u8],
    ) -> Result<crate::join::challenge::Issued, ServiceError> {
        let r = match self.check_join_locks_early(method, token_name, "").await {
            Ok(()) => crate::join::begin(&self.join_env(peer), method, token_name, payload).await.map_err(ServiceError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            let detail = json!({"method": method, "reason": e.audit_reason()});
            self.audit.refused(PeerKey::of(peer), self.now(), "join.begin", token_name, detail).await;
        }
        r
    }

    /// Renews the caller's identity; the generation check detects copies.
    pub async fn renew(&self, auth: &Authenticated, csr: &[u8], ttl: i64) -> Result<IssuedIdentity, ServiceError> {
        let spki = x509::csr_public_key(csr).map_err(|e| ServiceError::invalid("csr", e.to_string()))?;
        let bot = &auth.caller.bot;
        let result = self
            .store
            .advance_generation(&auth.claims.instance, auth.claims.generation, &auth.claims.key_hash, &x509::spki_hash(&spki))
            .await;
        let generation = match result {
            Ok(g) => g,
            Err(e) => {
                self.audit
                    .record(self.now(), "identity.renew", bot.name.as_str(), &auth.claims.instance, "denied", json!({"reason": e.to_string()}))
                    .await;
                return Err(ServiceError::Unauthenticated(e.to_string()));
            }
        };
        let id = self.issue_identity(bot, &auth.claims.instance, generation, &spki, ttl).await?;
        self.instance_seen(&auth.claims.instance, id.expires_at).await;
        self.audit
            .record(self.now(), "identity.renew", bot.name.as_str(), &auth.claims.instance, "ok", id.audit_detail())
            .await;
        Ok(id)
    }
}

/// Builds the caller from its stored records: the specs are deserialized
/// straight from their JSON text into `Bot` and `Role`.
fn resolve_caller(bot_name: &str, rec: CallerRecords) -> Result<Caller, ServiceError> {
    let doc = rec.bot.ok_or_else(|| ServiceError::Unauthenticated(format!("bot {bot_name:?} no longer exists")))?;
    let mut bot: Bot = serde_json::from_str(&doc.spec).map_err(|e| ServiceError::Internal(e.to_string()))?;
    bot.revision = doc.revision;
    let mut roles = Vec::with_capacity(rec.roles.len());
    for d in &rec.roles {
        roles.push(serde_json::from_str::<Role>(&d.spec).map_err(|e| ServiceError::Internal(e.to_string()))?);
    }
    if roles.len() != bot.roles.len() {
        for name in bot.roles.iter().filter(|n| !rec.roles.iter().any(|d| d.name == n.as_str())) {
            tracing::warn!(bot = bot_name, role = name.as_str(), "bot refers to a missing role");
        }
    }
    let join_attributes: Attributes = match rec.instance.join_attributes {
        serde_json::Value::Object(o) => o.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string()))).collect(),
        _ => Attributes::default(),
    };
    Ok(Caller { bot, roles, join_attributes, instance: rec.instance.id })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::audit::{Audit, Sink};
    use sigil_core::clock::{Clock, ManualClock};
    use crate::ca::{seal::SealKey, Authority, CaSettings};
    use crate::service::Settings;
    use crate::store::{sqlite::SqliteStore, Doc, Store};
    use std::sync::Arc;

    /// A broker on an in-memory store with role `r` and bot `b`, on `clock`.
    pub(crate) async fn broker(clock: &ManualClock) -> Broker {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let td: sigil_core::domain::TrustDomain = "example.org".parse().unwrap();
        let seal = crate::ca::backend::KeyStore::sealed(SealKey::parse(&SealKey::generate_hex().unwrap()).unwrap());
        let authority = Authority::load_or_create(&store, &seal, &td, &CaSettings::default(), clock.now()).await.unwrap();
        let lifetimes = crate::ca::rotation::Lifetimes {
            x509_svid_max_ttl: 3600,
            jwt_svid_max_ttl: 3600,
            identity_max_ttl: 3600,
            bundle_refresh_hint: 300,
            jwks_cache_allowance: 3600,
            ssh_max_ttl: 3600,
            tls_max_ttl: 3600,
        };
        let rotation = crate::ca::rotation::Rotation { key_store: seal, trust_domain: td.clone(), settings: CaSettings::default(), lifetimes, auto: None };
        for (kind, name, spec) in [
            (Kind::Role, "r", json!({"name": "r", "allow": {"spiffe_ids": ["/x/**"]}})),
            (Kind::Bot, "b", json!({"name": "b", "roles": ["r"]})),
        ] {
            store.create(kind, &Doc { name: name.into(), revision: 0, spec }, None).await.unwrap();
        }
        Broker {
            audit: Audit::new(store.clone(), Sink::None),
            store,
            authority: Arc::new(crate::ca::AuthorityCell::new(authority)),
            rotation: Arc::new(rotation),
            settings: Settings::new(td, "https://127.0.0.1:1".into()),
            clock: Arc::new(clock.clone()),
            challenges: Default::default(),
            callers: Default::default(),
            locks: Default::default(),
            metrics: Default::default(),
            revocations: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_second_instance_bound_to_one_outside_identity_is_a_generic_join_refusal_unless_rebind() {
        // The race the ec2 verifier's early check cannot see: two joins of one
        // instance both verified, the store's unique key lets one through.
        let clock = ManualClock::new(1_800_000_000);
        let b = broker(&clock).await;
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let once = crate::join::Binding { key: "ec2:111122223333:i-1".into(), rebind: false };
        let first = b.start_bound_instance("b", &Attributes::default(), &spki, 600, Some(&once)).await.unwrap();
        let err = b.start_bound_instance("b", &Attributes::default(), &spki, 600, Some(&once)).await.unwrap_err();
        assert!(matches!(err, ServiceError::JoinRefused(_)), "{err:?}");
        assert_eq!(err.to_string(), crate::join::REFUSED, "the caller learns nothing");
        assert!(err.audit_reason().contains("ec2:111122223333:i-1"), "{}", err.audit_reason());
        assert_eq!(b.store.list_instances("b", 0, "", 10).await.unwrap().len(), 1, "the refused join created no instance");
        let rebind = crate::join::Binding { rebind: true, ..once };
        let second = b.start_bound_instance("b", &Attributes::default(), &spki, 600, Some(&rebind)).await.unwrap();
        assert_eq!(b.store.instance_binding(&rebind.key).await.unwrap().unwrap().instance, second.instance);
        assert_ne!(first.instance, second.instance);
    }

    #[tokio::test]
    async fn a_remembered_caller_is_refused_once_its_certificate_has_expired() {
        let clock = ManualClock::new(1_800_000_000);
        let b = broker(&clock).await;
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let id = b.start_instance("b", &Attributes::default(), &spki, 600).await.unwrap();
        // Twice: the second answer comes from the cache.
        for _ in 0..2 {
            assert_eq!(b.authenticate(Some(&id.cert_der), None).await.unwrap().caller.bot.name.as_str(), "b");
        }
        assert!(b.callers.get(&id.cert_der, b.store.change_counter(), &b.authority.current()).is_some(), "the caller should be cached");
        clock.advance(601);
        let err = b.authenticate(Some(&id.cert_der), None).await.unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[tokio::test]
    async fn an_instance_expired_by_inactivity_is_swept_only_once_its_identity_expired_and_never_comes_back() {
        let clock = ManualClock::new(1_800_000_000);
        let mut b = broker(&clock).await;
        b.settings.instance_expire_after = 60;
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let id = b.start_instance("b", &Attributes::default(), &spki, 600).await.unwrap();
        let instance = b.authenticate(Some(&id.cert_der), None).await.unwrap().claims.instance;
        // Unseen for longer than expire_after, but its identity is valid for
        // 600 s: hidden from lists, yet kept, and its agent comes back.
        clock.advance(120);
        assert!(b.store.list_instances("", b.now() - 60, "", 10).await.unwrap().is_empty(), "expired at read");
        assert_eq!(b.sweep_instances().await.unwrap(), 0, "an instance whose identity is valid is not deleted");
        let auth = b.authenticate(Some(&id.cert_der), None).await.unwrap();
        let (_, csr2) = sigil_core::csr::key_and_csr().unwrap();
        let renewed = b.renew(&auth, &csr2, 600).await.unwrap();
        assert_eq!(b.store.list_instances("", b.now() - 60, "", 10).await.unwrap().len(), 1, "seen again after renewing");
        // Then silent past its renewed identity's NotAfter: swept for good.
        clock.advance(renewed.expires_at + 1 - b.now());
        assert_eq!(b.sweep_instances().await.unwrap(), 1);
        assert!(b.store.instance_record(&instance).await.is_err());
        // Nothing brings it back: not its identities (expired), and not a
        // copy presented later (the row is gone, so even a still-valid
        // certificate of the instance would be refused).
        for der in [&id.cert_der, &renewed.cert_der] {
            assert!(b.authenticate(Some(der), None).await.is_err());
        }
        assert!(b.store.instance_record(&instance).await.is_err(), "an attempt must not recreate the instance");
    }

    #[tokio::test]
    async fn a_valid_identity_of_a_deleted_instance_is_refused() {
        // The sweep never deletes such an instance, but deleting its bot does:
        // the certificate alone is not enough.
        let clock = ManualClock::new(1_800_000_000);
        let b = broker(&clock).await;
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let id = b.start_instance("b", &Attributes::default(), &spki, 600).await.unwrap();
        b.authenticate(Some(&id.cert_der), None).await.unwrap();
        b.store.delete(Kind::Bot, "b", 0).await.unwrap();
        b.store.create(Kind::Bot, &Doc { name: "b".into(), revision: 0, spec: json!({"name": "b", "roles": ["r"]}) }, None).await.unwrap();
        let err = b.authenticate(Some(&id.cert_der), None).await.unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[tokio::test]
    async fn an_open_connection_of_an_identity_from_a_retired_internal_ca_is_refused_at_its_next_call() {
        let clock = ManualClock::new(crate::test_rotation::T0);
        let r = crate::test_rotation::Rotation::new().await;
        let b = broker(&clock).await;
        b.authority.replace(r.prepared().await);
        let (_, csr) = sigil_core::csr::key_and_csr().unwrap();
        let spki = crate::ca::x509::csr_public_key(&csr).unwrap();
        let from_a = b.start_instance("b", &Attributes::default(), &spki, 600).await.unwrap();
        b.authenticate(Some(&from_a.cert_der), None).await.unwrap();
        b.authority.replace(r.activated().await);
        b.authenticate(Some(&from_a.cert_der), None).await.expect("A is previous: still trusted");
        b.authority.replace(r.retired().await);
        // The certificate stands for a connection made before the retirement
        // (the handshake checked it then); the store has not changed since.
        let err = b.authenticate(Some(&from_a.cert_der), None).await.unwrap_err();
        assert!(err.to_string().contains("no longer trusted"), "{err}");
        let from_b = b.start_instance("b", &Attributes::default(), &spki, 600).await.unwrap();
        assert_eq!(b.authenticate(Some(&from_b.cert_der), None).await.unwrap().caller.bot.name.as_str(), "b");
    }
}
