//! X.509-SVID issuance over the real API (CSR in, certificate out, audited,
//! persisted) beside raw sign + verify throughput.

use crate::broker::BrokerProcess;
use crate::fixture;
use crate::load::{self, Budget};
use crate::opts::Opts;
use crate::raw;
use crate::proc::CpuMeter;
use crate::report::{ms, pct, rate, threads, times, Row, Status};
use crate::stats::Sample;
use anyhow::{bail, Context, Result};
use sigil_schemas::sigil::v1 as pb;
use sigil_schemas::sigil::v1::sigil_client::SigilClient;
use std::sync::Arc;
use tonic::transport::Channel;
use x509_parser::prelude::FromDer;

/// What later scenarios reuse.
#[derive(Debug)]
pub struct X509Result {
    /// Single-thread sign + verify latency (the join's crypto floor).
    pub raw_single: Sample,
}

fn request(csr: Vec<u8>) -> pb::IssueX509SvidRequest {
    pb::IssueX509SvidRequest { csr, spiffe_id: fixture::SPIFFE_ID.into(), ..Default::default() }
}

/// Issues one SVID and checks it with x509-parser: the URI SAN is the requested
/// ID and the signature verifies against a CA of the returned bundle.
async fn issue_and_verify(c: &mut SigilClient<Channel>, csr: Vec<u8>) -> Result<()> {
    let r = c.issue_x509_svid(request(csr)).await?.into_inner();
    let leaf = pem_der(&r.certificate_pem)?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).context("leaf DER")?;
    let uri = cert
        .subject_alternative_name()?
        .and_then(|s| {
            s.value.general_names.iter().find_map(|g| match g {
                x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_string()),
                _ => None,
            })
        })
        .context("no URI SAN")?;
    if uri != fixture::SPIFFE_ID {
        bail!("SVID names {uri}, asked for {}", fixture::SPIFFE_ID);
    }
    let bundle = pem_der(&r.bundle_pem)?;
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&bundle).context("bundle DER")?;
    cert.verify_signature(Some(ca.public_key())).context("SVID signature does not verify with the bundle CA")?;
    Ok(())
}

/// The first certificate of a PEM text.
fn pem_der(pem: &str) -> Result<Vec<u8>> {
    sigil_core::pem::certificate_ders(pem, "the broker's answer")?.into_iter().next().context("no CERTIFICATE in the broker's answer")
}

