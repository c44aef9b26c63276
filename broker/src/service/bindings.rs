//! Instance bindings: an outside identity a join proved (an EC2 instance id,
//! `join/ec2.rs`) is bound to the one bot instance that joined with it, so a
//! second join presenting it is refused unless its join token allows a rejoin.
//! An agent whose state was wiped, or whose identity expired while its machine
//! was stopped, must join again from the same machine: an admin lists the
//! bindings and releases that one, instead of opening `allow_rejoin` for every
//! machine of the token (as Teleport and SPIRE let an admin evict an agent).
//!
//! RBAC: kind `bot_instance`, names = bot names; listing needs `list`,
//! releasing needs `delete` on the binding's bot. A release is audited
//! (`instance_binding.release`: actor, binding, its bot and bot instance).
//! Releasing leaves the bound bot instance as it is: its identity stays valid
//! until it expires. If the machine may be compromised, lock that instance or
//! revoke its certificates too (docs/join-methods/ec2.md).

use super::instances::KIND;
use super::{Broker, ServiceError};
use crate::store::{InstanceBinding, StoreError};
use serde_json::json;
use sigil_core::domain::{Caller, Method};

/// Largest page a list returns.
pub const MAX_PAGE: usize = 1000;
/// Most bytes of a binding's subject (an EC2 one is `ACCOUNT:INSTANCE_ID`).
pub const MAX_SUBJECT: usize = 256;
/// The audit action of a release.
pub const RELEASE_ACTION: &str = "instance_binding.release";

/// A stored binding key split into its join method and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingView {
    /// Join method name (`ec2`).
    pub method: String,
    /// What is bound within the method.
    pub subject: String,
    /// The binding as stored.
    pub binding: InstanceBinding,
}

impl From<InstanceBinding> for BindingView {
    fn from(b: InstanceBinding) -> Self {
        let (method, subject) = b.key.split_once(':').map(|(m, s)| (m.to_string(), s.to_string())).unwrap_or_else(|| (String::new(), b.key.clone()));
        Self { method, subject, binding: b }
    }
}

/// The join method named `field`, which must be a known one.
fn method(field: &str, name: &str) -> Result<Method, ServiceError> {
    Method::parse(name).map_err(|_| ServiceError::invalid(field, format!("{name:?} is not a join method ({})", Method::names().join(", "))))
}

/// The store key of `method` + `subject`; both named in the error when bad.
pub fn binding_key(method_name: &str, subject: &str) -> Result<String, ServiceError> {
    let m = method("method", method_name)?;
    if subject.is_empty() {
        return Err(ServiceError::invalid("subject", "must not be empty (see `sigil bot binding list`)"));
    }
    if subject.len() > MAX_SUBJECT {
        return Err(ServiceError::invalid("subject", format!("{} bytes, at most {MAX_SUBJECT}", subject.len())));
    }
    if subject.chars().any(char::is_control) {
        return Err(ServiceError::invalid("subject", "must not contain control characters"));
    }
    Ok(format!("{}:{subject}", m.name()))
}

impl Broker {
    async fn deny_bindings(&self, caller: &Caller, verb: &str, name: &str, why: sigil_core::domain::Denied) -> ServiceError {
        self.audit
            .record(self.now(), &format!("instance_binding.{verb}"), caller.bot.name.as_str(), name, "denied", json!({"reason": why.0}))
            .await;
        why.into()
    }

    /// Bindings of `bot` (empty: every bot, which needs `list` on every name)
    /// and of join method `method` (empty: every method), by key after `after`.
    pub async fn list_bindings(&self, caller: &Caller, bot: &str, method_name: &str, after: &str, limit: usize) -> Result<Vec<BindingView>, ServiceError> {
        let check = if bot.is_empty() { caller.check_verb(KIND, "list") } else { caller.check_verb_on(KIND, "list", bot) };
        if let Err(why) = check {
            return Err(self.deny_bindings(caller, "list", bot, why).await);
        }
        let prefix = if method_name.is_empty() { String::new() } else { format!("{}:", method("method", method_name)?.name()) };
        let limit = if limit == 0 { MAX_PAGE } else { limit.min(MAX_PAGE) };
        let items = self.store.list_instance_bindings(bot, &prefix, after, limit).await?;
        Ok(items.into_iter().map(BindingView::from).collect())
    }

    /// Releases the binding of `method` + `subject` (`delete` on its bot's
    /// name): the outside identity may join again. The bound bot instance is
    /// left as it is. Audited.
    pub async fn release_binding(&self, caller: &Caller, method_name: &str, subject: &str) -> Result<BindingView, ServiceError> {
        let key = binding_key(method_name, subject)?;
        let not_found = || ServiceError::Store(StoreError::NotFound { kind: "instance_binding", name: key.clone() });
        let found = self.store.instance_binding(&key).await?;
        // Whether a binding exists is told only to a caller who may release some.
        let check = match &found {
            Some(b) => caller.check_verb_on(KIND, "delete", &b.bot),
            None => caller.names_granted(KIND, "delete").map(|_| ()),
        };
        if let Err(why) = check {
            return Err(self.deny_bindings(caller, "release", &key, why).await);
        }
        if found.is_none() {
            return Err(not_found());
        }
        let released = match self.store.delete_instance_binding(&key).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let view = BindingView::from(released);
        let detail = json!({
            "method": view.method,
            "subject": view.subject,
            "bot": view.binding.bot,
            "bot_instance": view.binding.instance,
            "bound_at": view.binding.bound_at,
        });
        self.audit.record(self.now(), RELEASE_ACTION, caller.bot.name.as_str(), &key, "ok", detail).await;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<String, ServiceError>) -> String {
        match r {
            Err(ServiceError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_binding_key_is_the_method_and_subject_and_bad_parts_are_named() {
        assert_eq!(binding_key("ec2", "111122223333:i-0abc").unwrap(), "ec2:111122223333:i-0abc");
        assert_eq!(field(binding_key("nope", "x")), "method");
        assert_eq!(field(binding_key("", "x")), "method");
        assert_eq!(field(binding_key("ec2", "")), "subject");
        assert_eq!(field(binding_key("ec2", &"a".repeat(MAX_SUBJECT + 1))), "subject");
        assert_eq!(field(binding_key("ec2", "i-1\u{1b}[2J")), "subject");
    }

    #[test]
    fn a_stored_key_splits_at_the_first_colon() {
        let b = InstanceBinding { key: "ec2:111122223333:i-1".into(), instance: "x".into(), bot: "b".into(), bound_at: 1 };
        let v = BindingView::from(b);
        assert_eq!((v.method.as_str(), v.subject.as_str()), ("ec2", "111122223333:i-1"));
    }
}
