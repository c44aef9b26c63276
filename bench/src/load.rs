//! The two ways load is applied, both bounded by a request count AND a duration
//! so a run always stops by itself:
//! - closed loop: N clients, each sends its next request when the previous one
//!   returns (finds the peak throughput);
//! - open loop: requests released at a fixed rate whatever the responses do
//!   (latency at a given load, e.g. half of the peak).

use crate::stats::Sample;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Upper bounds of one phase; whichever is reached first ends it.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Most requests sent in the phase (all clients together).
    pub max_requests: u64,
    /// Longest wall time of the phase.
    pub duration: Duration,
}

/// Runs `op` from each client in a closed loop until the budget is spent.
/// `op(client, i)` gets the request's global index `i`.
pub async fn closed_loop<C, F, Fut>(clients: Vec<C>, budget: Budget, op: F) -> Sample
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + budget.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let (next, op) = (next.clone(), op.clone());
        tasks.spawn(async move {
            let mut s = Sample::with_capacity(1024);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= budget.max_requests || Instant::now() >= deadline {
                    return s;
                }
                let t = Instant::now();
                match op(c.clone(), i).await {
                    Ok(()) => s.ok(t.elapsed()),
                    Err(e) => s.err(e),
                }
            }
        });
    }
    collect(tasks, start).await
}

/// Releases `op` at `rate` requests per second, round-robin over the clients,
/// until the budget is spent; then waits for the requests in flight.
pub async fn open_loop<C, F, Fut>(clients: Vec<C>, rate: f64, budget: Budget, op: F) -> Sample
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + budget.duration;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut i: u64 = 0;
    while i < budget.max_requests && !clients.is_empty() {
        let due = start + interval.mul_f64(i as f64);
        if due >= deadline {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let c = clients[(i % clients.len() as u64) as usize].clone();
        let op = op.clone();
        tasks.spawn(async move {
            let mut s = Sample::with_capacity(1);
            // Measured from the actual send: the scheduler never waits on
            // responses, so a slow server cannot hide queueing from this figure.
            let t = Instant::now();
            match op(c, i).await {
                Ok(()) => s.ok(t.elapsed()),
                Err(e) => s.err(e),
            }
            s
        });
        i += 1;
    }
    collect(tasks, start).await
}

/// Alternating reference / API slices per throughput measurement (what
/// every scenario passes to [`alternate`]).
pub const ROUNDS: u32 = 5;

/// Measures a reference and an API phase in alternating slices (`rounds` of
/// each, `budget` split between them), so that both see the same background
/// load on a shared machine. Returns (reference, api) with their summed times.
pub async fn alternate<R, A, AF>(rounds: u32, budget: Budget, mut reference: R, mut api: A) -> anyhow::Result<(Sample, Sample)>
where
    R: FnMut(Budget) -> anyhow::Result<Sample>,
    A: FnMut(Budget) -> AF,
    AF: Future<Output = Sample>,
{
    let rounds = rounds.max(1);
    let slice = Budget { max_requests: (budget.max_requests / u64::from(rounds)).max(1), duration: budget.duration / rounds };
    let (mut r_all, mut a_all) = (Sample::default(), Sample::default());
    let (mut r_time, mut a_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let r = tokio::task::block_in_place(|| reference(slice))?;
        r_time += r.elapsed;
        r_all.merge(r);
        let a = api(slice).await;
        a_time += a.elapsed;
        a_all.merge(a);
    }
    Ok((r_all.finish(r_time), a_all.finish(a_time)))
}

async fn collect(mut tasks: tokio::task::JoinSet<Sample>, start: Instant) -> Sample {
    let mut all = Sample::with_capacity(4096);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(s) => all.merge(s),
            Err(e) => all.err(format!("client task failed: {e}")),
        }
    }
    all.finish(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alternate_sums_both_sides_over_the_rounds() {
        let budget = Budget { max_requests: 40, duration: Duration::from_secs(10) };
        let mut slices = 0;
        let (r, a) = alternate(
            4,
            budget,
            |b| {
                slices += 1;
                assert_eq!(b.max_requests, 10);
                let mut s = Sample::with_capacity(1);
                s.ok(Duration::from_millis(1));
                Ok(s.finish(Duration::from_millis(100)))
            },
            |b| closed_loop(vec![(); 2], b, |_, _| async { Ok(()) }),
        )
        .await
        .unwrap();
        assert_eq!(slices, 4);
        assert_eq!(r.count(), 4);
        assert_eq!(r.elapsed, Duration::from_millis(400));
        assert_eq!(a.count(), 40);
    }

    #[tokio::test]
    async fn closed_loop_stops_at_the_request_budget() {
        let budget = Budget { max_requests: 50, duration: Duration::from_secs(30) };
        let s = closed_loop(vec![(); 4], budget, |_, _| async { Ok(()) }).await;
        assert_eq!(s.count(), 50);
        assert_eq!(s.errors, 0);
    }

    #[tokio::test]
    async fn closed_loop_stops_at_the_deadline() {
        let budget = Budget { max_requests: u64::MAX, duration: Duration::from_millis(200) };
        let s = closed_loop(vec![(); 2], budget, |_, _| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(())
        })
        .await;
        assert!(s.elapsed < Duration::from_secs(2), "ran {:?}", s.elapsed);
        assert!(s.count() > 0 && s.count() < 100, "{} requests", s.count());
    }

    #[tokio::test]
    async fn open_loop_holds_the_requested_rate_and_counts_errors() {
        let budget = Budget { max_requests: 1000, duration: Duration::from_millis(500) };
        let s = open_loop(vec![(); 3], 100.0, budget, |_, i| async move {
            if i % 10 == 0 {
                Err("every tenth fails".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        let total = s.count() as u64 + s.errors;
        assert!((45..=55).contains(&total), "{total} requests in 0.5 s at 100/s");
        assert_eq!(s.errors, 5);
        assert_eq!(s.first_error.as_deref(), Some("every tenth fails"));
    }
}
