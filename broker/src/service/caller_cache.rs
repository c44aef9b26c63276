//! Resolved callers, remembered per client certificate until the store changes.
//!
//! Every API request authenticates: parse the client certificate, read the bot
//! instance, the bot and its roles, and deserialize them into a [`Caller`].
//! The result depends only on the certificate and on stored records, so it is
//! kept keyed by the certificate's DER and tagged with the store's change
//! counter ([`crate::store::Store::change_counter`]) read *before* the records
//! were: any committed change to resources or bot instances (a role edited, a
//! bot deleted, an instance locked or renewed) moves the counter and retires
//! every entry at once. Entries are also tied to the authorities they were
//! checked against (the [`crate::ca::AuthorityCell`] snapshot): a change of the
//! CAs (an internal CA retired) retires every entry too, so the next request
//! checks its certificate's issuer again. Time-dependent checks (certificate expiry) are not
//! cached: the caller makes them on every request. Failures are never cached.

use super::identity::Authenticated;
use crate::ca::Authority;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most remembered callers; the map is emptied when it would grow past this.
const CAPACITY: usize = 4096;

/// Resolved callers by client certificate DER.
#[derive(Default)]
pub struct CallerCache {
    entries: Mutex<Entries>,
}

/// The callers resolved at one value of the store's change counter, against
/// one snapshot of the authorities.
#[derive(Default)]
struct Entries {
    counter: u64,
    authority: Option<Arc<Authority>>,
    callers: HashMap<Vec<u8>, Authenticated>,
}

impl Entries {
    fn checked_against(&self, authority: &Arc<Authority>) -> bool {
        self.authority.as_ref().is_some_and(|a| Arc::ptr_eq(a, authority))
    }
}

impl std::fmt::Debug for CallerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerCache")
    }
}

impl CallerCache {
    /// The caller resolved for `cert_der`, if it was resolved from records read
    /// while the store's change counter was `counter` and checked against
    /// `authority`.
    pub fn get(&self, cert_der: &[u8], counter: u64, authority: &Arc<Authority>) -> Option<Authenticated> {
        let e = self.entries.lock().ok()?;
        if e.counter != counter || !e.checked_against(authority) {
            return None;
        }
        e.callers.get(cert_der).cloned()
    }

    /// Remembers `a` for `cert_der`, resolved from records read at `counter`
    /// and checked against `authority`. A newer counter or other authorities
    /// retire everything remembered before; a result read at an older counter
    /// than the newest seen is dropped.
    pub fn put(&self, cert_der: &[u8], counter: u64, authority: &Arc<Authority>, a: &Authenticated) {
        let Ok(mut e) = self.entries.lock() else { return };
        if counter > e.counter || (counter == e.counter && !e.checked_against(authority)) {
            e.callers.clear();
            e.counter = counter;
            e.authority = Some(authority.clone());
        }
        if counter != e.counter {
            return;
        }
        if e.callers.len() >= CAPACITY {
            e.callers.clear();
        }
        e.callers.insert(cert_der.to_vec(), a.clone());
    }
}
