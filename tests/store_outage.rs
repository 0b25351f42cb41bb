//! The store goes away (PostgreSQL refuses the controller's role): no raise
//! is made, but a check that fails still rolls back at once — journalled to
//! a local file first — and the journal is persisted when the store returns.

#[path = "support/pg_role.rs"]
mod pg_role;
#[path = "support/sim.rs"]
mod sim;

use chrono::TimeDelta;
use muhurat::engine::State;
use muhurat::gates::Sample;
use muhurat::store::{Store, testing};
use pg_role::own_role;
use sim::*;
use sqlx::Connection;

async fn admin(q: &str) {
    let mut c = sqlx::AnyConnection::connect(&testing::pg_base())
        .await
        .unwrap();
    sqlx::query(q).execute(&mut c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_rolls_back_while_the_store_is_down_and_is_persisted_later() {
    let (role, url) = own_role("outage").await;
    let store = Store::open(&url).await.unwrap();
    let h = harness_with(store, None, "2026-11-06T12:00:00+05:30").await;
    let id = h.start(&spec("", STEPS)).await;
    // 5% confirmed on Saturday; into Monday's session, healthy.
    let r = h
        .run(
            &id,
            "2026-11-09T10:00:00+05:30",
            TimeDelta::minutes(15),
            |_| None,
            |_| false,
        )
        .await;
    assert_eq!(r.confirmed, 5);

    // The database goes away.
    admin(&format!("ALTER ROLE {role} NOLOGIN")).await;
    admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
    ))
    .await;
    h.metrics.set(|_, _| Ok(Sample::Value(0.5)));
    h.clock.advance(TimeDelta::minutes(30));
    let report = h.c.pass().await.unwrap();
    assert!(report.degraded, "{report:?}");
    assert_eq!(report.evaluations, 1);
    // The decrease goes through the target's actuator like every write.
    h.c.settled().await;
    // Rolled back on the wire at once, and journalled.
    assert_eq!(h.target.share(), Some(0.0));
    assert!(h.target.lock().drained);
    let journal = h.c.config().journal.clone();
    let text = std::fs::read_to_string(&journal).expect("the journal was written");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&id));

    // The database returns: the journal is replayed into the store.
    admin(&format!("ALTER ROLE {role} LOGIN")).await;
    h.clock.advance(TimeDelta::minutes(1));
    h.c.pass().await.unwrap();
    h.c.settled().await;
    h.c.pass().await.unwrap();
    h.c.settled().await;
    let r = h.rollout(&id).await;
    assert_eq!(r.state, State::RolledBack, "{:?}", r.waiting_for);
    assert!(!journal.exists(), "the journal is emptied once persisted");
    let kinds: Vec<String> = h.events(&id).await.into_iter().map(|e| e.0).collect();
    assert!(kinds.iter().any(|k| k == "check_failed"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "rolled_back"), "{kinds:?}");
}
