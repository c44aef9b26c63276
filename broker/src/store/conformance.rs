//! The backend-neutral store conformance suite: every [`Store`] method's
//! contract, as async functions over a fresh store. Each backend's tests run
//! all of it with [`crate::store_conformance_tests!`] and a constructor of
//! fresh, empty stores ([`Subject`]).
//!
//! Stored-text corruption is set up with plain SQL that both backends accept
//! (the tables and columns have the same names in every backend).

use super::*;
use serde_json::json;
use std::sync::Arc;

/// Runs SQL on the store's database directly (test setup only).
#[async_trait]
pub trait RawSql: Send + Sync {
    /// Executes `sql`; panics on failure.
    async fn exec(&self, sql: &str);
}

/// A fresh, empty store and a raw handle on its database.
pub struct Subject {
    /// The store under test.
    pub store: Arc<dyn Store>,
    /// Raw SQL on the same database.
    pub raw: Arc<dyn RawSql>,
}

/// One test per conformance case, each on a fresh store from `$fresh` (an
/// `async fn() -> Subject`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($fresh:path) => {
        $crate::store_conformance_tests!(@cases $fresh;
            create_update_and_stale_revisions,
            list_pages_by_name_per_kind,
            delete_checks_revision_and_cascades_from_bots,
            consume_token_redeems_a_token_secret_once,
            use_token_counts_uses_until_the_limit,
            fifty_concurrent_redemptions_of_a_single_use_token_succeed_once,
            token_update_changes_limits_and_can_unbind_the_keypair,
            a_batch_lands_every_write_in_order_with_new_revisions,
            a_failing_write_rolls_back_every_earlier_write_of_its_batch,
            instances_and_caller_records,
            instance_activity_heartbeats_and_listing,
            expired_instances_are_deleted_in_bounded_batches_once_their_identities_expired,
            advance_generation_survives_a_lost_certificate_but_detects_a_copy,
            two_holders_of_one_generation_are_told_apart_by_key,
            keypair_bind_spends_the_registration_secret_once,
            keypair_advance_counts_uses_retries_and_locks_a_copy,
            concurrent_keypair_joins_at_one_sequence_succeed_once_and_lock,
            ca_keys_round_trip_in_creation_order,
            ca_key_rotation_steps_are_compare_and_set,
            concurrent_rotation_steps_land_once,
            reading_ca_keys_leaves_the_change_counter,
            audit_append_list_and_prune,
            change_counter_grows_after_writes,
            corrupt_stored_json_is_an_error,
            a_missed_compare_and_set_is_reported_as_changed,
            concurrent_swaps_at_one_expected_state_land_once,
            a_challenge_is_taken_once_and_never_after_expiry,
            a_flooding_peer_evicts_only_its_own_oldest_challenges,
            a_new_peer_is_never_refused_when_others_filled_the_challenge_table,
            a_challenge_flood_naming_one_token_spares_the_other_tokens,
            expired_challenges_free_their_room,
            challenges_do_not_move_the_change_counter,
            fifty_concurrent_takes_of_one_challenge_succeed_once,
            issuance_events_are_found_by_serial_or_instance_while_unexpired,
            revocations_are_recorded_once_in_sequence_and_drop_off_after_expiry,
            an_instance_binding_is_taken_once_moves_only_on_rebind_and_goes_with_its_bot,
            fifty_concurrent_binds_of_one_key_create_one_instance,
            instance_bindings_are_listed_by_bot_and_prefix_and_a_released_one_binds_again,
        );
    };
    (@cases $fresh:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::store::conformance::$case($fresh().await).await;
            }
        )*
    };
}

fn doc(name: &str, revision: i64) -> Doc {
    Doc { name: name.into(), revision, spec: json!({"name": name}) }
}

fn token(name: &str, bot: &str, method: &str, max_uses: i64, expires_at: i64) -> TokenState {
    TokenState { name: name.into(), bot: bot.into(), method: method.into(), uses: 0, max_uses, expires_at }
}

fn instance(id: &str, bot: &str) -> BotInstance {
    BotInstance {
        id: id.into(),
        bot: bot.into(),
        generation: 1,
        pending: 1,
        locked: false,
        join_attributes: json!({"method": "token", "k": "v"}),
        created_at: 7,
        identity_expires_at: 3600,
    }
}

fn rejected(r: TokenRejection) -> StoreError {
    StoreError::TokenRejected(r)
}

/// create: revision 1, a second create refused; update: revision + 1, a stale
/// revision refused with nothing changed; get/update of a missing name: NotFound.
pub async fn create_update_and_stale_revisions(s: Subject) {
    let s = s.store;
    assert_eq!(s.create(Kind::Role, &doc("r", 0), None).await.unwrap(), 1);
    assert!(matches!(s.create(Kind::Role, &doc("r", 0), None).await, Err(StoreError::AlreadyExists { .. })));
    // The same name in another kind is another document.
    assert_eq!(s.create(Kind::Bot, &doc("r", 0), None).await.unwrap(), 1);
    let v2 = Doc { spec: json!({"name": "r", "v": 2}), ..doc("r", 1) };
    assert_eq!(s.update(Kind::Role, &v2, None).await.unwrap(), 2);
    let stale = Doc { spec: json!({"stale": true}), ..doc("r", 1) };
    let err = s.update(Kind::Role, &stale, None).await.unwrap_err();
    assert_eq!(err, StoreError::Conflict { kind: "role", name: "r".into(), expected: 1, current: 2 });
    let got = s.get(Kind::Role, "r").await.unwrap();
    assert_eq!((got.revision, got.spec), (2, json!({"name": "r", "v": 2})));
    assert_eq!(s.get(Kind::Bot, "r").await.unwrap().spec, json!({"name": "r"}));
    assert!(matches!(s.get(Kind::Role, "nope").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.update(Kind::Role, &doc("nope", 1), None).await, Err(StoreError::NotFound { .. })));
}

/// list: by name, strictly after `after`, at most `limit`, one kind only.
pub async fn list_pages_by_name_per_kind(s: Subject) {
    let s = s.store;
    for i in (0..25).rev() {
        s.create(Kind::Role, &doc(&format!("r{i:02}"), 0), None).await.unwrap();
    }
    s.create(Kind::Bot, &doc("r99", 0), None).await.unwrap();
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = s.list(Kind::Role, &after, 10).await.unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = last.name.clone();
        seen.extend(page.into_iter().map(|d| d.name));
    }
    let want: Vec<String> = (0..25).map(|i| format!("r{i:02}")).collect();
    assert_eq!(seen, want);
    assert_eq!(s.list(Kind::Role, "r23", 10).await.unwrap().len(), 1);
    assert!(s.list(Kind::JoinToken, "", 10).await.unwrap().is_empty());
}

/// delete: a stale revision is refused, 0 means any; deleting a bot deletes
/// its instances and join tokens (documents and redeemable state).
pub async fn delete_checks_revision_and_cascades_from_bots(s: Subject) {
    let s = s.store;
    s.create(Kind::Role, &doc("r", 0), None).await.unwrap();
    s.update(Kind::Role, &doc("r", 1), None).await.unwrap();
    assert!(matches!(s.delete(Kind::Role, "r", 1).await, Err(StoreError::Conflict { expected: 1, current: 2, .. })));
    s.delete(Kind::Role, "r", 2).await.unwrap();
    assert!(matches!(s.get(Kind::Role, "r").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.delete(Kind::Role, "r", 0).await, Err(StoreError::NotFound { .. })));

    s.create(Kind::Bot, &doc("b", 0), None).await.unwrap();
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "token", 5, i64::MAX), Some("h")))).await.unwrap();
    s.create_instance(&instance("i", "b")).await.unwrap();
    s.create(Kind::Bot, &doc("other", 0), None).await.unwrap();
    s.create_instance(&instance("j", "other")).await.unwrap();
    s.delete(Kind::Bot, "b", 0).await.unwrap();
    assert!(matches!(s.get(Kind::JoinToken, "t").await, Err(StoreError::NotFound { .. })));
    assert!(matches!(s.token_state("t").await, Err(StoreError::NotFound { .. })));
    assert_eq!(s.consume_token("h", 1).await, Err(rejected(TokenRejection::Unknown)));
    assert!(matches!(s.instance("i").await, Err(StoreError::IdentityRejected(_))));
    assert_eq!(s.instance("j").await.unwrap().bot, "other", "other bots' instances stay");
}

