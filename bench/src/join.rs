//! Token join end to end: Join RPC with a fresh CSR, over a warm connection and
//! over a new TLS connection each time (what `sigil join` does). Keys and CSRs
//! are generated before the timed series: the figure is the broker's join
//! (plus the round trip and, for the cold series, the TLS handshake).

use crate::broker::BrokerProcess;
use crate::fixture::{self, Token};
use crate::opts::Opts;
use crate::report::{ms, times, Row, Status};
use crate::stats::Sample;
use anyhow::Result;
use std::time::Instant;

/// Runs the join series; `raw_p50_ms` is the single-thread sign + verify floor.
pub async fn run(b: &BrokerProcess, token: &Token, raw_p50_ms: f64, o: &Opts, rows: &mut Vec<Row>, failures: &mut Vec<String>) -> Result<()> {
    let budget = o.series(o.joins);
    let cold_n = (o.joins / 4).max(10);
    let keys = fixture::keyed_csrs((o.joins + cold_n) as usize)?;
    let (warm_keys, cold_keys) = keys.split_at(o.joins as usize);
    let start = Instant::now();
    let mut warm = Sample::with_capacity(o.joins as usize);
    let mut anon = b.anonymous().await?;
    for k in warm_keys {
        if start.elapsed() >= budget.duration {
            break;
        }
        let t = Instant::now();
        match fixture::join_with(&mut anon, token, k).await {
            Ok(_) => warm.ok(t.elapsed()),
            Err(e) => warm.err(e),
        }
    }
    let warm = warm.finish(start.elapsed());

    let start = Instant::now();
    let mut cold = Sample::with_capacity(cold_n as usize);
    for k in cold_keys {
        if start.elapsed() >= budget.duration {
            break;
        }
        let t = Instant::now();
        let r = match b.anonymous().await {
            Ok(mut c) => fixture::join_with(&mut c, token, k).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => cold.ok(t.elapsed()),
            Err(e) => cold.err(e),
        }
    }
    let cold = cold.finish(start.elapsed());

    for (name, s) in [("join (warm)", &warm), ("join (cold)", &cold)] {
        if s.errors > 0 || s.count() == 0 {
            failures.push(format!("{name}: {} failed, first: {}", s.errors, s.first_error.clone().unwrap_or_default()));
        }
    }
    rows.push(Row {
        figure: format!("token join, warm connection (p50 / p99, n={})", warm.count()),
        value: format!("{} / {}", ms(warm.p50_ms()), ms(warm.p99_ms())),
        reference: format!("raw sign + verify p50: {}", ms(raw_p50_ms)),
        ratio: times(warm.p50_ms(), raw_p50_ms),
        target: "p50 < 5 ms".into(),
        status: Status::of(warm.count() > 0 && warm.p50_ms() < 5.0),
    });
    rows.push(Row {
        figure: format!("token join, new TLS connection (p50 / p99, n={})", cold.count()),
        value: format!("{} / {}", ms(cold.p50_ms()), ms(cold.p99_ms())),
        reference: format!("warm join p50: {}", ms(warm.p50_ms())),
        ratio: times(cold.p50_ms(), warm.p50_ms()),
        target: "-".into(),
        status: Status::Info,
    });
    Ok(())
}
