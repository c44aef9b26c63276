//! The SPIFFE Workload API handlers. Thin: check the security header, attest the
//! caller, ask the broker (through the cache) for what the rules give it, encode.

use super::attest::{self, Attestor};
use super::cache::{Cache, Entry};
use super::deny::{Denials, Verdict};
use crate::backoff::{random_jitter, Backoff};
use crate::bundle::{pem_certs, Bundle};
use crate::config::{Dur, WorkloadApiConfig};
use crate::join::transient_code;
use crate::renewal::Renewal;
use crate::schedule::{wait, Lifetime};
use crate::session::Session;
use sigil_core::api::MAX_BATCH;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::spiffe_workload as wl;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Metadata every Workload API call must carry.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

type Attrs = BTreeMap<String, String>;

/// One X.509-SVID with its key.
#[derive(Clone)]
pub struct X509Svid {
    spiffe_id: String,
    cert_der: Vec<u8>,
    key_pkcs8: Vec<u8>,
    bundle_der: Vec<u8>,
    hint: String,
}

/// One JWT-SVID.
#[derive(Clone)]
pub struct JwtSvid {
    spiffe_id: String,
    token: String,
    hint: String,
}

/// Shared state of the Workload API service.
pub struct WorkloadApi {
    session: Arc<Session>,
    cfg: WorkloadApiConfig,
    attestor: Attestor,
    x509: Cache<Vec<X509Svid>>,
    jwt: Cache<Vec<JwtSvid>>,
    denials: Denials,
    bundle: watch::Receiver<Option<Arc<Bundle>>>,
    rotate: watch::Receiver<Renewal>,
}

/// The tonic service (cheap to clone).
#[derive(Clone)]
pub struct Service(Arc<WorkloadApi>);

impl Service {
    /// A service issuing through `session`.
    pub fn new(session: Arc<Session>, cfg: WorkloadApiConfig, bundle: watch::Receiver<Option<Arc<Bundle>>>, rotate: watch::Receiver<Renewal>) -> Self {
        Self(Arc::new(WorkloadApi {
            session,
            cfg,
            attestor: Attestor::default(),
            x509: Cache::default(),
            jwt: Cache::default(),
            denials: Denials::default(),
            bundle,
            rotate,
        }))
    }
}

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(SECURITY_HEADER).and_then(|v| v.to_str().ok()) {
        Some("true") => Ok(()),
        _ => Err(Status::invalid_argument(format!("security header missing from request: {SECURITY_HEADER}: true"))),
    }
}

/// Refuses a request unless it was written by the process that opened the
/// connection, and that process still runs the program it ran when the
/// connection was accepted (checked after the attributes were read, so they
/// describe that program). Otherwise a process could connect, fork, and exec
/// another program whose identity its child would then be given.
fn same_program(info: &super::h2_authority::PeerInfo) -> Result<(), Status> {
    let Some(pid) = info.pid.filter(|p| *p > 0) else { return Ok(()) };
    if let Some(other) = info.writers.foreign() {
        tracing::warn!(uid = info.uid, pid, writer = other, "workload API connection used by another process than the one that opened it; refused");
        return Err(Status::permission_denied(format!(
            "this connection was opened by process {pid} but is written to by process {other}: each process must open its own connection"
        )));
    }
    if attest::stamp(pid) != info.stamp {
        tracing::warn!(uid = info.uid, pid, "workload API caller exited or ran another program since it connected; refused");
        return Err(Status::permission_denied(format!(
            "process {pid} exited or executed another program since it connected: connect again from the program that needs the identity"
        )));
    }
    Ok(())
}

/// Outcome of asking the broker for every configured workload identity.
enum Issued<T> {
    Some(Vec<T>, i64),
    Denied(Vec<String>),
    Unavailable(String),
}

impl WorkloadApi {
    fn attest<T>(&self, req: &Request<T>) -> Result<Attrs, Status> {
        check_header(req)?;
        let info = req
            .extensions()
            .get::<super::h2_authority::PeerInfo>()
            .ok_or_else(|| Status::permission_denied("cannot attest the caller: no unix peer credentials"))?;
        let attrs = attest::only_what_the_stamp_covers(self.attestor.attributes(info.uid, info.gid, info.pid), info.stamp.as_ref());
        same_program(info)?;
        Ok(attrs)
    }

