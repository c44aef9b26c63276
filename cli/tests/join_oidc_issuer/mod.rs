//! A local OIDC issuer for the join tests: HTTPS on 127.0.0.1 with its own CA,
//! OIDC discovery and JWKS for any path prefix (so one server stands in for
//! GitHub, GitLab, CircleCI ... at distinct issuer URLs), an RSA (RS256) and an
//! EC (ES256) signing key, and a key that is not published (unknown `kid`).
//!
//! Misbehaving endpoints for the fetch bounds: `/liar/...` answers discovery
//! with another issuer, `/redirect-away` redirects to another host, `/huge`
//! serves a JWKS larger than the broker accepts.
#![allow(dead_code, clippy::unwrap_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Which key signs a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Published RSA key, kid `rsa-1`, RS256.
    Rsa,
    /// Published EC P-256 key, kid `ec-1`, ES256.
    Ec,
    /// RSA key not in the JWKS, kid `unpublished`.
    Unpublished,
}

pub struct Issuer {
    /// `https://127.0.0.1:PORT` (no trailing slash).
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    /// The published JWKS document.
    pub jwks: String,
    /// Requests served.
    pub hits: Arc<AtomicUsize>,
    rsa: aws_lc_rs::rsa::KeyPair,
    ec: EcdsaKeyPair,
    unpublished: aws_lc_rs::rsa::KeyPair,
}

fn rsa_jwk(k: &aws_lc_rs::rsa::KeyPair, kid: &str) -> Value {
    let c = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(k.public_key());
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)})
}

fn ec_jwk(k: &EcdsaKeyPair, kid: &str) -> Value {
    let p = k.public_key().as_ref();
    json!({"kty": "EC", "use": "sig", "crv": "P-256", "alg": "ES256", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])})
}

fn enc(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

impl Issuer {
    pub async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let unpublished = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let jwks = json!({"keys": [rsa_jwk(&rsa, "rsa-1"), ec_jwk(&ec, "ec-1")]}).to_string();

        // Own CA and a serving certificate for 127.0.0.1.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test issuer CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone(), ca.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let base = format!("https://{host}");
        let hits = Arc::new(AtomicUsize::new(0));
        let (b, j, h) = (base.clone(), jwks.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, b, j, h) = (acceptor.clone(), b.clone(), j.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let resp = route(&b, &j, req.uri().path());
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
                });
            }
        });
        Issuer { base, host, ca_pem: ca.pem(), jwks, hits, rsa, ec, unpublished }
    }

    /// Issuer URL for a path prefix (`""` is the bare origin).
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{prefix}", self.base)
        }
    }

    /// Signs `claims` with `key` (header `alg`/`kid`/`typ` set from the key).
    pub fn mint(&self, key: Key, claims: &Value) -> String {
        let header = match key {
            Key::Rsa => json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
            Key::Ec => json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}),
            Key::Unpublished => json!({"alg": "RS256", "kid": "unpublished", "typ": "JWT"}),
        };
        self.sign_raw(key, &header, claims)
    }

    /// Signs with an arbitrary header.
    pub fn sign_raw(&self, key: Key, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", enc(header), enc(claims));
        let rng = SystemRandom::new();
        let sig = match key {
            Key::Rsa | Key::Unpublished => {
                let k = if key == Key::Rsa { &self.rsa } else { &self.unpublished };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).unwrap();
                sig
            }
            Key::Ec => self.ec.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// `alg: none`, no signature.
    pub fn unsigned(&self, claims: &Value) -> String {
        format!("{}.{}.", enc(&json!({"alg": "none", "typ": "JWT"})), enc(claims))
    }

    /// HS256 keyed with the RSA public key (the classic algorithm-confusion forgery).
    pub fn hs256_with_public_key(&self, claims: &Value) -> String {
        let input = format!("{}.{}", enc(&json!({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"})), enc(claims));
        use aws_lc_rs::encoding::AsDer;
        let der = self.rsa.public_key().as_der().unwrap();
        let secret = sigil_schemas::identity::to_pem("PUBLIC KEY", der.as_ref());
        let secret = secret.as_bytes();
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The signature of `signed_claims` attached to `shown_claims`.
    pub fn spliced(&self, key: Key, signed_claims: &Value, shown_claims: &Value) -> String {
        let good = self.mint(key, signed_claims);
        let parts: Vec<&str> = good.split('.').collect();
        format!("{}.{}.{}", parts[0], enc(shown_claims), parts[2])
    }
}

fn respond(status: u16, headers: &[(&str, String)], body: String) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::builder().status(status).header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, v.as_str());
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

fn route(base: &str, jwks: &str, path: &str) -> hyper::Response<Full<Bytes>> {
    if let Some(prefix) = path.strip_suffix("/.well-known/openid-configuration") {
        let issuer = if prefix == "/liar" { "https://accounts.example.com".to_string() } else { format!("{base}{prefix}") };
        let doc = json!({"issuer": issuer, "jwks_uri": format!("{base}{prefix}/.well-known/jwks"),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"]});
        return respond(200, &[], doc.to_string());
    }
    match path {
        p if p.ends_with("/.well-known/jwks") => respond(200, &[], jwks.to_string()),
        "/redirect-away" => respond(302, &[("location", "https://169.254.169.254/latest/meta-data/".into())], String::new()),
        "/redirect-home" => respond(302, &[("location", "/.well-known/jwks".into())], String::new()),
        "/huge" => respond(200, &[], format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(300 * 1024))),
        _ => respond(404, &[], "{}".into()),
    }
}
