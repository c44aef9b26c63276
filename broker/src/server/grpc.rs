//! The sigil.v1 gRPC service: decode -> broker call -> encode.

use super::convert::{self, status};
use super::PeerCert;
use sigil_core::domain::{Bot, Lock, Role, WorkloadIdentity};
use crate::service::issue::{IssuedJwt, IssuedX509, JwtEntry, SvidTarget, X509Entry};
use crate::service::resources::Resource;
use crate::service::ssh::SshRequest;
use crate::service::tls_certs::TlsCertRequest;
use crate::service::{Broker, ServiceError};
use sigil_schemas::identity::to_pem;
use sigil_schemas::sigil::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Largest request the API decodes (CSR, resources...).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// gRPC front of the broker.
#[derive(Debug, Clone)]
pub struct Api {
    broker: Arc<Broker>,
}

impl Api {
    /// Wraps a broker.
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// The tonic service with size limits applied.
    pub fn into_service(self) -> pb::sigil_server::SigilServer<Self> {
        pb::sigil_server::SigilServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(sigil_schemas::client::MAX_MESSAGE_BYTES)
    }

    async fn auth<T>(&self, req: &Request<T>) -> Result<crate::service::identity::Authenticated, Status> {
        let cert = req.extensions().get::<PeerCert>().and_then(|p| p.0.as_deref());
        self.broker.authenticate(cert, peer_ip(req)).await.map_err(status)
    }
}

type R<T> = Result<Response<T>, Status>;

/// The generic CRUD path every resource kind shares: authenticate, convert in,
/// broker call, convert out.
impl Api {
    async fn create<T: Resource, W>(&self, req: Request<W>, from: fn(W) -> Result<T, ServiceError>, to: fn(T) -> W) -> R<W> {
        let a = self.auth(&req).await?;
        let r = from(req.into_inner()).map_err(status)?;
        Ok(Response::new(to(self.broker.create(&a.caller, r).await.map_err(status)?)))
    }

    async fn update<T: Resource, W>(&self, req: Request<W>, from: fn(W) -> Result<T, ServiceError>, to: fn(T) -> W) -> R<W> {
        let a = self.auth(&req).await?;
        let r = from(req.into_inner()).map_err(status)?;
        Ok(Response::new(to(self.broker.update(&a.caller, r).await.map_err(status)?)))
    }

    async fn get<T: Resource, W>(&self, req: Request<pb::GetRequest>, to: fn(T) -> W) -> R<W> {
        let a = self.auth(&req).await?;
        let r: T = self.broker.get(&a.caller, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(to(r)))
    }

    async fn list<T: Resource, W, L>(&self, req: Request<pb::ListRequest>, to: fn(T) -> W, wrap: fn(Vec<W>) -> L) -> R<L> {
        let a = self.auth(&req).await?;
        let l = req.get_ref();
        let items: Vec<T> = self.broker.list(&a.caller, &l.after, limit(l.limit)).await.map_err(status)?;
        Ok(Response::new(wrap(items.into_iter().map(to).collect())))
    }