    fn key(attrs: &Attrs, extra: &str) -> String {
        let mut k: String = attrs.iter().map(|(a, v)| format!("{a}={v}\n")).collect();
        k.push_str(extra);
        k
    }

    /// The key refusals are remembered under: the caller without its pid.
    fn deny_key(attrs: &Attrs, extra: &str) -> String {
        let mut k: String = attrs.iter().filter(|(a, _)| a.as_str() != attest::PID).map(|(a, v)| format!("{a}={v}\n")).collect();
        k.push_str(extra);
        k
    }

    /// One BatchIssueSvids call. `Err` is why the broker could not answer
    /// (the connection is reset when that may help); entries fail one by one
    /// inside a successful answer.
    async fn call_batch(&self, req: pb::BatchIssueSvidsRequest, want: usize) -> Result<pb::BatchIssueSvidsResponse, String> {
        let mut c = self.session.client().await.map_err(|e| e.to_string())?;
        match c.batch_issue_svids(req).await {
            Ok(r) => {
                let r = r.into_inner();
                if r.x509.len() + r.jwt.len() != want {
                    return Err(format!("broker answered {} of {want} SVID requests", r.x509.len() + r.jwt.len()));
                }
                Ok(r)
            }
            Err(s) => {
                if transient_code(s.code()) || s.code() == tonic::Code::Unauthenticated {
                    self.session.reset_connection().await;
                }
                Err(format!("{:?}: {}", s.code(), s.message()))
            }
        }
    }

    /// An X.509-SVID (and its new key) for every configured workload identity
    /// the broker grants this workload: one broker call per [`MAX_BATCH`].
    async fn issue_x509(&self, attrs: &Attrs) -> Issued<X509Svid> {
        let (mut out, mut denied, mut expires) = (Vec::new(), Vec::new(), i64::MAX);
        for chunk in self.cfg.workload_identities.chunks(MAX_BATCH) {
            let mut keys = Vec::with_capacity(chunk.len());
            let mut x509 = Vec::with_capacity(chunk.len());
            for wi in chunk {
                let (kp, csr) = match sigil_core::csr::key_and_csr() {
                    Ok(k) => k,
                    Err(e) => return Issued::Unavailable(format!("key generation failed: {e}")),
                };
                keys.push(kp);
                x509.push(pb::IssueX509SvidRequest {
                    csr,
                    workload_identity: wi.clone(),
                    workload_attributes: attrs.clone().into_iter().collect(),
                    ttl_seconds: Dur::secs(self.cfg.x509_ttl),
                    ..Default::default()
                });
            }
            let r = match self.call_batch(pb::BatchIssueSvidsRequest { x509, jwt: vec![] }, chunk.len()).await {
                Ok(r) => r,
                Err(e) => return Issued::Unavailable(e),
            };
            let Ok(bundle) = pem_certs(&r.bundle_pem) else {
                return Issued::Unavailable("broker returned an unparsable X.509 bundle".into());
            };
            for ((wi, kp), res) in chunk.iter().zip(keys).zip(r.x509) {
                let Some(svid) = res.svid else {
                    denied.push(format!("{wi}: {}", res.error.map(|e| e.message).unwrap_or_default()));
                    continue;
                };
                let Ok(cert) = pem_certs(&svid.certificate_pem) else {
                    return Issued::Unavailable("broker returned an unparsable X.509-SVID".into());
                };
                expires = expires.min(svid.expires_at);
                out.push(X509Svid {
                    spiffe_id: svid.spiffe_id,
                    cert_der: cert.concat(),
                    key_pkcs8: kp.serialize_der(),
                    bundle_der: bundle.concat(),
                    hint: wi.clone(),
                });
            }
        }
        if out.is_empty() {
            Issued::Denied(denied)
        } else {
            Issued::Some(out, expires)
        }
    }