/// consume_token: one use per call of a `token` secret; used up, expired,
/// unknown and other methods' secrets are refused and use nothing.
pub async fn consume_token_redeems_a_token_secret_once(s: Subject) {
    let s = s.store;
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "token", 1, 100), Some("h")))).await.unwrap();
    assert_eq!(s.consume_token("h", 100).await, Err(rejected(TokenRejection::Expired)));
    assert_eq!(s.token_state("t").await.unwrap().uses, 0, "an expired redemption uses nothing");
    let st = s.consume_token("h", 50).await.unwrap();
    assert_eq!((st.name.as_str(), st.bot.as_str(), st.uses, st.max_uses), ("t", "b", 1, 1));
    assert_eq!(s.consume_token("h", 50).await, Err(rejected(TokenRejection::UsedUp)));
    assert_eq!(s.consume_token("nope", 50).await, Err(rejected(TokenRejection::Unknown)));

    s.create(Kind::JoinToken, &doc("k", 0), Some((&token("k", "b", "bound_keypair", 5, 100), Some("kh")))).await.unwrap();
    assert_eq!(
        s.consume_token("kh", 50).await,
        Err(rejected(TokenRejection::WrongMethod { name: "k".into(), method: "bound_keypair".into() }))
    );
    assert_eq!(s.token_state("k").await.unwrap().uses, 0);
    // A token without a secret has none to redeem.
    s.create(Kind::JoinToken, &doc("n", 0), Some((&token("n", "b", "github", 5, 100), None))).await.unwrap();
    assert_eq!(s.token_state("n").await.unwrap().method, "github");
    assert!(matches!(s.token_state("nope").await, Err(StoreError::NotFound { .. })));
}

/// use_token: counts joins by name up to `max_uses`; expired refused.
pub async fn use_token_counts_uses_until_the_limit(s: Subject) {
    let s = s.store;
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "github", 2, 100), None))).await.unwrap();
    assert_eq!(s.use_token("t", 100).await, Err(rejected(TokenRejection::Expired)));
    assert_eq!(s.use_token("t", 1).await.unwrap().uses, 1);
    assert_eq!(s.use_token("t", 1).await.unwrap().uses, 2);
    assert_eq!(s.use_token("t", 1).await, Err(rejected(TokenRejection::UsedUp)));
    assert_eq!(s.token_state("t").await.unwrap().uses, 2);
    assert_eq!(s.use_token("nope", 1).await, Err(rejected(TokenRejection::Unknown)));
}

/// 50 concurrent redemptions of one single-use token, by secret and by name:
/// exactly one succeeds, the rest are told it is used up.
pub async fn fifty_concurrent_redemptions_of_a_single_use_token_succeed_once(s: Subject) {
    let s = s.store;
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "token", 1, i64::MAX), Some("h")))).await.unwrap();
    s.create(Kind::JoinToken, &doc("u", 0), Some((&token("u", "b", "github", 1, i64::MAX), None))).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    (s.consume_token("h", 1).await, s.use_token("u", 1).await)
                } else {
                    let u = s.use_token("u", 1).await;
                    (s.consume_token("h", 1).await, u)
                }
            })
        })
        .collect();
    let (mut by_secret, mut by_name) = (Vec::new(), Vec::new());
    for t in tasks {
        let (a, b) = t.await.unwrap();
        by_secret.push(a);
        by_name.push(b);
    }
    for results in [by_secret, by_name] {
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.iter().filter(|r| r.is_err()).all(|r| r == &Err(rejected(TokenRejection::UsedUp))), "{results:?}");
    }
    assert_eq!(s.token_state("t").await.unwrap().uses, 1);
    assert_eq!(s.token_state("u").await.unwrap().uses, 1);
}

/// A token update changes expiry and limit with the document; `unbind_keypair`
/// drops the binding in the same transaction.
pub async fn token_update_changes_limits_and_can_unbind_the_keypair(s: Subject) {
    let s = s.store;
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "bound_keypair", 1, 100), Some("reg")))).await.unwrap();
    s.bind_keypair("t", "K1", Some("reg"), 1).await.unwrap();
    let state = token("t", "b", "bound_keypair", 3, 200);
    let upd = TokenUpdate { state: state.clone(), unbind_keypair: false };
    assert_eq!(s.update(Kind::JoinToken, &doc("t", 1), Some(&upd)).await.unwrap(), 2);
    let got = s.token_state("t").await.unwrap();
    assert_eq!((got.max_uses, got.expires_at), (3, 200));
    assert!(s.keypair_binding("t").await.unwrap().is_some());
    let upd = TokenUpdate { state, unbind_keypair: true };
    // A stale revision changes neither the document nor the token.
    assert!(matches!(s.update(Kind::JoinToken, &doc("t", 1), Some(&upd)).await, Err(StoreError::Conflict { .. })));
    assert!(s.keypair_binding("t").await.unwrap().is_some());
    assert_eq!(s.update(Kind::JoinToken, &doc("t", 2), Some(&upd)).await.unwrap(), 3);
    assert!(s.keypair_binding("t").await.unwrap().is_none());
    // Unbound: the next registration binds a new key (no secret: the operator set it).
    s.bind_keypair("t", "K2", None, 1).await.unwrap();
    assert_eq!(s.keypair_binding("t").await.unwrap().unwrap().public_key, "K2");
}

fn create_w(kind: Kind, d: Doc, token: Option<(TokenState, Option<String>)>) -> BatchWrite {
    BatchWrite::Create { kind, doc: d, token }
}

fn update_w(kind: Kind, d: Doc, token: Option<TokenUpdate>) -> BatchWrite {
    BatchWrite::Update { kind, doc: d, token }
}

fn versioned(name: &str, revision: i64, v: i64) -> Doc {
    Doc { name: name.into(), revision, spec: json!({"name": name, "v": v}) }
}

/// write_batch: creates (revision 1) and updates (revision + 1) of every
/// kind, a join token's state with them, all readable afterwards.
pub async fn a_batch_lands_every_write_in_order_with_new_revisions(s: Subject) {
    let s = s.store;
    s.create(Kind::Role, &versioned("r", 0, 1), None).await.unwrap();
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "token", 1, 100), Some("h-t")))).await.unwrap();
    let before = s.change_counter();
    let upd = TokenUpdate { state: token("t", "b", "token", 5, 500), unbind_keypair: false };
    let revs = s
        .write_batch(&[
            update_w(Kind::Role, versioned("r", 1, 2), None),
            create_w(Kind::Bot, doc("b", 0), None),
            create_w(Kind::JoinToken, doc("t2", 0), Some((token("t2", "b", "token", 2, 300), Some("h-t2".into())))),
            update_w(Kind::JoinToken, doc("t", 1), Some(upd)),
            create_w(Kind::WorkloadIdentity, doc("w", 0), None),
        ])
        .await
        .unwrap();
    assert_eq!(revs, vec![2, 1, 1, 2, 1]);
    assert!(s.change_counter() > before, "a batch moves the change counter");
    assert_eq!(s.get(Kind::Role, "r").await.unwrap(), versioned("r", 2, 2));
    assert_eq!(s.get(Kind::Bot, "b").await.unwrap().revision, 1);
    assert_eq!(s.get(Kind::WorkloadIdentity, "w").await.unwrap().revision, 1);
    let t = s.token_state("t").await.unwrap();
    assert_eq!((t.max_uses, t.expires_at), (5, 500));
    let rec = s.token_record(TokenKey::SecretHash("h-t")).await.unwrap().expect("an updated token keeps its secret hash");
    assert_eq!(rec.state.name, "t");
    let t2 = s.token_record(TokenKey::SecretHash("h-t2")).await.unwrap().expect("the created token is redeemable");
    assert_eq!((t2.state.name.as_str(), t2.state.max_uses, t2.state.uses), ("t2", 2, 0));
    assert_eq!(s.write_batch(&[]).await.unwrap(), Vec::<i64>::new());
}

/// write_batch is one transaction: when its third write fails (a create of
/// an existing name, an update at a stale revision, an update of a missing
/// document), the first two writes (a create, and an update of a document
/// and a join token's limits) are not visible afterwards, nor is the fourth.
pub async fn a_failing_write_rolls_back_every_earlier_write_of_its_batch(s: Subject) {
    let s = s.store;
    s.create(Kind::Role, &versioned("old", 0, 1), None).await.unwrap();
    s.create(Kind::Bot, &doc("taken", 0), None).await.unwrap();
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "token", 1, 100), Some("h-t")))).await.unwrap();
    let failing = [
        (create_w(Kind::Bot, doc("taken", 0), None), StoreError::AlreadyExists { kind: "bot", name: "taken".into() }),
        (
            update_w(Kind::Bot, doc("taken", 7), None),
            StoreError::Conflict { kind: "bot", name: "taken".into(), expected: 7, current: 1 },
        ),
        (update_w(Kind::Role, versioned("missing", 1, 1), None), StoreError::NotFound { kind: "role", name: "missing".into() }),
    ];
    for (third, want) in failing {
        let upd = TokenUpdate { state: token("t", "b", "token", 9, 900), unbind_keypair: false };
        let batch = [
            create_w(Kind::Role, versioned("new", 0, 1), None),
            update_w(Kind::Role, versioned("old", 1, 2), None),
            update_w(Kind::JoinToken, doc("t", 1), Some(upd)),
            third,
            create_w(Kind::JoinToken, doc("t2", 0), Some((token("t2", "b", "token", 1, 100), Some("h-t2".into())))),
        ];
        assert_eq!(s.write_batch(&batch).await.unwrap_err(), want);
        assert!(matches!(s.get(Kind::Role, "new").await, Err(StoreError::NotFound { .. })), "the created role was rolled back");
        assert_eq!(s.get(Kind::Role, "old").await.unwrap(), versioned("old", 1, 1), "the updated role keeps its old value");
        assert_eq!(s.get(Kind::JoinToken, "t").await.unwrap().revision, 1);
        let t = s.token_state("t").await.unwrap();
        assert_eq!((t.max_uses, t.expires_at), (1, 100), "the token keeps its old limits");
        assert!(s.token_record(TokenKey::Name("t2")).await.unwrap().is_none());
        assert!(s.token_record(TokenKey::SecretHash("h-t2")).await.unwrap().is_none());
        assert_eq!(s.get(Kind::Bot, "taken").await.unwrap().revision, 1);
    }
    // Afterwards the same first writes land on their own.
    let upd = TokenUpdate { state: token("t", "b", "token", 9, 900), unbind_keypair: false };
    let ok = [create_w(Kind::Role, versioned("new", 0, 1), None), update_w(Kind::JoinToken, doc("t", 1), Some(upd))];
    assert_eq!(s.write_batch(&ok).await.unwrap(), vec![1, 2]);
}

