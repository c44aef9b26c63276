//! What makes the agent renew before a credential's half-life: SIGUSR1, a
//! change of the signing CA and a CA key unpublished renew everything; a CA key
//! published (`prepare`) renews only what carries the bundle (X.509-SVIDs with
//! their `bundle.pem` or Workload API bundle field). See [`crate::bundle`].
//!
//! Both are counters in one `watch` channel, so a holder that was busy renewing
//! when a change came still sees it afterwards ([`until_due`] compares with
//! what the holder had when it started, not with the last wake-up).

use tokio::sync::watch;

/// Renewal counters; each only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Renew everything (signal, another key signs, a key unpublished).
    pub all: u64,
    /// Renew what carries the trust bundle (any bundle change).
    pub bundle: u64,
    /// A database or kubernetes CA changed: the outputs writing that CA's
    /// bundle compare it with what they wrote ([`crate::bundle::AccessCa`]).
    pub access: u64,
    /// The SSH KRL changed: the `ssh-host` outputs rewrite it alone.
    pub krl: u64,
}

/// What else than a renewal a holder wakes for: the files it rewrites alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Follows {
    /// A database or kubernetes CA ([`Renewal::access`]).
    pub access: bool,
    /// The SSH KRL ([`Renewal::krl`]).
    pub krl: bool,
}

impl Renewal {
    /// Epoch of credentials that carry the bundle: moves when either counter
    /// moves (both only grow, so their sum does too).
    pub fn with_bundle(&self) -> u64 {
        self.all.wrapping_add(self.bundle)
    }

    /// Whether a holder that last renewed at `seen` must renew now.
    pub fn due(&self, seen: Renewal, carries_bundle: bool) -> bool {
        self.all != seen.all || (carries_bundle && self.bundle != seen.bundle)
    }
}

/// Resolves once `rx` holds a renewal that concerns a holder that last renewed
/// at `seen`; never resolves if the sender is gone.
pub async fn until_due(rx: &mut watch::Receiver<Renewal>, seen: Renewal, carries_bundle: bool) {
    until_due_or_follow(rx, seen, carries_bundle, Follows::default()).await
}

/// [`until_due`], also resolving on a change of what the holder `follows`
/// (it then tells the two apart with [`Renewal::due`]).
pub async fn until_due_or_follow(rx: &mut watch::Receiver<Renewal>, seen: Renewal, carries_bundle: bool, follows: Follows) {
    loop {
        let now = *rx.borrow_and_update();
        if now.due(seen, carries_bundle) || (follows.access && now.access != seen.access) || (follows.krl && now.krl != seen.krl) {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_or_signing_change_renews_everything() {
        let seen = Renewal { all: 3, bundle: 7, access: 0, krl: 0 };
        let now = Renewal { all: 4, bundle: 7, access: 0, krl: 0 };
        assert!(now.due(seen, false) && now.due(seen, true));
        assert_ne!(now.with_bundle(), seen.with_bundle());
    }

    #[test]
    fn a_published_change_renews_only_what_carries_the_bundle() {
        let seen = Renewal { all: 3, bundle: 7, access: 0, krl: 0 };
        let now = Renewal { all: 3, bundle: 8, access: 0, krl: 0 };
        assert!(!now.due(seen, false));
        assert!(now.due(seen, true));
        assert_ne!(now.with_bundle(), seen.with_bundle());
        assert!(!seen.due(seen, true));
    }

    #[test]
    fn a_change_made_while_the_holder_was_busy_is_not_missed() {
        let (tx, mut rx) = watch::channel(Renewal::default());
        let seen = *rx.borrow_and_update();
        // The change came (and another waiter marked it seen) while this holder renewed.
        tx.send_modify(|r| r.bundle += 1);
        rx.borrow_and_update();
        assert!(ready_now(until_due(&mut rx, seen, true)));
    }

    /// Whether `f` is ready after one poll (no timer involved).
    fn ready_now<F: std::future::Future>(f: F) -> bool {
        let mut f = std::pin::pin!(f);
        f.as_mut().poll(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_ready()
    }

    #[test]
    fn an_access_ca_change_wakes_only_the_outputs_following_it_and_renews_nothing() {
        let (tx, mut rx) = watch::channel(Renewal::default());
        let seen = *rx.borrow_and_update();
        tx.send_modify(|r| r.access += 1);
        assert!(!ready_now(until_due(&mut rx, seen, true)));
        assert!(ready_now(until_due_or_follow(&mut rx, seen, false, Follows { access: true, krl: false })));
        assert!(!ready_now(until_due_or_follow(&mut rx, seen, false, Follows { access: false, krl: true })));
        assert!(!rx.borrow().due(seen, true), "waking for the CA is not a renewal");
    }

    #[test]
    fn a_krl_change_wakes_only_the_outputs_writing_it_and_renews_nothing() {
        let (tx, mut rx) = watch::channel(Renewal::default());
        let seen = *rx.borrow_and_update();
        tx.send_modify(|r| r.krl += 1);
        assert!(!ready_now(until_due(&mut rx, seen, true)));
        assert!(!ready_now(until_due_or_follow(&mut rx, seen, true, Follows { access: true, krl: false })));
        assert!(ready_now(until_due_or_follow(&mut rx, seen, false, Follows { access: false, krl: true })));
        assert!(!rx.borrow().due(seen, true));
    }

    #[test]
    fn a_bundle_change_does_not_wake_a_holder_without_the_bundle() {
        let (tx, mut rx) = watch::channel(Renewal::default());
        let seen = *rx.borrow_and_update();
        tx.send_modify(|r| r.bundle += 1);
        assert!(!ready_now(until_due(&mut rx, seen, false)), "woken by a change that does not concern it");
        assert!(ready_now(until_due(&mut rx, seen, true)));
        tx.send_modify(|r| r.all += 1);
        assert!(ready_now(until_due(&mut rx, seen, false)));
    }
}