    /// A JWT-SVID for `audiences` for every configured workload identity the
    /// broker grants this workload (only `only`'s, when set).
    async fn issue_jwt(&self, attrs: &Attrs, audiences: &[String], only: &str) -> Issued<JwtSvid> {
        let (mut out, mut denied, mut expires) = (Vec::new(), Vec::new(), i64::MAX);
        for chunk in self.cfg.workload_identities.chunks(MAX_BATCH) {
            let jwt = chunk
                .iter()
                .map(|wi| pb::IssueJwtSvidRequest {
                    workload_identity: wi.clone(),
                    workload_attributes: attrs.clone().into_iter().collect(),
                    audiences: audiences.to_vec(),
                    ttl_seconds: Dur::secs(self.cfg.jwt_ttl),
                    ..Default::default()
                })
                .collect();
            let r = match self.call_batch(pb::BatchIssueSvidsRequest { x509: vec![], jwt }, chunk.len()).await {
                Ok(r) => r,
                Err(e) => return Issued::Unavailable(e),
            };
            for (wi, res) in chunk.iter().zip(r.jwt) {
                match res.svid {
                    Some(s) if only.is_empty() || s.spiffe_id == only => {
                        expires = expires.min(s.expires_at);
                        out.push(JwtSvid { spiffe_id: s.spiffe_id, token: s.token, hint: wi.clone() });
                    }
                    Some(_) => {}
                    None => denied.push(format!("{wi}: {}", res.error.map(|e| e.message).unwrap_or_default())),
                }
            }
        }
        if out.is_empty() {
            Issued::Denied(denied)
        } else {
            Issued::Some(out, expires)
        }
    }

    /// Cached-or-fresh lookup shared by X.509 and JWT: re-issues at half life or
    /// when `epoch` moved (see [`Renewal`]); if the broker is unreachable, serves
    /// what it has until expiry.
    async fn cached<V, F, Fut>(&self, cache: &Cache<Vec<V>>, extra: &str, attrs: &Attrs, epoch: u64, issue: F) -> Result<(Arc<Vec<V>>, Lifetime), Status>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Issued<V>>,
    {
        let slot = cache.slot(&Self::key(attrs, extra));
        let mut g = slot.lock().await;
        let now = self.session.now();
        if let Some(e) = g.as_ref() {
            let fresh = now < e.life.renew_at() && e.epoch == epoch;
            let backing_off = e.failures > 0 && now < e.next_try && e.life.valid_at(now);
            if fresh || backing_off {
                return Ok((e.value.clone(), e.life));
            }
        }
        let deny_key = Self::deny_key(attrs, extra);
        let uid: u32 = attrs.get(attest::UID).and_then(|u| u.parse().ok()).unwrap_or(u32::MAX);
        match self.denials.check(&deny_key, uid, now) {
            Verdict::Ask => {}
            Verdict::Refused => {
                tracing::debug!(caller = %attest::describe(attrs), "caller refused recently; not asking the broker again");
                return Err(refusal(attrs));
            }
            Verdict::Throttled(secs) => {
                tracing::debug!(caller = %attest::describe(attrs), "uid out of refusal budget; not asking the broker");
                return Err(Status::resource_exhausted(format!(
                    "too many refused requests from uid {uid}: retry in {secs}s"
                )));
            }
        }
        match issue().await {
            Issued::Some(v, expires_at) => {
                let e = Entry { value: Arc::new(v), life: Lifetime { received_at: now, expires_at }, epoch, next_try: 0, failures: 0 };
                let out = (e.value.clone(), e.life);
                *g = Some(e);
                Ok(out)
            }
            Issued::Denied(reasons) => {
                *g = None;
                tracing::info!(caller = %attest::describe(attrs), reasons = ?reasons, "no workload identity issued to caller");
                if self.denials.refused(deny_key, uid, now) {
                    tracing::warn!(uid, "uid keeps being refused: its new callers are refused locally, without asking the broker, for a while");
                }
                Err(refusal(attrs))
            }
            Issued::Unavailable(msg) => match g.as_mut().filter(|e| e.life.valid_at(now)) {
                Some(e) => {
                    e.failures = e.failures.saturating_add(1);
                    e.next_try = now + i64::from(2u32.saturating_pow(e.failures.min(5)));
                    tracing::warn!(caller = %attest::describe(attrs), error = %msg, expires_at = e.life.expires_at, "cannot renew workload SVIDs; serving cached ones until they expire");
                    Ok((e.value.clone(), e.life))
                }
                None => {
                    tracing::warn!(caller = %attest::describe(attrs), error = %msg, "cannot issue workload SVIDs");
                    Err(Status::unavailable(format!("broker unavailable and nothing cached: {msg}")))
                }
            },
        }
    }