/// Instances round-trip; caller_records reads instance, bot and the bot's
/// existing roles in the bot's order.
pub async fn instances_and_caller_records(s: Subject) {
    let s = s.store;
    for r in ["r1", "r2"] {
        s.create(Kind::Role, &doc(r, 0), None).await.unwrap();
    }
    let bot = Doc { name: "b".into(), revision: 0, spec: json!({"name": "b", "roles": ["r2", "gone", "r1"]}) };
    s.create(Kind::Bot, &bot, None).await.unwrap();
    let inst = instance("i", "b");
    s.create_instance(&inst).await.unwrap();
    assert!(s.create_instance(&inst).await.is_err(), "an instance id is unique");
    assert_eq!(s.instance("i").await.unwrap(), inst);

    let rec = s.caller_records("i", "b").await.unwrap();
    assert_eq!(rec.instance, inst);
    let b = rec.bot.unwrap();
    assert_eq!((b.name.as_str(), b.revision), ("b", 1));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&b.spec).unwrap(), bot.spec);
    assert_eq!(rec.roles.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["r2", "r1"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&rec.roles[1].spec).unwrap(), json!({"name": "r1"}));
    assert!(s.caller_records("i", "other").await.unwrap().bot.is_none());
    assert!(matches!(s.caller_records("nope", "b").await.unwrap_err(), StoreError::IdentityRejected(_)));
    assert!(matches!(s.instance("nope").await.unwrap_err(), StoreError::IdentityRejected(_)));
}

/// Instance activity: created instances count as seen; touch only moves
/// `last_seen` forward; heartbeats are stored, rate limited per instance and
/// never touch another instance; listing pages by id, filters by bot and by
/// `seen_since` (expiry at read).
pub async fn instance_activity_heartbeats_and_listing(s: Subject) {
    let s = s.store;
    for (id, bot) in [("a", "b"), ("c", "b"), ("d", "other")] {
        s.create_instance(&instance(id, bot)).await.unwrap();
    }
    let r = s.instance_record("a").await.unwrap();
    assert_eq!((r.last_seen, r.heartbeat_at, r.heartbeat.clone()), (7, 0, None));
    assert_eq!(r.instance, instance("a", "b"));
    s.touch_instance("a", 100, 5000).await.unwrap();
    s.touch_instance("a", 50, 4000).await.unwrap();
    let r = s.instance_record("a").await.unwrap();
    assert_eq!(r.last_seen, 100, "last_seen never moves back");
    assert_eq!(r.instance.identity_expires_at, 5000, "identity_expires_at never moves back");
    assert!(matches!(s.touch_instance("nope", 1, 1).await, Err(StoreError::IdentityRejected(_))));

    let hb = InstanceHeartbeat {
        host_name: "h1".into(),
        os: "linux/x86_64".into(),
        agent_version: "0.1.0".into(),
        outputs: vec!["x509-svid:/o".into()],
        last_renewal: 99,
    };
    assert!(s.record_heartbeat("c", &hb, 200, 10).await.unwrap());
    assert!(!s.record_heartbeat("c", &InstanceHeartbeat { host_name: "h2".into(), ..hb.clone() }, 205, 10).await.unwrap(), "rate limited");
    let r = s.instance_record("c").await.unwrap();
    assert_eq!((r.last_seen, r.heartbeat_at, r.heartbeat.as_ref()), (200, 200, Some(&hb)));
    assert!(s.record_heartbeat("c", &InstanceHeartbeat { host_name: "h2".into(), ..hb.clone() }, 210, 10).await.unwrap());
    assert_eq!(s.instance_record("c").await.unwrap().heartbeat.unwrap().host_name, "h2");
    assert_eq!(s.instance_record("a").await.unwrap().heartbeat, None, "another instance is untouched");
    assert!(matches!(s.record_heartbeat("nope", &hb, 1, 0).await, Err(StoreError::IdentityRejected(_))));
    assert!(matches!(s.instance_record("nope").await, Err(StoreError::NotFound { .. })));

    let ids = |v: Vec<InstanceRecord>| v.into_iter().map(|r| r.instance.id).collect::<Vec<_>>();
    assert_eq!(ids(s.list_instances("", 0, "", 10).await.unwrap()), ["a", "c", "d"]);
    assert_eq!(ids(s.list_instances("", 0, "a", 1).await.unwrap()), ["c"]);
    assert_eq!(ids(s.list_instances("b", 0, "", 10).await.unwrap()), ["a", "c"]);
    assert_eq!(ids(s.list_instances("", 100, "", 10).await.unwrap()), ["a", "c"], "d was last seen at 7");
    assert_eq!(ids(s.list_instances("", 201, "", 10).await.unwrap()), ["c"]);
    // Deleting the bot deletes its instances with their activity.
    s.create(Kind::Bot, &doc("b", 0), None).await.unwrap();
    s.delete(Kind::Bot, "b", 0).await.unwrap();
    assert_eq!(ids(s.list_instances("", 0, "", 10).await.unwrap()), ["d"]);
}

/// The expiry sweep deletes only instances both unseen since `seen_before`
/// and without an identity valid at `now`, at most `limit` per call, moves
/// the change counter only when it deleted some, and a deleted instance is
/// never recreated by a late renewal or heartbeat.
pub async fn expired_instances_are_deleted_in_bounded_batches_once_their_identities_expired(s: Subject) {
    let s = s.store;
    let at = |id: &str, seen: i64, identity: i64| BotInstance { created_at: seen, identity_expires_at: identity, ..instance(id, "b") };
    // Unseen since 10 with identities that ended at 50: gone at now = 100.
    for id in ["old1", "old2", "old3"] {
        s.create_instance(&at(id, 10, 50)).await.unwrap();
    }
    // Unseen since 10, but its identity is valid until 500: kept.
    s.create_instance(&at("held", 10, 500)).await.unwrap();
    // Seen recently: kept.
    s.create_instance(&at("fresh", 95, 50)).await.unwrap();
    let before = s.change_counter();
    assert_eq!(s.delete_expired_instances(90, 100, 2).await.unwrap(), 2, "at most `limit` per call");
    assert!(s.change_counter() > before, "deleting moves the change counter (cached callers of the instance go)");
    assert_eq!(s.delete_expired_instances(90, 100, 2).await.unwrap(), 1);
    let quiet = s.change_counter();
    assert_eq!(s.delete_expired_instances(90, 100, 2).await.unwrap(), 0);
    assert_eq!(s.change_counter(), quiet, "a sweep that deletes nothing leaves the counter");
    for id in ["old1", "old2", "old3"] {
        assert!(matches!(s.instance_record(id).await, Err(StoreError::NotFound { .. })), "{id}");
        assert!(matches!(s.caller_records(id, "b").await, Err(StoreError::IdentityRejected(_))), "{id} still authenticates");
        assert!(matches!(s.touch_instance(id, 101, 9999).await, Err(StoreError::IdentityRejected(_))), "{id} renewed");
        let hb = InstanceHeartbeat::default();
        assert!(s.record_heartbeat(id, &hb, 101, 0).await.is_err(), "{id} heartbeat");
        assert!(matches!(s.instance_record(id).await, Err(StoreError::NotFound { .. })), "{id} came back");
    }
    assert!(s.instance_record("held").await.is_ok());
    assert!(s.instance_record("fresh").await.is_ok());
    // Once its identity expired, the held one goes too.
    assert_eq!(s.delete_expired_instances(90, 500, 10).await.unwrap(), 1);
    assert!(s.instance_record("held").await.is_err());
}