/// Runs the X.509 phases; appends rows; returns reusable references.
pub async fn run(b: &BrokerProcess, clients: &[SigilClient<Channel>], o: &Opts, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<X509Result> {
    let csrs = Arc::new(raw::csr_pool(256)?);
    let mut first = clients.first().context("no clients")?.clone();
    issue_and_verify(&mut first, csrs[0].clone()).await.context("first X.509-SVID")?;

    let raw_single = raw::x509_sign_verify(1, Budget { max_requests: 2000, duration: o.phase.duration / 2 }, &csrs)?;

    let mut admin = b.admin().await?;
    let (_, audit_from) = fixture::count_audit(&mut admin, "svid.x509", 0).await?;

    // Requests built before the timed phases: per request the client only
    // clones one prebuilt message (a ~300-byte CSR) and sends it.
    let requests: Arc<Vec<pb::IssueX509SvidRequest>> = Arc::new(csrs.iter().cloned().map(request).collect());
    let op = {
        move |mut c: SigilClient<Channel>, i: u64| {
            let req = requests[(i as usize) % requests.len()].clone();
            async move {
                let r = c.issue_x509_svid(req).await.map_err(|e| e.to_string())?.into_inner();
                if r.certificate_pem.starts_with("-----BEGIN CERTIFICATE") {
                    Ok(())
                } else {
                    Err("response without a certificate".to_string())
                }
            }
        }
    };
    let broker_cpu = CpuMeter::start(b.pid())?;
    let (raw_all, peak) = load::alternate(
        load::ROUNDS,
        o.phase,
        |b| raw::x509_sign_verify(o.threads, b, &csrs),
        |b| load::closed_loop(o.workers(clients), b, op.clone()),
    )
    .await?;
    let (b_user, b_sys) = broker_cpu.per_request_us(peak.count())?;
    let half = peak.throughput() / 2.0;
    // The load generator's own CPU, measured where no reference runs beside it.
    let own_cpu = CpuMeter::start(std::process::id())?;
    let paced = load::open_loop(clients.to_vec(), half, o.phase, op).await;
    let (c_user, c_sys) = own_cpu.per_request_us(paced.count())?;

    // The transport alone: an authenticated RPC that signs nothing.
    let rpc_cpu = CpuMeter::start(b.pid())?;
    let empty = load::closed_loop(o.workers(clients), Budget { max_requests: o.phase.max_requests, duration: o.phase.duration / 2 }, |mut c: SigilClient<Channel>, _| async move {
        c.who_am_i(pb::WhoAmIRequest {}).await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    let (r_user, r_sys) = rpc_cpu.per_request_us(empty.count())?;

    let batched = crate::batch::run(
        b.pid(),
        clients,
        o,
        crate::batch::Phase {
            name: "X.509-SVID",
            reference: "raw CSR verify + P-256 sign",
            requests: csrs
                .chunks(o.batch.max(1))
                .filter(|c| c.len() == o.batch)
                .map(|c| pb::BatchIssueSvidsRequest { x509: c.iter().cloned().map(request).collect(), jwt: vec![] })
                .collect(),
            raw: |b| raw::x509_sign_verify(o.threads, b, &csrs),
            target: Some(0.5),
        },
        rows,
        failures,
    )
    .await?;

    let (audited, _) = fixture::count_audit(&mut admin, "svid.x509", audit_from).await?;
    let issued = (peak.count() + paced.count()) as u64 + batched.svids;

    for (name, s) in [("X.509 peak", &peak), ("X.509 at 50% of peak", &paced)] {
        if s.errors > 0 {
            failures.push(format!("{name}: {} of {} requests failed, first: {}", s.errors, s.count() as u64 + s.errors, s.first_error.clone().unwrap_or_default()));
        }
    }
    if audited != issued {
        failures.push(format!("X.509: {issued} SVIDs issued but {audited} svid.x509 audit events persisted"));
    }

    let ratio = peak.throughput() / raw_all.throughput().max(f64::MIN_POSITIVE);
    rows.push(Row {
        figure: format!("X.509-SVID issuance, one per RPC, {} (throughput)", o.load_name()),
        value: rate(peak.throughput()),
        reference: format!("raw CSR verify + P-256 sign, {}: {}", threads(o.threads), rate(raw_all.throughput())),
        ratio: pct(peak.throughput(), raw_all.throughput()),
        target: ">= 50%".into(),
        status: Status::of(ratio >= 0.5),
    });
    let raw_us = raw_single.p50_ms() * 1000.0;
    rows.push(Row {
        figure: "X.509-SVID broker CPU per request at peak (user + sys)".into(),
        value: format!("{:.0} us ({:.0} + {:.0})", b_user + b_sys, b_user, b_sys),
        reference: format!("raw sign + verify, 1 thread p50: {raw_us:.0} us"),
        ratio: times(b_user + b_sys, raw_us),
        target: "-".into(),
        status: Status::Info,
    });
    rows.push(Row::info(
        "X.509-SVID load generator CPU per request (50% phase)",
        format!("{:.0} us ({:.0} + {:.0})", c_user + c_sys, c_user, c_sys),
    ));
    rows.push(Row {
        figure: "X.509-SVID latency at peak (p50 / p99)".into(),
        value: format!("{} / {}", ms(peak.p50_ms()), ms(peak.p99_ms())),
        reference: format!("raw sign + verify, 1 thread: {}", ms(raw_single.p50_ms())),
        ratio: "-".into(),
        target: "-".into(),
        status: Status::Info,
    });
    rows.push(Row {
        figure: format!("X.509-SVID p99 at 50% of peak ({})", rate(paced.throughput())),
        value: format!("{} (p50 {}, p99.9 {})", ms(paced.p99_ms()), ms(paced.p50_ms()), ms(paced.quantile_ms(0.999))),
        reference: format!("raw sign + verify p99, 1 thread: {}", ms(raw_single.p99_ms())),
        ratio: "-".into(),
        target: "< 5 ms".into(),
        status: Status::of(paced.p99_ms() < 5.0 && paced.count() > 0),
    });
    rows.push(Row::info(
        format!("transport alone: authenticated WhoAmI RPC, {} (throughput / broker CPU per RPC)", o.load_name()),
        format!("{} / {:.0} us ({:.0} + {:.0})", rate(empty.throughput()), r_user + r_sys, r_user, r_sys),
    ));
    rows.push(Row {
        figure: "X.509-SVIDs audited and persisted".into(),
        value: format!("{audited} audit events"),
        reference: format!("{issued} SVIDs issued"),
        ratio: pct(audited as f64, issued as f64),
        target: "100%".into(),
        status: Status::of(audited == issued),
    });
    Ok(X509Result { raw_single })
}