    /// X.509-SVIDs carry the bundle: re-issued when a key is published or
    /// retired too, so the bundle sent with an SVID is always the one the broker
    /// sent with it (and signs it).
    async fn x509_for(&self, attrs: &Attrs) -> Result<(Arc<Vec<X509Svid>>, Lifetime), Status> {
        let epoch = self.rotate.borrow().with_bundle();
        self.cached(&self.x509, "x509", attrs, epoch, || self.issue_x509(attrs)).await
    }

    fn current_bundle(&self) -> Option<Arc<Bundle>> {
        self.bundle.borrow().clone()
    }
}

fn refusal(attrs: &Attrs) -> Status {
    Status::permission_denied(format!(
        "no identity issued: this process ({}) matches none of the agent's workload identities",
        attest::describe(attrs)
    ))
}

fn x509_response(svids: &[X509Svid]) -> wl::X509svidResponse {
    wl::X509svidResponse {
        svids: svids
            .iter()
            .map(|s| wl::X509svid {
                spiffe_id: s.spiffe_id.clone(),
                x509_svid: s.cert_der.clone(),
                x509_svid_key: s.key_pkcs8.clone(),
                bundle: s.bundle_der.clone(),
                hint: s.hint.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

fn json_to_prost(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_prost).collect() }),
        serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct { fields: o.iter().map(|(k, v)| (k.clone(), json_to_prost(v))).collect() }),
    };
    prost_types::Value { kind: Some(kind) }
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