/// Renewal from the committed generation after a lost certificate re-issues;
/// a copy of an old generation locks the instance.
pub async fn advance_generation_survives_a_lost_certificate_but_detects_a_copy(s: Subject) {
    let s = s.store;
    s.create_instance(&instance("i", "b")).await.unwrap();
    assert_eq!(s.advance_generation("i", 1, "k1", "A").await.unwrap(), 2);
    assert_eq!(s.advance_generation("i", 1, "k1", "B").await.unwrap(), 2);
    assert_eq!(s.advance_generation("i", 2, "B", "C").await.unwrap(), 3);
    assert_eq!(s.advance_generation("i", 3, "C", "D").await.unwrap(), 4);
    assert_eq!(s.advance_generation("i", 4, "D", "E").await.unwrap(), 5);
    assert!(matches!(s.advance_generation("i", 3, "C", "X").await, Err(StoreError::IdentityRejected(_))));
    assert!(s.instance("i").await.unwrap().locked);
    assert!(s.advance_generation("i", 5, "E", "F").await.is_err());
    assert!(s.advance_generation("nope", 1, "a", "b").await.is_err());
}

/// Two holders of one generation: the first to present the pending one with
/// the other's key locks the instance.
pub async fn two_holders_of_one_generation_are_told_apart_by_key(s: Subject) {
    let s = s.store;
    s.create_instance(&instance("i", "b")).await.unwrap();
    assert_eq!(s.advance_generation("i", 1, "k", "LEGIT").await.unwrap(), 2);
    assert_eq!(s.advance_generation("i", 1, "k", "THIEF").await.unwrap(), 2);
    assert!(s.advance_generation("i", 2, "LEGIT", "n").await.is_err());
    assert!(s.instance("i").await.unwrap().locked);
}

/// bind_keypair: binds at sequence 0, spends the registration secret once;
/// binding again changes nothing; deleting the token drops the binding.
pub async fn keypair_bind_spends_the_registration_secret_once(s: Subject) {
    let s = s.store;
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "bound_keypair", 5, 100), Some("reg")))).await.unwrap();
    assert_eq!(s.keypair_binding("t").await.unwrap(), None);
    assert_eq!(s.bind_keypair("t", "K", Some("wrong"), 1).await, Err(rejected(TokenRejection::RegistrationSpent)));
    assert_eq!(s.keypair_binding("t").await.unwrap(), None, "a refused registration binds nothing");
    assert_eq!(s.bind_keypair("t", "K", Some("reg"), 100).await, Err(rejected(TokenRejection::RegistrationSpent)), "expired");
    s.bind_keypair("t", "K", Some("reg"), 1).await.unwrap();
    let b = s.keypair_binding("t").await.unwrap().unwrap();
    assert_eq!(b, KeypairBinding { token: "t".into(), public_key: "K".into(), sequence: 0, locked: false, last_attempt: String::new() });
    // Bound already: nothing changes, whatever is presented.
    s.bind_keypair("t", "OTHER", Some("reg"), 1).await.unwrap();
    assert_eq!(s.keypair_binding("t").await.unwrap().unwrap().public_key, "K");
    // The spent secret no longer registers a key, nor redeems as a token.
    s.update(Kind::JoinToken, &doc("t", 1), Some(&TokenUpdate { state: token("t", "b", "bound_keypair", 5, 100), unbind_keypair: true })).await.unwrap();
    assert_eq!(s.bind_keypair("t", "K3", Some("reg"), 1).await, Err(rejected(TokenRejection::RegistrationSpent)));
    assert_eq!(s.consume_token("reg", 1).await, Err(rejected(TokenRejection::Unknown)));
    s.bind_keypair("t", "K3", None, 1).await.unwrap();
    s.delete(Kind::JoinToken, "t", 0).await.unwrap();
    assert_eq!(s.keypair_binding("t").await.unwrap(), None);
}

/// advance_keypair: sequence + 1 per join and a use of the token; a retry of
/// the last attempt returns the same sequence; a stale sequence locks.
pub async fn keypair_advance_counts_uses_retries_and_locks_a_copy(s: Subject) {
    let s = s.store;
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "bound_keypair", 2, 100), None))).await.unwrap();
    assert!(matches!(s.advance_keypair("t", "K", 0, "a0", 1).await, Err(StoreError::NotFound { .. })));
    s.bind_keypair("t", "K", None, 1).await.unwrap();
    assert!(matches!(s.advance_keypair("t", "OTHER", 0, "a0", 1).await, Err(StoreError::IdentityRejected(_))));
    assert_eq!(s.advance_keypair("t", "K", 0, "a0", 1).await.unwrap(), 1);
    assert_eq!(s.advance_keypair("t", "K", 0, "a0", 1).await.unwrap(), 1, "a retry of the lost answer");
    assert_eq!(s.token_state("t").await.unwrap().uses, 1, "a retry uses nothing");
    assert_eq!(s.advance_keypair("t", "K", 1, "a1", 1).await.unwrap(), 2);
    // Used up: refused, nothing advanced.
    assert_eq!(s.advance_keypair("t", "K", 2, "a2", 1).await, Err(rejected(TokenRejection::UsedUp)));
    let b = s.keypair_binding("t").await.unwrap().unwrap();
    assert_eq!((b.sequence, b.locked, b.last_attempt.as_str()), (2, false, "a1"));
    // A copy presents an old sequence with another attempt: locked for good.
    assert!(matches!(s.advance_keypair("t", "K", 1, "copy", 1).await, Err(StoreError::IdentityRejected(_))));
    assert!(s.keypair_binding("t").await.unwrap().unwrap().locked);
    assert!(matches!(s.advance_keypair("t", "K", 2, "a2", 1).await, Err(StoreError::IdentityRejected(_))));
}

/// Twenty agents holding one key join at the same sequence at once: exactly
/// one join succeeds, and the binding ends up locked (a copy was seen).
pub async fn concurrent_keypair_joins_at_one_sequence_succeed_once_and_lock(s: Subject) {
    let s = s.store;
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "bound_keypair", 100, i64::MAX), None))).await.unwrap();
    s.bind_keypair("t", "K", None, 1).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.advance_keypair("t", "K", 0, &format!("attempt-{i}"), 1).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(seq) => {
                assert_eq!(seq, 1);
                ok += 1;
            }
            Err(e) => assert!(matches!(e, StoreError::IdentityRejected(_)), "{e:?}"),
        }
    }
    assert_eq!(ok, 1);
    let b = s.keypair_binding("t").await.unwrap().unwrap();
    assert!(b.locked);
    assert_eq!((b.sequence, s.token_state("t").await.unwrap().uses), (1, 1));
}

/// CA keys: every field round-trips; listed by creation time; ids unique; one
/// active key per purpose (a second is AlreadyExists).
pub async fn ca_keys_round_trip_in_creation_order(s: Subject) {
    let s = s.store;
    let k = |id: &str, created_at: i64, cert: Option<Vec<u8>>| CaKeyRecord {
        id: id.into(),
        purpose: "x509-svid".into(),
        alg: "ECDSA_P256".into(),
        sealed_key: vec![0, 1, 2, 255, id.len() as u8],
        key_ref: format!("{{\"ref\":\"{id}\"}}"),
        cert_der: cert,
        created_at,
        not_after: created_at + 1000,
        state: "active".into(),
        activated_at: 0,
        deactivated_at: 0,
    };
    let (a, mut b) = (k("late", 20, Some(vec![48, 0, 9])), k("early", 10, None));
    b.state = "retired".into();
    s.insert_ca_key(&a).await.unwrap();
    s.insert_ca_key(&b).await.unwrap();
    assert!(s.insert_ca_key(&a).await.is_err());
    assert_eq!(s.list_ca_keys().await.unwrap(), vec![b, a.clone()]);
    // One active key per purpose: brokers starting at once agree on one CA.
    let rival = k("rival", 20, None);
    assert!(matches!(s.insert_ca_key(&rival).await, Err(StoreError::AlreadyExists { .. })));
    let mut other = k("other-purpose", 30, None);
    other.purpose = "jwt-svid".into();
    s.insert_ca_key(&other).await.unwrap();
    assert_eq!(s.list_ca_keys().await.unwrap().len(), 3);
}

fn ca_key(id: &str, purpose: &str, state: &str, created_at: i64) -> CaKeyRecord {
    CaKeyRecord {
        id: id.into(),
        purpose: purpose.into(),
        alg: "ec-p256".into(),
        sealed_key: vec![1, 2, 3],
        key_ref: String::new(),
        cert_der: Some(vec![48, 0]),
        created_at,
        not_after: created_at + 1000,
        state: state.into(),
        activated_at: if state == "active" { created_at } else { 0 },
        deactivated_at: 0,
    }
}