    async fn delete<T: Resource>(&self, req: Request<pb::DeleteRequest>) -> R<pb::DeleteResponse> {
        let a = self.auth(&req).await?;
        let d = req.get_ref();
        self.broker.delete::<T>(&a.caller, &d.name, d.revision).await.map_err(status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }
}

/// The caller's IP address (set by the server for every request).
fn peer_ip<T>(req: &Request<T>) -> Option<std::net::IpAddr> {
    req.extensions().get::<super::PeerAddr>().map(|p| p.0.ip())
}

/// Hex SHA-256 of a certificate: how `TrustBundle` names the CA that signs now.
fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

fn limit(l: i32) -> usize {
    usize::try_from(l).unwrap_or(0)
}

fn identity_response(b: &Broker, id: crate::service::identity::IssuedIdentity) -> pb::IdentityResponse {
    pb::IdentityResponse {
        bot: id.bot,
        certificate_pem: to_pem("CERTIFICATE", &id.cert_der),
        ca_pem: b.authority.current().internal_ca_pem(),
        expires_at: id.expires_at,
        generation: id.generation,
    }
}

#[tonic::async_trait]
impl pb::sigil_server::Sigil for Api {
    async fn create_role(&self, req: Request<pb::Role>) -> R<pb::Role> {
        self.create(req, convert::role_in, convert::role_out).await
    }
    async fn get_role(&self, req: Request<pb::GetRequest>) -> R<pb::Role> {
        self.get::<Role, _>(req, convert::role_out).await
    }
    async fn list_roles(&self, req: Request<pb::ListRequest>) -> R<pb::ListRolesResponse> {
        self.list::<Role, _, _>(req, convert::role_out, |items| pb::ListRolesResponse { items }).await
    }
    async fn update_role(&self, req: Request<pb::Role>) -> R<pb::Role> {
        self.update(req, convert::role_in, convert::role_out).await
    }
    async fn delete_role(&self, req: Request<pb::DeleteRequest>) -> R<pb::DeleteResponse> {
        self.delete::<Role>(req).await
    }

    async fn create_bot(&self, req: Request<pb::Bot>) -> R<pb::Bot> {
        self.create(req, convert::bot_in, convert::bot_out).await
    }
    async fn get_bot(&self, req: Request<pb::GetRequest>) -> R<pb::Bot> {
        self.get::<Bot, _>(req, convert::bot_out).await
    }
    async fn list_bots(&self, req: Request<pb::ListRequest>) -> R<pb::ListBotsResponse> {
        self.list::<Bot, _, _>(req, convert::bot_out, |items| pb::ListBotsResponse { items }).await
    }
    async fn update_bot(&self, req: Request<pb::Bot>) -> R<pb::Bot> {
        self.update(req, convert::bot_in, convert::bot_out).await
    }
    async fn delete_bot(&self, req: Request<pb::DeleteRequest>) -> R<pb::DeleteResponse> {
        self.delete::<Bot>(req).await
    }

    async fn create_join_token(&self, req: Request<pb::JoinToken>) -> R<pb::JoinToken> {
        let a = self.auth(&req).await?;
        let t = convert::token_in(req.into_inner()).map_err(status)?;
        let (t, secret) = self.broker.create_join_token(&a.caller, t).await.map_err(status)?;
        Ok(Response::new(convert::token_out(t, secret.as_ref())))
    }
    async fn get_join_token(&self, req: Request<pb::GetRequest>) -> R<pb::JoinToken> {
        let a = self.auth(&req).await?;
        let t = self.broker.get_join_token(&a.caller, &req.get_ref().name).await.map_err(status)?;
        Ok(Response::new(convert::token_out(t, None)))
    }
    async fn list_join_tokens(&self, req: Request<pb::ListRequest>) -> R<pb::ListJoinTokensResponse> {
        let a = self.auth(&req).await?;
        let l = req.get_ref();
        let items: Vec<sigil_core::domain::JoinToken> = self.broker.list(&a.caller, &l.after, limit(l.limit)).await.map_err(status)?;
        let mut out = Vec::with_capacity(items.len());
        for mut t in items {
            t.uses = self.broker.store.token_state(t.name.as_str()).await.map(|s| s.uses).unwrap_or(0);
            out.push(convert::token_out(t, None));
        }
        Ok(Response::new(pb::ListJoinTokensResponse { items: out }))
    }
    async fn update_join_token(&self, req: Request<pb::JoinToken>) -> R<pb::JoinToken> {
        let a = self.auth(&req).await?;
        let t = convert::token_in(req.into_inner()).map_err(status)?;
        Ok(Response::new(convert::token_out(self.broker.update_join_token(&a.caller, t).await.map_err(status)?, None)))
    }
    async fn delete_join_token(&self, req: Request<pb::DeleteRequest>) -> R<pb::DeleteResponse> {
        self.delete::<sigil_core::domain::JoinToken>(req).await
    }

