//! JWT-SVID issuance over the real API beside raw signing with the same key type.

use crate::broker::JwtAlg;
use crate::fixture;
use crate::load;
use crate::opts::Opts;
use crate::raw;
use crate::proc::CpuMeter;
use crate::report::{ms, pct, rate, threads, times, Row, Status};
use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use tonic::transport::Channel;

fn request() -> pb::IssueJwtSvidRequest {
    pb::IssueJwtSvidRequest { spiffe_id: fixture::SPIFFE_ID.into(), audiences: vec![fixture::AUDIENCE.into()], ..Default::default() }
}

/// The JWS `alg` of a compact token's header.
fn header_alg(token: &str) -> Result<String> {
    let head = token.split('.').next().context("empty token")?;
    let v: serde_json::Value = serde_json::from_slice(&B64URL.decode(head)?)?;
    Ok(v["alg"].as_str().unwrap_or_default().to_string())
}

/// Runs the JWT phase against a broker signing with `alg`.
pub async fn run(alg: JwtAlg, pid: u32, clients: &[SigilClient<Channel>], o: &Opts, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    let (name, es256, target) = match alg {
        JwtAlg::Rs256 => ("RS256", false, Some(0.7)),
        JwtAlg::Es256 => ("ES256", true, None),
    };
    let mut first = clients.first().context("no clients")?.clone();
    let token = first.issue_jwt_svid(request()).await.context("first JWT-SVID")?.into_inner().token;
    let got = header_alg(&token)?;
    if got != name {
        bail!("broker signs JWT-SVIDs with {got}, this phase expects {name}");
    }

    // Built once, cloned per request (three short strings).
    let req = std::sync::Arc::new(request());
    let op = move |mut c: SigilClient<Channel>, _i: u64| {
        let req = (*req).clone();
        async move {
        let r = c.issue_jwt_svid(req).await.map_err(|e| e.to_string())?.into_inner();
        if r.token.split('.').count() == 3 {
            Ok(())
        } else {
            Err("response without a compact JWS".to_string())
        }
        }
    };
    let broker_cpu = CpuMeter::start(pid)?;
    let (raw_all, peak) = load::alternate(
        load::ROUNDS,
        o.phase,
        |b| raw::jws_sign(o.threads, b, es256),
        |b| load::closed_loop(o.workers(clients), b, op.clone()),
    )
    .await?;
    let (b_user, b_sys) = broker_cpu.per_request_us(peak.count())?;
    if peak.errors > 0 {
        failures.push(format!("JWT {name}: {} requests failed, first: {}", peak.errors, peak.first_error.clone().unwrap_or_default()));
    }
    let ratio = peak.throughput() / raw_all.throughput().max(f64::MIN_POSITIVE);
    rows.push(Row {
        figure: format!("JWT-SVID {name} issuance, one per RPC, {} (throughput)", o.load_name()),
        value: rate(peak.throughput()),
        reference: format!("raw {name} sign, {}: {}", threads(o.threads), rate(raw_all.throughput())),
        ratio: pct(peak.throughput(), raw_all.throughput()),
        target: target.map(|t| format!(">= {:.0}%", t * 100.0)).unwrap_or_else(|| "-".into()),
        status: match target {
            Some(t) => Status::of(ratio >= t),
            None => Status::Info,
        },
    });
    let raw_us = raw_all.p50_ms() * 1000.0;
    rows.push(Row {
        figure: format!("JWT-SVID {name} broker CPU per request at peak (user + sys)"),
        value: format!("{:.0} us ({:.0} + {:.0})", b_user + b_sys, b_user, b_sys),
        reference: format!("raw {name} sign p50: {raw_us:.0} us"),
        ratio: times(b_user + b_sys, raw_us),
        target: "-".into(),
        status: Status::Info,
    });
    let batch_req = pb::BatchIssueSvidsRequest { x509: vec![], jwt: vec![request(); o.batch] };
    crate::batch::run(
        pid,
        clients,
        o,
        crate::batch::Phase {
            name: &format!("JWT-SVID {name}"),
            reference: &format!("raw {name} sign"),
            requests: vec![batch_req],
            raw: |b| raw::jws_sign(o.threads, b, es256),
            target,
        },
        rows,
        failures,
    )
    .await?;
    rows.push(Row {
        figure: format!("JWT-SVID {name} latency at peak (p50 / p99)"),
        value: format!("{} / {}", ms(peak.p50_ms()), ms(peak.p99_ms())),
        reference: format!("raw {name} sign p50: {}", ms(raw_all.p50_ms())),
        ratio: "-".into(),
        target: "-".into(),
        status: Status::Info,
    });
    Ok(())
}