async fn ca_states(s: &Arc<dyn Store>) -> Vec<(String, String, i64, i64)> {
    s.list_ca_keys().await.unwrap().into_iter().map(|k| (k.id, k.state, k.activated_at, k.deactivated_at)).collect()
}

/// CA rotation: one prepared key per purpose; activate swaps prepared and
/// active in one transaction (all or nothing); retire and rollback act only
/// on a key in the expected state; every step moves the change counter; a
/// missed expectation is `Changed` and changes nothing.
pub async fn ca_key_rotation_steps_are_compare_and_set(s: Subject) {
    let s = s.store;
    let st = |id: &str, state: &str, a: i64, d: i64| (id.to_string(), state.to_string(), a, d);
    s.insert_ca_key(&ca_key("a", "x509-svid", "active", 10)).await.unwrap();
    s.insert_ca_key(&ca_key("j", "jwt-svid", "prepared", 11)).await.unwrap();
    s.insert_ca_key(&ca_key("p", "x509-svid", "prepared", 20)).await.unwrap();
    let second = s.insert_ca_key(&ca_key("p2", "x509-svid", "prepared", 21)).await;
    assert!(matches!(second, Err(StoreError::AlreadyExists { .. })), "{second:?}");

    let before = s.change_counter();
    s.change_ca_key(&CaKeyChange::Activate { prepared: "p".into(), active: "a".into() }, 100).await.unwrap();
    assert!(s.change_counter() > before, "activation moves the change counter");
    assert_eq!(ca_states(&s).await, vec![st("a", "previous", 10, 100), st("j", "prepared", 0, 0), st("p", "active", 100, 0)]);
    let again = s.change_ca_key(&CaKeyChange::Activate { prepared: "p".into(), active: "a".into() }, 101).await;
    assert!(matches!(again, Err(StoreError::Changed { .. })), "{again:?}");

    // A previous key still there: the next activation fails as a whole.
    s.insert_ca_key(&ca_key("q", "x509-svid", "prepared", 30)).await.unwrap();
    let blocked = s.change_ca_key(&CaKeyChange::Activate { prepared: "q".into(), active: "p".into() }, 102).await;
    assert!(matches!(blocked, Err(StoreError::Changed { .. })), "{blocked:?}");
    assert_eq!(
        ca_states(&s).await,
        vec![st("a", "previous", 10, 100), st("j", "prepared", 0, 0), st("p", "active", 100, 0), st("q", "prepared", 0, 0)]
    );

    let before = s.change_counter();
    s.change_ca_key(&CaKeyChange::Retire { id: "a".into() }, 103).await.unwrap();
    assert!(s.change_counter() > before, "retire moves the change counter");
    let again = s.change_ca_key(&CaKeyChange::Retire { id: "a".into() }, 104).await;
    assert!(matches!(again, Err(StoreError::Changed { .. })), "{again:?}");
    let not_previous = s.change_ca_key(&CaKeyChange::Retire { id: "p".into() }, 104).await;
    assert!(matches!(not_previous, Err(StoreError::Changed { .. })), "an active key is not retired: {not_previous:?}");

    let before = s.change_counter();
    s.change_ca_key(&CaKeyChange::Rollback { id: "q".into() }, 105).await.unwrap();
    assert!(s.change_counter() > before, "rollback moves the change counter");
    let again = s.change_ca_key(&CaKeyChange::Rollback { id: "q".into() }, 106).await;
    assert!(matches!(again, Err(StoreError::Changed { .. })), "{again:?}");
    let active = s.change_ca_key(&CaKeyChange::Rollback { id: "p".into() }, 106).await;
    assert!(matches!(active, Err(StoreError::Changed { .. })), "an active key is never dropped: {active:?}");
    assert_eq!(
        ca_states(&s).await,
        vec![st("a", "retired", 10, 100), st("j", "prepared", 0, 0), st("p", "active", 100, 0), st("q", "retired", 0, 105)],
        "a rolled back key is kept, retired, never active"
    );
}

/// Listing the CA keys is a read: the change counter stays, so the CA reload
/// watcher (which lists the keys whenever the counter moves) does not retire
/// itself and every cached caller by reading.
pub async fn reading_ca_keys_leaves_the_change_counter(s: Subject) {
    let s = s.store;
    s.insert_ca_key(&ca_key("a", "x509-svid", "active", 10)).await.unwrap();
    let before = s.change_counter();
    for _ in 0..3 {
        assert_eq!(s.list_ca_keys().await.unwrap().len(), 1);
    }
    assert_eq!(s.change_counter(), before);
}

/// Ten concurrent activations at one expectation (replicas acting on one
/// phase) land once; ten concurrent prepares leave one prepared key.
pub async fn concurrent_rotation_steps_land_once(s: Subject) {
    let s = s.store;
    s.insert_ca_key(&ca_key("a", "internal", "active", 10)).await.unwrap();
    let prepares = (0..10).map(|i| {
        let s = s.clone();
        tokio::spawn(async move { s.insert_ca_key(&ca_key(&format!("p{i}"), "internal", "prepared", 20)).await })
    });
    let prepared = futures::future::join_all(prepares).await.into_iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    assert_eq!(prepared, 1);
    let p = s.list_ca_keys().await.unwrap().into_iter().find(|k| k.state == "prepared").unwrap().id;
    let activations = (0..10).map(|i| {
        let (s, p) = (s.clone(), p.clone());
        tokio::spawn(async move { s.change_ca_key(&CaKeyChange::Activate { prepared: p, active: "a".into() }, 100 + i).await })
    });
    let results: Vec<_> = futures::future::join_all(activations).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.is_ok() || matches!(r, Err(StoreError::Changed { .. }))), "{results:?}");
    let keys = s.list_ca_keys().await.unwrap();
    assert_eq!(keys.iter().filter(|k| k.state == "active").count(), 1);
    assert_eq!(keys.iter().find(|k| k.state == "active").unwrap().id, p);
    assert_eq!(keys.iter().find(|k| k.state == "previous").unwrap().id, "a");
}

/// Audit: ids grow in append order; list pages by id; prune by age then count.
pub async fn audit_append_list_and_prune(s: Subject) {
    let s = s.store;
    let events: Vec<AuditRecord> =
        (0..10).map(|t| crate::audit::event(t * 100, "join", "anonymous", "t", "denied", json!({"n": t}))).collect();
    let ids = s.append_audit_batch(&events[..9]).await.unwrap();
    assert_eq!(ids.len(), 9);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let last = s.append_audit(&events[9]).await.unwrap();
    assert!(last > ids[8]);
    assert!(s.append_audit_batch(&[]).await.unwrap().is_empty());
    let page = s.list_audit(ids[2], 3).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), ids[3..6]);
    assert_eq!(page[0].detail, json!({"n": 3}));
    assert_eq!((page[0].kind.as_str(), page[0].actor.as_str(), page[0].outcome.as_str()), ("join", "anonymous", "denied"));
    assert_eq!(s.prune_audit(0, 200).await.unwrap(), 2);
    assert_eq!(s.prune_audit(5, i64::MIN).await.unwrap(), 3);
    let left: Vec<i64> = s.list_audit(0, 100).await.unwrap().iter().map(|e| e.time).collect();
    assert_eq!(left, vec![500, 600, 700, 800, 900]);
    assert_eq!(s.prune_audit(5, i64::MIN).await.unwrap(), 0);
}

/// The change counter moves after every kind of write (read before, compare after).
pub async fn change_counter_grows_after_writes(s: Subject) {
    let s = s.store;
    let mut c = s.change_counter();
    let mut moved = |what: &str, s: &Arc<dyn Store>| {
        let now = s.change_counter();
        assert!(now > c, "change counter did not move after {what}");
        c = now;
    };
    s.create(Kind::Bot, &doc("b", 0), None).await.unwrap();
    moved("create", &s);
    s.update(Kind::Bot, &doc("b", 1), None).await.unwrap();
    moved("update", &s);
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "token", 5, i64::MAX), Some("h")))).await.unwrap();
    moved("token create", &s);
    s.consume_token("h", 1).await.unwrap();
    moved("consume_token", &s);
    s.use_token("t", 1).await.unwrap();
    moved("use_token", &s);
    s.create_instance(&instance("i", "b")).await.unwrap();
    moved("create_instance", &s);
    s.advance_generation("i", 1, "k", "n").await.unwrap();
    moved("advance_generation", &s);
    s.delete(Kind::Bot, "b", 0).await.unwrap();
    moved("delete", &s);
}