    async fn create_workload_identity(&self, req: Request<pb::WorkloadIdentity>) -> R<pb::WorkloadIdentity> {
        self.create(req, convert::wi_in, convert::wi_out).await
    }
    async fn get_workload_identity(&self, req: Request<pb::GetRequest>) -> R<pb::WorkloadIdentity> {
        self.get::<WorkloadIdentity, _>(req, convert::wi_out).await
    }
    async fn list_workload_identities(&self, req: Request<pb::ListRequest>) -> R<pb::ListWorkloadIdentitiesResponse> {
        self.list::<WorkloadIdentity, _, _>(req, convert::wi_out, |items| pb::ListWorkloadIdentitiesResponse { items }).await
    }
    async fn update_workload_identity(&self, req: Request<pb::WorkloadIdentity>) -> R<pb::WorkloadIdentity> {
        self.update(req, convert::wi_in, convert::wi_out).await
    }
    async fn delete_workload_identity(&self, req: Request<pb::DeleteRequest>) -> R<pb::DeleteResponse> {
        self.delete::<WorkloadIdentity>(req).await
    }

    async fn begin_join(&self, req: Request<pb::BeginJoinRequest>) -> R<pb::BeginJoinResponse> {
        let peer = peer_ip(&req);
        let r = req.into_inner();
        convert::begin_join_in(&r).map_err(status)?;
        let c = self.broker.begin_join(peer, &r.method, &r.token_name, &r.payload).await.map_err(status)?;
        Ok(Response::new(pb::BeginJoinResponse { challenge_id: c.id, payload: c.payload, expires_at: c.expires_at }))
    }
    async fn join(&self, req: Request<pb::JoinRequest>) -> R<pb::IdentityResponse> {
        let peer = peer_ip(&req);
        let mut j = req.into_inner();
        let (csr, ttl_seconds) = (std::mem::take(&mut j.csr), j.ttl_seconds);
        let input = convert::join_in(j, peer).map_err(status)?;
        let id = self.broker.join(&input, &csr, ttl_seconds).await.map_err(status)?;
        Ok(Response::new(identity_response(&self.broker, id)))
    }
    async fn renew_identity(&self, req: Request<pb::RenewIdentityRequest>) -> R<pb::IdentityResponse> {
        let a = self.auth(&req).await?;
        let r = req.into_inner();
        let id = self.broker.renew(&a, &r.csr, r.ttl_seconds).await.map_err(status)?;
        Ok(Response::new(identity_response(&self.broker, id)))
    }
    async fn issue_x509_svid(&self, req: Request<pb::IssueX509SvidRequest>) -> R<pb::X509Svid> {
        let a = self.auth(&req).await?;
        let e = x509_entry(req.into_inner());
        let s = self.broker.issue_x509(&a.caller, &e.csr, &e.target).await.map_err(status)?;
        Ok(Response::new(x509_svid(s, self.broker.authority.current().x509_bundle_pem())))
    }
    async fn issue_jwt_svid(&self, req: Request<pb::IssueJwtSvidRequest>) -> R<pb::JwtSvid> {
        let a = self.auth(&req).await?;
        let e = jwt_entry(req.into_inner());
        let s = self.broker.issue_jwt(&a.caller, &e.audiences, &e.target).await.map_err(status)?;
        Ok(Response::new(jwt_svid(s)))
    }
    async fn batch_issue_svids(&self, req: Request<pb::BatchIssueSvidsRequest>) -> R<pb::BatchIssueSvidsResponse> {
        let a = self.auth(&req).await?;
        let r = req.into_inner();
        let x509: Vec<X509Entry> = r.x509.into_iter().map(x509_entry).collect();
        let jwt: Vec<JwtEntry> = r.jwt.into_iter().map(jwt_entry).collect();
        let b = self.broker.issue_batch(&a.caller, &x509, &jwt).await.map_err(status)?;
        let x509 = b
            .x509
            .into_iter()
            .map(|r| match r {
                Ok(s) => pb::BatchX509SvidResult { svid: Some(x509_svid(s, String::new())), error: None },
                Err(e) => pb::BatchX509SvidResult { svid: None, error: Some(svid_error(e)) },
            })
            .collect();
        let jwt = b
            .jwt
            .into_iter()
            .map(|r| match r {
                Ok(s) => pb::BatchJwtSvidResult { svid: Some(jwt_svid(s)), error: None },
                Err(e) => pb::BatchJwtSvidResult { svid: None, error: Some(svid_error(e)) },
            })
            .collect();
        Ok(Response::new(pb::BatchIssueSvidsResponse { x509, jwt, bundle_pem: self.broker.authority.current().x509_bundle_pem() }))
    }
    async fn get_trust_bundle(&self, req: Request<pb::GetTrustBundleRequest>) -> R<pb::TrustBundle> {
        self.auth(&req).await?;
        let b = &self.broker;
        let ca = b.authority.current();
        Ok(Response::new(pb::TrustBundle {
            trust_domain: b.settings.trust_domain.to_string(),
            x509_authorities_pem: ca.x509_bundle_pem(),
            spiffe_bundle_json: ca.spiffe_bundle(ca.sequence(), b.settings.refresh_hint).to_string(),
            jwks_json: ca.oidc_jwks().to_string(),
            sequence: ca.sequence(),
            issuer: b.settings.public_url.clone(),
            x509_signing_sha256: sha256_hex(&ca.x509.cert_der),
            jwt_signing_kid: ca.jwt.kid.clone(),
            internal_signing_sha256: sha256_hex(&ca.internal.cert_der),
            database_ca_bundle_pem: ca.database.bundle_pem.clone(),
            database_signing_sha256: sha256_hex(&ca.database.active.cert_der),
            kubernetes_ca_bundle_pem: ca.kubernetes.bundle_pem.clone(),
            kubernetes_signing_sha256: sha256_hex(&ca.kubernetes.active.cert_der),
        }))
    }
    async fn list_audit_events(&self, req: Request<pb::ListAuditEventsRequest>) -> R<pb::ListAuditEventsResponse> {
        let a = self.auth(&req).await?;
        a.caller.check_verb("audit", "list").map_err(|d| status(ServiceError::Denied(d)))?;
        let r = req.get_ref();
        let l = match limit(r.limit) {
            0 => 1000,
            n => n.min(1000),
        };
        let items = self.broker.store.list_audit(r.after_id, l).await.map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::ListAuditEventsResponse { items: convert::audit_page(items) }))
    }
    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> R<pb::HeartbeatResponse> {
        let a = self.auth(&req).await?;
        let hb = convert::heartbeat_in(req.into_inner());
        self.broker.heartbeat(&a, &hb).await.map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }
    async fn list_bot_instances(&self, req: Request<pb::ListBotInstancesRequest>) -> R<pb::ListBotInstancesResponse> {
        let a = self.auth(&req).await?;
        let r = req.get_ref();
        let items = self.broker.list_instances(&a.caller, &r.bot, &r.after, limit(r.limit)).await.map_err(status)?;
        Ok(Response::new(pb::ListBotInstancesResponse {
            items: convert::instance_page(items, self.broker.settings.instance_expire_after),
        }))
    }
    async fn get_bot_instance(&self, req: Request<pb::GetBotInstanceRequest>) -> R<pb::BotInstance> {
        let a = self.auth(&req).await?;
        let r = self.broker.get_instance(&a.caller, &req.get_ref().id).await.map_err(status)?;
        Ok(Response::new(convert::instance_out(r, self.broker.settings.instance_expire_after)))
    }
    async fn list_instance_bindings(&self, req: Request<pb::ListInstanceBindingsRequest>) -> R<pb::ListInstanceBindingsResponse> {
        let a = self.auth(&req).await?;
        let r = req.get_ref();
        let items = self.broker.list_bindings(&a.caller, &r.bot, &r.method, &r.after, limit(r.limit)).await.map_err(status)?;
        Ok(Response::new(pb::ListInstanceBindingsResponse { items: items.into_iter().map(convert::binding_out).collect() }))
    }
    async fn release_instance_binding(&self, req: Request<pb::ReleaseInstanceBindingRequest>) -> R<pb::ReleaseInstanceBindingResponse> {
        let a = self.auth(&req).await?;
        let r = req.get_ref();
        let b = self.broker.release_binding(&a.caller, &r.method, &r.subject).await.map_err(status)?;
        Ok(Response::new(pb::ReleaseInstanceBindingResponse { released: Some(convert::binding_out(b)) }))
    }
    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> R<pb::WhoAmIResponse> {
        let a = self.auth(&req).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            bot: a.caller.bot.name.to_string(),
            roles: a.caller.roles.iter().map(|r| r.name.to_string()).collect(),
            generation: a.claims.generation,
            expires_at: a.claims.not_after,
            trust_domain: self.broker.settings.trust_domain.to_string(),
        }))
    }
    async fn create_lock(&self, req: Request<pb::Lock>) -> R<pb::Lock> {
        let a = self.auth(&req).await?;
        let l = convert::lock_in(req.into_inner()).map_err(status)?;
        Ok(Response::new(convert::lock_out(self.broker.create_lock(&a, l).await.map_err(status)?)))
    }
    async fn get_lock(&self, req: Request<pb::GetRequest>) -> R<pb::Lock> {
        self.get::<Lock, _>(req, convert::lock_out).await
    }
    async fn list_locks(&self, req: Request<pb::ListRequest>) -> R<pb::ListLocksResponse> {
        self.list::<Lock, _, _>(req, convert::lock_out, |items| pb::ListLocksResponse { items }).await
    }
    async fn delete_lock(&self, req: Request<pb::DeleteRequest>) -> R<pb::DeleteResponse> {
        self.delete::<Lock>(req).await
    }
    async fn get_ca_status(&self, req: Request<pb::GetCaStatusRequest>) -> R<pb::CaStatus> {
        let a = self.auth(&req).await?;
        let s = self.broker.ca_status(&a.caller).await.map_err(status)?;
        Ok(Response::new(convert::ca_status_out(s)))
    }
    async fn rotate_ca(&self, req: Request<pb::RotateCaRequest>) -> R<pb::CaStatus> {
        let a = self.auth(&req).await?;
        let r = req.get_ref();
        let s = self.broker.rotate_ca(&a.caller, &r.purpose, &r.phase, r.force).await.map_err(status)?;
        Ok(Response::new(convert::ca_status_out(s)))
    }
    async fn revoke_svids(&self, req: Request<pb::RevokeSvidsRequest>) -> R<pb::RevokeSvidsResponse> {
        let a = self.auth(&req).await?;
        let r = req.into_inner();
        let serials = self.broker.revoke(&a.caller, &r.serials, &r.bot_instance, &r.reason).await.map_err(status)?;
        Ok(Response::new(pb::RevokeSvidsResponse { serials }))
    }
    async fn issue_ssh_certificate(&self, req: Request<pb::IssueSshCertificateRequest>) -> R<pb::SshCertificate> {
        let a = self.auth(&req).await?;
        let r = req.into_inner();
        let q = SshRequest { cert_type: r.cert_type, public_key: r.public_key, principals: r.principals, extensions: r.extensions, ttl: r.ttl_seconds };
        let c = self.broker.issue_ssh(&a.caller, &a.claims.instance, &q).await.map_err(status)?;
        Ok(Response::new(pb::SshCertificate {
            certificate: c.certificate,
            serial: c.serial,
            key_id: c.key_id,
            valid_after: c.valid_after,
            valid_before: c.valid_before,
            user_ca_public_keys: c.user_ca,
            host_ca_public_keys: c.host_ca,
        }))
    }
    async fn get_ssh_ca_public_keys(&self, req: Request<pb::GetSshCaPublicKeysRequest>) -> R<pb::SshCaPublicKeys> {
        self.auth(&req).await?;
        let r = req.into_inner();
        let (user, host) = self.broker.ssh_ca_public_keys();
        let mut out = pb::SshCaPublicKeys { user_ca_public_keys: user, host_ca_public_keys: host, ..Default::default() };
        if r.include_krl {
            if !(r.known_krl_sha256.is_empty() || r.known_krl_sha256.len() == 32) {
                return Err(Status::invalid_argument("known_krl_sha256 must be empty or 32 bytes (a SHA-256)"));
            }
            let k = self.broker.ssh_krl().await.map_err(status)?;
            if r.known_krl_sha256 != k.sha256 {
                out.revoked_keys_krl = k.bytes.clone();
            }
            out.krl_sha256 = k.sha256.to_vec();
        }
        Ok(Response::new(out))
    }
    async fn issue_tls_certificate(&self, req: Request<pb::IssueTlsCertificateRequest>) -> R<pb::TlsCertificate> {
        let a = self.auth(&req).await?;
        let r = req.into_inner();
        let t = TlsCertRequest { kind: r.kind, csr: r.csr, user: r.user, groups: r.groups, server_names: r.server_names, ttl: r.ttl_seconds };
        let s = self.broker.issue_tls(&a.caller, &t).await.map_err(status)?;
        Ok(Response::new(pb::TlsCertificate {
            certificate_pem: to_pem("CERTIFICATE", &s.cert_der),
            ca_bundle_pem: s.bundle_pem,
            serial: s.serial,
            expires_at: s.expires_at,
        }))
    }

    async fn apply(&self, req: Request<pb::ApplyRequest>) -> R<pb::ApplyResponse> {
        let a = self.auth(&req).await?;
        let r = req.into_inner();
        let dry_run = r.dry_run;
        let docs = convert::apply_in(r).map_err(status)?;
        Ok(Response::new(convert::apply_out(self.broker.apply(&a.caller, docs, dry_run).await.map_err(status)?)))
    }
}