/// Runs `step` until the receiver goes away. Each step returns a message, a
/// fingerprint (the message is sent only when it changed), when to look again
/// and until when the message is valid (`i64::MAX`: no expiry of its own).
/// Errors end the stream before the first message, on PermissionDenied, and
/// once the last message sent has expired (the SVID a watcher holds is no
/// longer valid and cannot be replaced, e.g. the bot is locked: the watcher
/// is told, not left holding it); otherwise they are retried with bounded
/// backoff while the stream stays open.
fn spawn_stream<T, F, Fut>(api: Arc<WorkloadApi>, step: F) -> Stream<T>
where
    T: Send + 'static,
    F: Fn(Arc<WorkloadApi>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(T, Vec<u8>, i64, i64), Status>> + Send,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut rotate = api.rotate.clone();
        let mut bundle = api.bundle.clone();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut last: Option<Vec<u8>> = None;
        let mut last_valid_until = i64::MAX;
        loop {
            let now = api.session.now();
            let delay = match step(api.clone()).await {
                Ok((msg, fingerprint, next, valid_until)) => {
                    backoff.reset();
                    if last.as_ref() != Some(&fingerprint) {
                        if tx.send(Ok(msg)).await.is_err() {
                            return;
                        }
                        last = Some(fingerprint);
                        last_valid_until = valid_until;
                    }
                    wait(now, next.max(now + 1).min(valid_until.max(now + 1)))
                }
                Err(s) if last.is_none() || s.code() == tonic::Code::PermissionDenied || now >= last_valid_until => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
                // Look again by the expiry at the latest: that is when the watcher must be told.
                Err(_) => backoff.next_delay(random_jitter()).min(Duration::from_secs(u64::try_from(last_valid_until - now).unwrap_or(0).max(1))),
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = rotate.changed() => {}
                _ = bundle.changed() => {}
                _ = tx.closed() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl wl::spiffe_workload_api_server::SpiffeWorkloadApi for Service {
    type FetchX509SVIDStream = Stream<wl::X509svidResponse>;
    type FetchX509BundlesStream = Stream<wl::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<wl::JwtBundlesResponse>;

    async fn fetch_x509svid(&self, req: Request<wl::X509svidRequest>) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let attrs = Arc::new(self.0.attest(&req)?);
        let stream = spawn_stream(self.0.clone(), move |api| {
            let attrs = attrs.clone();
            async move {
                let (svids, life) = api.x509_for(&attrs).await?;
                let fingerprint = svids.iter().flat_map(|s| s.cert_der.iter().chain(&s.bundle_der).copied()).collect();
                Ok((x509_response(&svids), fingerprint, life.renew_at(), life.expires_at))
            }
        });
        Ok(Response::new(stream))
    }

    async fn fetch_x509_bundles(&self, req: Request<wl::X509BundlesRequest>) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let attrs = Arc::new(self.0.attest(&req)?);
        let stream = spawn_stream(self.0.clone(), move |api| {
            let attrs = attrs.clone();
            async move {
                let (svids, life) = api.x509_for(&attrs).await?;
                let (td, der) = match api.current_bundle() {
                    Some(b) => (b.trust_domain_id(), b.x509_concat()),
                    // Before the first bundle poll: the bundle that came with the SVID.
                    None => {
                        let s = svids.first().ok_or_else(|| Status::unavailable("no trust bundle yet"))?;
                        let td = s.spiffe_id.trim_start_matches("spiffe://").split('/').next().unwrap_or_default();
                        (format!("spiffe://{td}"), s.bundle_der.clone())
                    }
                };
                let msg = wl::X509BundlesResponse { bundles: [(td, der.clone())].into(), ..Default::default() };
                Ok((msg, der, life.renew_at(), i64::MAX))
            }
        });
        Ok(Response::new(stream))
    }

    async fn fetch_jwtsvid(&self, req: Request<wl::JwtsvidRequest>) -> Result<Response<wl::JwtsvidResponse>, Status> {
        let attrs = self.0.attest(&req)?;
        let r = req.into_inner();
        if r.audience.is_empty() || r.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let mut aud = r.audience.clone();
        aud.sort();
        aud.dedup();
        let extra = format!("jwt\n{}\n{}", aud.join("\n"), r.spiffe_id);
        let api = &self.0;
        let epoch = api.rotate.borrow().all;
        let (svids, _) = api.cached(&api.jwt, &extra, &attrs, epoch, || api.issue_jwt(&attrs, &aud, &r.spiffe_id)).await?;
        Ok(Response::new(wl::JwtsvidResponse {
            svids: svids.iter().map(|s| wl::Jwtsvid { spiffe_id: s.spiffe_id.clone(), svid: s.token.clone(), hint: s.hint.clone() }).collect(),
        }))
    }

    async fn fetch_jwt_bundles(&self, req: Request<wl::JwtBundlesRequest>) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let attrs = Arc::new(self.0.attest(&req)?);
        let stream = spawn_stream(self.0.clone(), move |api| {
            let attrs = attrs.clone();
            async move {
                let (_, life) = api.x509_for(&attrs).await?;
                let b = api.current_bundle().ok_or_else(|| Status::unavailable("no trust bundle yet"))?;
                let jwks = b.jwks_json.clone().into_bytes();
                let msg = wl::JwtBundlesResponse { bundles: [(b.trust_domain_id(), jwks.clone())].into() };
                Ok((msg, jwks, life.renew_at(), i64::MAX))
            }
        });
        Ok(Response::new(stream))
    }

    async fn validate_jwtsvid(&self, req: Request<wl::ValidateJwtsvidRequest>) -> Result<Response<wl::ValidateJwtsvidResponse>, Status> {
        check_header(&req)?;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let b = self.0.current_bundle().ok_or_else(|| Status::unavailable("no trust bundle yet"))?;
        let keys = sigil_core::jwt::KeySet::from_json(b.jwks_json.as_bytes()).map_err(|e| Status::unavailable(format!("trust bundle has no usable JWT key: {e}")))?;
        let v = super::jwt_svid::validate(&r.svid, &keys, &r.audience, self.0.session.now()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let claims = prost_types::Struct { fields: v.claims.iter().map(|(k, v)| (k.clone(), json_to_prost(v))).collect() };
        Ok(Response::new(wl::ValidateJwtsvidResponse { spiffe_id: v.spiffe_id, claims: Some(claims) }))
    }
}