/// Stored JSON that does not parse is an error, never `Null`.
pub async fn corrupt_stored_json_is_an_error(s: Subject) {
    let (raw, s) = (s.raw, s.store);
    s.create(Kind::Role, &doc("r", 0), None).await.unwrap();
    s.create(Kind::Bot, &Doc { name: "b".into(), revision: 0, spec: json!({"roles": ["r"]}) }, None).await.unwrap();
    s.create_instance(&instance("i", "b")).await.unwrap();
    s.append_audit(&crate::audit::event(1, "join", "a", "t", "ok", json!({}))).await.unwrap();
    let corrupt = |r: Result<_, StoreError>, kind: &str, name: &str| match r {
        Err(StoreError::Corrupt { kind: k, name: n, .. }) => assert_eq!((k, n.as_str()), (kind, name)),
        other => panic!("{kind} {name}: expected Corrupt, got {:?}", other.map(|_| ())),
    };
    raw.exec("UPDATE resources SET spec = '{not json' WHERE name = 'r'").await;
    corrupt(s.get(Kind::Role, "r").await.map(|_| ()), "role", "r");
    corrupt(s.list(Kind::Role, "", 10).await.map(|_| ()), "role", "r");
    // A bot whose roles cannot be read is an error, not a bot without roles.
    raw.exec("UPDATE resources SET spec = '{\"roles\": \"r\"}' WHERE name = 'b'").await;
    corrupt(s.caller_records("i", "b").await.map(|_| ()), "bot", "b");
    raw.exec("UPDATE resources SET spec = '{not json' WHERE name = 'b'").await;
    corrupt(s.caller_records("i", "b").await.map(|_| ()), "bot", "b");
    raw.exec("UPDATE bot_instances SET join_attributes = '{not json' WHERE id = 'i'").await;
    corrupt(s.instance("i").await.map(|_| ()), "bot instance", "i");
    raw.exec("UPDATE bot_instances SET join_attributes = '{}', heartbeat = '{not json' WHERE id = 'i'").await;
    corrupt(s.instance_record("i").await.map(|_| ()), "bot instance", "i");
    let listed = s.list_instances("", 0, "", 10).await;
    assert!(matches!(listed, Err(StoreError::Corrupt { kind: "bot instance", .. })), "{listed:?}");
    raw.exec("UPDATE audit_events SET detail = '{not json'").await;
    let id = s.list_audit(0, 10).await;
    assert!(matches!(id, Err(StoreError::Corrupt { kind: "audit event", .. })), "{id:?}");
}

/// The conditional writes: each writes only over the record as it was read;
/// a second write at the same expectation is [`StoreError::Changed`] and
/// changes nothing.
pub async fn a_missed_compare_and_set_is_reported_as_changed(s: Subject) {
    let s = s.store;
    s.create_instance(&instance("i", "b")).await.unwrap();
    let read = s.generation_state("i").await.unwrap().unwrap();
    assert_eq!(read, GenerationState { id: "i".into(), generation: 1, pending: 1, pending_key: String::new(), locked: false });
    let next = GenerationState { pending: 2, pending_key: "A".into(), ..read.clone() };
    s.swap_generation(&read, &next).await.unwrap();
    let again = GenerationState { pending_key: "B".into(), ..next.clone() };
    assert!(matches!(s.swap_generation(&read, &again).await, Err(StoreError::Changed { .. })));
    assert_eq!(s.generation_state("i").await.unwrap(), Some(next));
    assert_eq!(s.generation_state("nope").await.unwrap(), None);

    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "bound_keypair", 1, 100), Some("reg")))).await.unwrap();
    let rec = s.token_record(TokenKey::Name("t")).await.unwrap().unwrap();
    assert_eq!(rec.secret_hash, "reg");
    assert_eq!(s.token_record(TokenKey::SecretHash("reg")).await.unwrap(), Some(rec.clone()));
    let b = KeypairBinding { token: "t".into(), public_key: "K".into(), sequence: 0, locked: false, last_attempt: String::new() };
    s.insert_keypair_binding(&b, Some(("reg", "spent:t")), 1).await.unwrap();
    assert_eq!(s.token_record(TokenKey::Name("t")).await.unwrap().unwrap().secret_hash, "spent:t");
    assert!(matches!(s.insert_keypair_binding(&b, None, 1).await, Err(StoreError::Changed { .. })), "one binding per token");
    let next = KeypairBinding { sequence: 1, last_attempt: "a".into(), ..b.clone() };
    assert!(matches!(s.swap_keypair(&b, &next, Some(&rec), 1).await, Err(StoreError::Changed { .. })), "the secret read was spent since");
    assert_eq!(s.keypair_binding("t").await.unwrap(), Some(b.clone()), "both or neither");
    let rec = s.token_record(TokenKey::Name("t")).await.unwrap().unwrap();
    s.swap_keypair(&b, &next, Some(&rec), 1).await.unwrap();
    assert_eq!(s.token_state("t").await.unwrap().uses, 1);
    assert!(matches!(s.swap_keypair(&b, &next, None, 1).await, Err(StoreError::Changed { .. })));
    // Both or neither: the binding matches but the token has no use left.
    let rec = s.token_record(TokenKey::Name("t")).await.unwrap().unwrap();
    let further = KeypairBinding { sequence: 2, ..next.clone() };
    assert!(matches!(s.swap_keypair(&next, &further, Some(&rec), 1).await, Err(StoreError::Changed { .. })));
    assert_eq!(s.keypair_binding("t").await.unwrap(), Some(next));

    s.create(Kind::JoinToken, &doc("u", 0), Some((&token("u", "b", "github", 5, 100), None))).await.unwrap();
    let rec = s.token_record(TokenKey::Name("u")).await.unwrap().unwrap();
    assert_eq!(s.count_token_use(&rec).await.unwrap(), 1);
    assert_eq!(s.count_token_use(&rec).await.unwrap(), 2, "a use is counted over the limits read, not the count");
    s.update(Kind::JoinToken, &doc("u", 1), Some(&TokenUpdate { state: token("u", "b", "github", 2, 100), unbind_keypair: false })).await.unwrap();
    assert!(matches!(s.count_token_use(&rec).await, Err(StoreError::Changed { .. })), "the limits changed since read");
    let rec = s.token_record(TokenKey::Name("u")).await.unwrap().unwrap();
    assert!(matches!(s.count_token_use(&rec).await, Err(StoreError::Changed { .. })), "no use left");
    assert_eq!(s.token_state("u").await.unwrap().uses, 2);
}

/// Ten concurrent writes at one expected state (as ten replicas would send
/// them): exactly one lands, the others are told the record changed.
pub async fn concurrent_swaps_at_one_expected_state_land_once(s: Subject) {
    let s = s.store;
    s.create_instance(&instance("i", "b")).await.unwrap();
    s.create(Kind::JoinToken, &doc("t", 0), Some((&token("t", "b", "bound_keypair", 100, i64::MAX), None))).await.unwrap();
    let b = KeypairBinding { token: "t".into(), public_key: "K".into(), sequence: 0, locked: false, last_attempt: String::new() };
    s.insert_keypair_binding(&b, None, 1).await.unwrap();
    let gen = s.generation_state("i").await.unwrap().unwrap();
    let rec = s.token_record(TokenKey::Name("t")).await.unwrap().unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (s, gen, b, rec) = (s.clone(), gen.clone(), b.clone(), rec.clone());
            tokio::spawn(async move {
                let g = GenerationState { pending: 2, pending_key: format!("k{i}"), ..gen.clone() };
                let k = KeypairBinding { sequence: 1, last_attempt: format!("a{i}"), ..b.clone() };
                (s.swap_generation(&gen, &g).await.map(|_| g), s.swap_keypair(&b, &k, Some(&rec), 1).await.map(|_| k))
            })
        })
        .collect();
    let (mut gens, mut keys) = (Vec::new(), Vec::new());
    for t in tasks {
        let (g, k) = t.await.unwrap();
        gens.push(g);
        keys.push(k);
    }
    for results in [gens.iter().map(|r| r.as_ref().map(|_| ())).collect::<Vec<_>>(), keys.iter().map(|r| r.as_ref().map(|_| ())).collect()] {
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, StoreError::Changed { .. })), "{results:?}");
    }
    let won = gens.into_iter().find_map(Result::ok).unwrap();
    assert_eq!(s.generation_state("i").await.unwrap(), Some(won));
    let won = keys.into_iter().find_map(Result::ok).unwrap();
    assert_eq!(s.keypair_binding("t").await.unwrap(), Some(won));
    assert_eq!(s.token_state("t").await.unwrap().uses, 1, "one use counted, with the one binding write that landed");
}

fn challenge(id: &str, token: &str, peer: &str, expires_at: i64) -> ChallengeRecord {
    ChallengeRecord { id: id.into(), method: "m".into(), token: token.into(), peer: peer.into(), state: vec![1, 2], expires_at }
}

fn small_challenge_limits() -> ChallengeLimits {
    ChallengeLimits { max_pending: 10, per_peer: 4, per_token: 6 }
}

async fn taken(s: &Arc<dyn Store>, id: &str) -> bool {
    s.take_challenge(id, 1).await.unwrap().is_some()
}

