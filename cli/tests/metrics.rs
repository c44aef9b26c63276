#![allow(clippy::unwrap_used)]
//! The broker's operator listener against an in-process broker: `/metrics`
//! counts what the RPCs, joins and store calls did, in valid Prometheus text;
//! label values never come from the caller. (The same exposition is parsed by
//! the Python `prometheus_client` in acceptance-tests/broker/test_metrics.py,
//! which also makes the store unreachable for `/readyz`.)

mod common;

use common::{now, Broker};
use sigil_schemas::sigil::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};

/// Samples by `name{labels}` (labels as written), checking the text format on
/// the way: every sample belongs to a family with one `# TYPE`, names and
/// values parse, and histogram buckets are cumulative up to `+Inf` == count.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "two TYPE lines for {name}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "unexpected line {line:?}");
        let (key, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|f| types.get(*f).is_some_and(|k| k == "histogram"));
        let family = family.unwrap_or(name);
        assert!(types.contains_key(family), "sample before its TYPE: {line}");
        if types[family] == "counter" {
            assert!(name.ends_with("_total") && value >= 0.0, "{line}");
        }
        assert!(samples.insert(key.to_string(), value).is_none(), "duplicate sample {key}");
    }
    // Histograms: buckets never decrease, +Inf equals _count.
    let series: BTreeSet<(String, String)> = samples
        .keys()
        .filter_map(|k| {
            let (name, labels) = k.split_once("_bucket{")?;
            let rest = labels.split("le=").next().unwrap().trim_end_matches(',');
            Some((name.to_string(), rest.to_string()))
        })
        .collect();
    assert!(!series.is_empty());
    for (name, labels) in series {
        let prefix = format!("{name}_bucket{{{labels}{}le=", if labels.is_empty() { "" } else { "," });
        let buckets: Vec<f64> = samples.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| *v).collect();
        let inf = samples[&format!("{prefix}\"+Inf\"}}")];
        assert!(buckets.iter().all(|b| *b <= inf), "{name}{{{labels}}}: a bucket above +Inf");
        let count = samples[&format!("{name}_count{{{labels}}}")];
        assert_eq!(inf, count, "{name}{{{labels}}}: +Inf != count");
    }
    samples
}

fn get(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

async fn scrape(b: &Broker) -> BTreeMap<String, f64> {
    let (status, body) = b.ops_get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rpcs_joins_and_store_calls_under_fixed_labels() {
    let b = Broker::start().await;
    let mut admin = b.admin().await;
    admin.create_bot(pb::Bot { name: "edge".into(), ..Default::default() }).await.unwrap();
    let t = pb::JoinToken { name: "t1".into(), bot: "edge".into(), method: "token".into(), expires_at: now() + 600, max_uses: 5, ..Default::default() };
    let secret = admin.create_join_token(t).await.unwrap().into_inner().secret;
    let before = scrape(&b).await;

    admin.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let denied = b.anonymous().await.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    b.join_as(&secret).await.unwrap();
    b.join_as("not-a-secret").await.unwrap_err();

    let after = scrape(&b).await;
    let moved = |key: &str| get(&after, key) - get(&before, key);
    assert_eq!(moved("sigil_broker_grpc_requests_total{rpc=\"WhoAmI\",code=\"OK\"}"), 1.0);
    assert_eq!(moved("sigil_broker_grpc_requests_total{rpc=\"WhoAmI\",code=\"UNAUTHENTICATED\"}"), 1.0);
    assert_eq!(moved("sigil_broker_grpc_requests_total{rpc=\"Join\",code=\"OK\"}"), 1.0);
    assert_eq!(moved("sigil_broker_grpc_request_duration_seconds_count{rpc=\"WhoAmI\"}"), 2.0);
    assert_eq!(moved("sigil_broker_joins_total{method=\"token\",outcome=\"ok\"}"), 1.0);
    assert_eq!(moved("sigil_broker_joins_total{method=\"token\",outcome=\"refused\"}"), 1.0);
    assert_eq!(moved("sigil_broker_joins_total{method=\"token\",outcome=\"error\"}"), 0.0);
    assert!(moved("sigil_broker_store_operation_duration_seconds_count{op=\"consume_token\"}") >= 2.0);
    assert!(moved("sigil_broker_store_operation_duration_seconds_count{op=\"create_instance\"}") >= 1.0);
    assert_eq!(get(&after, "sigil_broker_ready"), 1.0);
    // Every RPC label is one of the proto's; every join method one of the registry's.
    for key in after.keys().filter(|k| k.contains("rpc=\"")) {
        let rpc = key.split("rpc=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!(sigil_broker::metrics::rpc::RPCS.contains(&rpc) || rpc == "unknown", "{key}");
    }
    for key in after.keys().filter(|k| k.contains("method=\"")) {
        let m = key.split("method=\"").nth(1).unwrap().split('"').next().unwrap();
        assert!(m.parse::<sigil_core::domain::Method>().is_ok(), "{key}");
    }
}

/// Anyone can send any gRPC path; the path never becomes a label value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_grpc_path_is_counted_as_unknown_not_as_a_new_label() {
    let b = Broker::start().await;
    let before = scrape(&b).await;
    let status = raw_grpc(&b, "/sigil.v1.Sigil/Attacker_Chosen_Name").await;
    assert_eq!(status.as_deref(), Some("12"), "UNIMPLEMENTED");
    let after = scrape(&b).await;
    let key = "sigil_broker_grpc_requests_total{rpc=\"unknown\",code=\"UNIMPLEMENTED\"}";
    assert_eq!(get(&after, key) - get(&before, key), 1.0);
    assert!(!after.keys().any(|k| k.contains("Attacker")));
    assert_eq!(b.ops_get("/readyz").await.0, 200);
    assert_eq!(b.ops_get("/healthz").await.0, 200);
}

/// POSTs an empty gRPC message to `path` over h2; the `grpc-status` header.
async fn raw_grpc(b: &Broker, path: &str) -> Option<String> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(b.path("tls-ca.pem")).unwrap();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls)).connect(name, tcp).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string())
}