fn target(spiffe_id: String, workload_identity: String, attrs: std::collections::HashMap<String, String>, ttl: i64) -> SvidTarget {
    SvidTarget { spiffe_id, workload_identity, workload_attributes: attrs.into_iter().collect(), ttl }
}

fn x509_entry(r: pb::IssueX509SvidRequest) -> X509Entry {
    X509Entry { csr: r.csr, target: target(r.spiffe_id, r.workload_identity, r.workload_attributes, r.ttl_seconds) }
}

fn jwt_entry(r: pb::IssueJwtSvidRequest) -> JwtEntry {
    JwtEntry { audiences: r.audiences, target: target(r.spiffe_id, r.workload_identity, r.workload_attributes, r.ttl_seconds) }
}

fn x509_svid(s: IssuedX509, bundle_pem: String) -> pb::X509Svid {
    pb::X509Svid { spiffe_id: s.spiffe_id, certificate_pem: to_pem("CERTIFICATE", &s.cert_der), bundle_pem, expires_at: s.expires_at, hint: String::new() }
}

fn jwt_svid(s: IssuedJwt) -> pb::JwtSvid {
    pb::JwtSvid { spiffe_id: s.spiffe_id, token: s.token, expires_at: s.expires_at, hint: String::new() }
}

/// A batch entry's failure, with the status the same request alone would get.
fn svid_error(e: ServiceError) -> pb::SvidError {
    let s = status(e);
    pb::SvidError { code: s.code() as i32, message: s.message().to_string() }
}