/// A challenge comes back whole, once; an expired one never.
pub async fn a_challenge_is_taken_once_and_never_after_expiry(s: Subject) {
    let s = s.store;
    let l = ChallengeLimits::default();
    let c = challenge("a", "t", "10.0.0.1", 100);
    s.insert_challenge(&c, &l, 0).await.unwrap();
    assert_eq!(s.take_challenge("a", 10).await.unwrap(), Some(c));
    assert_eq!(s.take_challenge("a", 10).await.unwrap(), None, "single use");
    s.insert_challenge(&challenge("b", "t", "10.0.0.1", 100), &l, 0).await.unwrap();
    assert_eq!(s.take_challenge("b", 100).await.unwrap(), None, "expired at its expiry");
    assert_eq!(s.take_challenge("b", 10).await.unwrap(), None, "and gone");
    assert_eq!(s.take_challenge("never", 10).await.unwrap(), None);
}

/// One peer's flood replaces its own oldest challenges; another peer's survives.
pub async fn a_flooding_peer_evicts_only_its_own_oldest_challenges(s: Subject) {
    let s = s.store;
    let l = small_challenge_limits();
    s.insert_challenge(&challenge("legit", "t", "10.0.0.9", 100), &l, 0).await.unwrap();
    for i in 0..100 {
        s.insert_challenge(&challenge(&format!("f{i}"), "t", "10.0.0.1", 100), &l, 0).await.unwrap();
    }
    assert!(taken(&s, "f99").await && taken(&s, "f96").await, "the flooder keeps its newest per_peer = 4");
    assert!(!taken(&s, "f95").await && !taken(&s, "f0").await);
    assert!(taken(&s, "legit").await);
}

/// A full table makes room for a newcomer from the peer holding the most
/// (ties: the one with the oldest challenge), never from a smaller peer.
pub async fn a_new_peer_is_never_refused_when_others_filled_the_challenge_table(s: Subject) {
    let s = s.store;
    let l = small_challenge_limits();
    let add = |id: String, p: u8| {
        let s = s.clone();
        async move { s.insert_challenge(&challenge(&id, &format!("t{p}"), &format!("10.0.0.{p}"), 100), &l, 0).await.unwrap() }
    };
    // Peers 2-4 hold two each, peer 5 one, then peer 1 (newest) three: the table is full.
    for p in 2..=4 {
        add(format!("p{p}-0"), p).await;
        add(format!("p{p}-1"), p).await;
    }
    add("p5-0".into(), 5).await;
    for i in 0..3 {
        add(format!("p1-{i}"), 1).await;
    }
    // A newcomer evicts the largest peer's oldest, although others' are older.
    add("newcomer".into(), 42).await;
    assert!(taken(&s, "newcomer").await);
    assert!(!taken(&s, "p1-0").await, "the largest peer's oldest went");
    // Peer 2 now fills the table again; holding as many as the largest, it evicts its own oldest.
    add("p2-2".into(), 2).await;
    add("p2-3".into(), 2).await;
    assert!(!taken(&s, "p2-0").await, "peer 2 made room itself");
    assert!(taken(&s, "p2-3").await && taken(&s, "p2-2").await && taken(&s, "p2-1").await);
    assert!(taken(&s, "p1-1").await && taken(&s, "p1-2").await && taken(&s, "p5-0").await);
    for p in 3..=4 {
        assert!(taken(&s, &format!("p{p}-0")).await && taken(&s, &format!("p{p}-1")).await, "peer {p} kept its challenges");
    }
}

/// A flood naming one token evicts that token's oldest, not other tokens'.
pub async fn a_challenge_flood_naming_one_token_spares_the_other_tokens(s: Subject) {
    let s = s.store;
    let l = small_challenge_limits();
    s.insert_challenge(&challenge("other", "b", "10.0.0.9", 100), &l, 0).await.unwrap();
    for p in 1..=8 {
        s.insert_challenge(&challenge(&format!("f{p}"), "a", &format!("10.0.0.{p}"), 100), &l, 0).await.unwrap();
    }
    assert!(taken(&s, "other").await);
    assert!(!taken(&s, "f1").await && !taken(&s, "f2").await && taken(&s, "f3").await && taken(&s, "f8").await, "token a keeps its newest 6");
}

/// An insert sweeps every expired challenge.
pub async fn expired_challenges_free_their_room(s: Subject) {
    let s = s.store;
    let l = small_challenge_limits();
    for i in 0..4 {
        s.insert_challenge(&challenge(&format!("a{i}"), "t", "10.0.0.1", 10), &l, 0).await.unwrap();
    }
    s.insert_challenge(&challenge("b", "t", "10.0.0.2", 100), &l, 20).await.unwrap();
    for i in 0..4 {
        // Asked as if before their expiry: they are gone all the same.
        assert_eq!(s.take_challenge(&format!("a{i}"), 5).await.unwrap(), None);
    }
    assert!(taken(&s, "b").await);
}

/// Storing and taking challenges is no change to cached state: every
/// replica's caches stay (a BeginJoin flood must not retire them).
pub async fn challenges_do_not_move_the_change_counter(s: Subject) {
    let s = s.store;
    let l = small_challenge_limits();
    let before = s.change_counter();
    for i in 0..20 {
        s.insert_challenge(&challenge(&format!("c{i}"), "t", "10.0.0.1", 100), &l, 0).await.unwrap();
    }
    s.take_challenge("c19", 1).await.unwrap().unwrap();
    s.take_challenge("c0", 1).await.unwrap();
    assert_eq!(s.change_counter(), before);
}

/// Fifty concurrent answers to one challenge: exactly one takes it.
pub async fn fifty_concurrent_takes_of_one_challenge_succeed_once(s: Subject) {
    let s = s.store;
    s.insert_challenge(&challenge("once", "t", "10.0.0.1", 100), &ChallengeLimits::default(), 0).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.take_challenge("once", 1).await.unwrap().is_some() })
        })
        .collect();
    let mut got = 0;
    for t in tasks {
        got += usize::from(t.await.unwrap());
    }
    assert_eq!(got, 1);
}

/// Issuance audit events are found by `detail.serial` or `detail.instance`,
/// only when successful, of an issuance kind, and not yet expired.
pub async fn issuance_events_are_found_by_serial_or_instance_while_unexpired(s: Subject) {
    let s = s.store;
    let ev = |kind: &str, outcome: &str, serial: &str, instance: &str, expires_at: i64| {
        crate::audit::event(1, kind, "b", "r", outcome, json!({"serial": serial, "instance": instance, "ca_key": "k1", "expires_at": expires_at}))
    };
    s.append_audit_batch(&[
        ev("svid.x509", "ok", "0a", "i1", 1000),
        ev("join", "ok", "0b", "i1", 1000),
        ev("identity.renew", "ok", "0c", "i1", 50),
        ev("svid.x509", "denied", "0d", "i1", 1000),
        ev("role.create", "ok", "0e", "i1", 1000),
        ev("svid.x509", "ok", "0f", "i2", 1000),
        // A LIKE wildcard in the value matches only itself.
        ev("svid.x509", "ok", "1a", "i_", 1000),
    ])
    .await
    .unwrap();
    let serials = |v: Vec<AuditRecord>| v.iter().map(|e| e.detail["serial"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>();
    assert_eq!(serials(s.issuance_events(IssuanceKey::Serial("0a"), 100, 10).await.unwrap()), ["0a"]);
    assert!(s.issuance_events(IssuanceKey::Serial("0c"), 100, 10).await.unwrap().is_empty(), "expired");
    assert!(s.issuance_events(IssuanceKey::Serial("0d"), 100, 10).await.unwrap().is_empty(), "denied");
    assert!(s.issuance_events(IssuanceKey::Serial("0e"), 100, 10).await.unwrap().is_empty(), "not an issuance");
    assert_eq!(serials(s.issuance_events(IssuanceKey::Instance("i1"), 100, 10).await.unwrap()), ["0b", "0a"], "newest first");
    assert_eq!(serials(s.issuance_events(IssuanceKey::Instance("i1"), 100, 1).await.unwrap()), ["0b"], "limit");
    assert_eq!(serials(s.issuance_events(IssuanceKey::Instance("i_"), 100, 10).await.unwrap()), ["1a"]);
    let e = &s.issuance_events(IssuanceKey::Serial("0f"), 100, 10).await.unwrap()[0];
    assert_eq!((e.detail["ca_key"].as_str(), e.detail["instance"].as_str()), (Some("k1"), Some("i2")));
}

/// A revocation is recorded once per (CA key, serial); listing pages by
/// sequence and skips expired ones; only an insert moves the change counter;
/// rows long expired are deleted at the next insert.
pub async fn revocations_are_recorded_once_in_sequence_and_drop_off_after_expiry(s: Subject) {
    let s = s.store;
    let rev = |serial: &str, key: &str, not_after: i64| Revocation {
        seq: 0,
        serial: serial.into(),
        ca_key: key.into(),
        not_after,
        revoked_at: 10,
        reason: "keyCompromise".into(),
        actor: "admin".into(),
    };
    let c0 = s.change_counter();
    assert_eq!(s.insert_revocations(&[rev("0a", "k1", 1000), rev("0b", "k1", 200)], 10).await.unwrap(), 2);
    let c1 = s.change_counter();
    assert!(c1 > c0, "an insert moves the change counter");
    assert_eq!(s.insert_revocations(&[rev("0a", "k1", 1000)], 10).await.unwrap(), 0, "already revoked");
    assert_eq!(s.insert_revocations(&[rev("0a", "k2", 1000), rev("0c", "k1", 1000)], 10).await.unwrap(), 2, "same serial, other key");
    let all = s.list_revocations(0, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|r| (r.serial.as_str(), r.ca_key.as_str())).collect::<Vec<_>>(), [("0a", "k1"), ("0b", "k1"), ("0a", "k2"), ("0c", "k1")]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!((all[0].not_after, all[0].revoked_at, all[0].reason.as_str(), all[0].actor.as_str()), (1000, 10, "keyCompromise", "admin"));
    let after_first = s.list_revocations(all[0].seq, 0, 2).await.unwrap();
    assert_eq!(after_first.iter().map(|r| r.seq).collect::<Vec<_>>(), [all[1].seq, all[2].seq]);
    assert_eq!(s.list_revocations(0, 200, 100).await.unwrap().len(), 3, "0b expired at 200");
    let c2 = s.change_counter();
    s.list_revocations(0, 0, 100).await.unwrap();
    assert_eq!(s.change_counter(), c2, "a read leaves the change counter");
    // 0b (not_after 200) is deleted once it is a day past its expiry.
    s.insert_revocations(&[rev("0d", "k1", 100_000)], 200 + 86_401).await.unwrap();
    let left = s.list_revocations(0, 0, 100).await.unwrap();
    assert!(!left.iter().any(|r| r.serial == "0b"), "{left:?}");
    assert_eq!(left.len(), 4);
}

/// create_bound_instance: the first bind of a key creates the instance and
/// the binding; a second bind of the key is AlreadyExists and creates no
/// instance; with `rebind` the binding moves to the new instance (the old
/// instance stays); deleting the bot deletes its bindings, other bots' stay.
pub async fn an_instance_binding_is_taken_once_moves_only_on_rebind_and_goes_with_its_bot(s: Subject) {
    let s = s.store;
    s.create(Kind::Bot, &doc("b", 0), None).await.unwrap();
    s.create(Kind::Bot, &doc("other", 0), None).await.unwrap();
    assert_eq!(s.instance_binding("ec2:1:i-1").await.unwrap(), None);
    s.create_bound_instance(&instance("i1", "b"), "ec2:1:i-1", false).await.unwrap();
    let bound = s.instance_binding("ec2:1:i-1").await.unwrap().unwrap();
    assert_eq!((bound.instance.as_str(), bound.bot.as_str(), bound.bound_at), ("i1", "b", 7));
    assert_eq!(s.instance("i1").await.unwrap(), instance("i1", "b"));

    let refused = s.create_bound_instance(&instance("i2", "b"), "ec2:1:i-1", false).await;
    assert!(matches!(refused, Err(StoreError::AlreadyExists { kind: "instance_binding", .. })), "{refused:?}");
    assert!(matches!(s.instance("i2").await, Err(StoreError::IdentityRejected(_))), "a refused bind creates no instance");
    assert_eq!(s.instance_binding("ec2:1:i-1").await.unwrap().unwrap().instance, "i1");

    s.create_bound_instance(&instance("i3", "b"), "ec2:1:i-1", true).await.unwrap();
    assert_eq!(s.instance_binding("ec2:1:i-1").await.unwrap().unwrap().instance, "i3");
    assert_eq!(s.instance("i1").await.unwrap().id, "i1", "a rebind leaves the old instance");
    // An instance id taken by the bind is still unique: nothing is bound then.
    assert!(s.create_bound_instance(&instance("i3", "b"), "ec2:1:i-9", false).await.is_err());
    assert_eq!(s.instance_binding("ec2:1:i-9").await.unwrap(), None);

    s.create_bound_instance(&instance("j", "other"), "ec2:1:i-2", false).await.unwrap();
    s.delete(Kind::Bot, "b", 0).await.unwrap();
    assert_eq!(s.instance_binding("ec2:1:i-1").await.unwrap(), None, "deleting the bot frees its bindings");
    assert_eq!(s.instance_binding("ec2:1:i-2").await.unwrap().unwrap().bot, "other");
    s.create(Kind::Bot, &doc("b", 0), None).await.unwrap();
    s.create_bound_instance(&instance("i4", "b"), "ec2:1:i-1", false).await.unwrap();
}

/// Fifty concurrent first binds of one key: one instance and one binding.
pub async fn fifty_concurrent_binds_of_one_key_create_one_instance(s: Subject) {
    let s = s.store;
    s.create(Kind::Bot, &doc("b", 0), None).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.create_bound_instance(&instance(&format!("i{i}"), "b"), "ec2:1:i-1", false).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter(|r| r.is_err()).all(|r| matches!(r, Err(StoreError::AlreadyExists { kind: "instance_binding", .. }))), "{results:?}");
    let winner = s.instance_binding("ec2:1:i-1").await.unwrap().unwrap().instance;
    let listed = s.list_instances("b", 0, "", 100).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.instance.id.as_str()).collect::<Vec<_>>(), [winner.as_str()]);
}

/// list_instance_bindings filters by bot and key prefix and pages by key;
/// delete_instance_binding returns the binding, leaves its instance, lets the
/// key bind again without rebind, and is NotFound the second time.
pub async fn instance_bindings_are_listed_by_bot_and_prefix_and_a_released_one_binds_again(s: Subject) {
    let s = s.store;
    s.create(Kind::Bot, &doc("b", 0), None).await.unwrap();
    s.create(Kind::Bot, &doc("other", 0), None).await.unwrap();
    s.create_bound_instance(&instance("i1", "b"), "ec2:1:i-1", false).await.unwrap();
    s.create_bound_instance(&instance("i2", "b"), "ec2:1:i-2", false).await.unwrap();
    s.create_bound_instance(&instance("j1", "other"), "ec2:2:i-3", false).await.unwrap();
    s.create_bound_instance(&instance("k1", "other"), "ec2x:1:i-4", false).await.unwrap();
    let keys = |v: Vec<InstanceBinding>| v.into_iter().map(|b| b.key).collect::<Vec<_>>();

    assert_eq!(keys(s.list_instance_bindings("", "", "", 100).await.unwrap()), ["ec2:1:i-1", "ec2:1:i-2", "ec2:2:i-3", "ec2x:1:i-4"]);
    assert_eq!(keys(s.list_instance_bindings("b", "", "", 100).await.unwrap()), ["ec2:1:i-1", "ec2:1:i-2"]);
    assert_eq!(keys(s.list_instance_bindings("", "ec2:", "", 100).await.unwrap()), ["ec2:1:i-1", "ec2:1:i-2", "ec2:2:i-3"], "the prefix is literal");
    assert_eq!(keys(s.list_instance_bindings("other", "ec2:", "", 100).await.unwrap()), ["ec2:2:i-3"]);
    assert_eq!(keys(s.list_instance_bindings("", "%", "", 100).await.unwrap()), Vec::<String>::new(), "no pattern characters");
    assert_eq!(keys(s.list_instance_bindings("", "", "", 2).await.unwrap()), ["ec2:1:i-1", "ec2:1:i-2"]);
    assert_eq!(keys(s.list_instance_bindings("", "", "ec2:1:i-2", 2).await.unwrap()), ["ec2:2:i-3", "ec2x:1:i-4"]);
    let one = &s.list_instance_bindings("other", "ec2:", "", 100).await.unwrap()[0];
    assert_eq!((one.instance.as_str(), one.bot.as_str(), one.bound_at), ("j1", "other", 7));

    let released = s.delete_instance_binding("ec2:1:i-1").await.unwrap();
    assert_eq!((released.key.as_str(), released.instance.as_str(), released.bot.as_str()), ("ec2:1:i-1", "i1", "b"));
    assert_eq!(s.instance_binding("ec2:1:i-1").await.unwrap(), None);
    assert_eq!(s.instance("i1").await.unwrap().id, "i1", "releasing leaves the old instance");
    let again = s.delete_instance_binding("ec2:1:i-1").await;
    assert!(matches!(again, Err(StoreError::NotFound { kind: "instance_binding", .. })), "{again:?}");
    assert_eq!(keys(s.list_instance_bindings("b", "", "", 100).await.unwrap()), ["ec2:1:i-2"]);
    s.create_bound_instance(&instance("i5", "b"), "ec2:1:i-1", false).await.unwrap();
    assert_eq!(s.instance_binding("ec2:1:i-1").await.unwrap().unwrap().instance, "i5", "a released key binds again without rebind");
}
