//! The storage suite, written once and run against SQLite and PostgreSQL.

use chrono::{DateTime, TimeDelta, Utc};

use super::testing::fresh;
use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn rollout(id: &str, target: &str) -> RolloutRecord {
    RolloutRecord {
        id: id.into(),
        name: "kite-api".into(),
        target: target.into(),
        revision: "abc123".into(),
        initiator: "asha".into(),
        principal: "asha".into(),
        spec_yaml: "name: kite-api\n".into(),
        spec_hash: "h".into(),
        state: "pending".into(),
        active: true,
        version: 1,
        data: "{}".into(),
        next_wake: Some(t("2026-11-27T00:00:00Z")),
        created_at: t("2026-11-26T10:00:00Z"),
        updated_at: t("2026-11-26T10:00:00Z"),
    }
}

fn event(id: &str, kind: &str, at: &str) -> NewEvent {
    NewEvent {
        rollout_id: Some(id.into()),
        at: t(at),
        kind: kind.into(),
        principal: Some("asha".into()),
        why: format!("{kind} because"),
        input: r#"{"command":"start"}"#.into(),
        state: "pending".into(),
        version: 1,
        snapshot: Some("{}".into()),
        calendar: Some("nse".into()),
        calendar_version: Some("2026.11.1".into()),
        policy_version: Some("0".into()),
        clock_skew_ms: Some(12),
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

both!(
    insert_and_read_back,
    one_active_rollout_per_target,
    transition_bumps_version_and_appends_events,
    transition_that_errs_or_declines_changes_nothing,
    concurrent_transitions_serialise,
    events_after_a_sequence_number,
    due_and_next_wake,
    pools_and_freeze,
    tokens_lifecycle,
    check_results_with_retention,
    outbox_at_least_once_deduplicated,
    second_server_is_refused,
);

async fn insert_and_read_back(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    let r = rollout("r1", "haproxy:kite@unix:/a");
    let seq = s
        .insert_rollout(&r, &event("r1", "accepted", "2026-11-26T10:00:00Z"))
        .await
        .unwrap();
    assert!(seq >= 1);
    assert_eq!(s.rollout("r1").await.unwrap(), Some(r.clone()));
    assert_eq!(s.rollout("nope").await.unwrap(), None);
    assert_eq!(
        s.active_by_name("kite-api").await.unwrap().map(|r| r.id),
        Some("r1".into())
    );
    let ev = s.events(Some("r1"), 0, 10).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event, event("r1", "accepted", "2026-11-26T10:00:00Z"));
}

async fn one_active_rollout_per_target(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    let target = "haproxy:kite@unix:/a";
    s.insert_rollout(
        &rollout("r1", target),
        &event("r1", "accepted", "2026-11-26T10:00:00Z"),
    )
    .await
    .unwrap();
    match s
        .insert_rollout(
            &rollout("r2", target),
            &event("r2", "accepted", "2026-11-26T10:01:00Z"),
        )
        .await
    {
        Err(StoreError::TargetBusy { rollout, .. }) => assert_eq!(rollout, "r1"),
        other => panic!("expected TargetBusy, got {other:?}"),
    }
    // Nothing of r2 was written, not even its event.
    assert_eq!(s.rollout("r2").await.unwrap(), None);
    assert!(s.events(Some("r2"), 0, 10).await.unwrap().is_empty());
    // Once r1 ends, the target is free.
    s.transition::<()>("r1", |_| {
        Ok(Some(Update {
            state: "aborted".into(),
            active: false,
            data: "{}".into(),
            next_wake: None,
            events: vec![event("r1", "aborted", "2026-11-26T11:00:00Z")],
            outbox: vec![],
            pools: None,
        }))
    })
    .await
    .unwrap()
    .unwrap();
    s.insert_rollout(
        &rollout("r2", target),
        &event("r2", "accepted", "2026-11-26T12:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(
        s.active_on_target(target).await.unwrap().map(|r| r.id),
        Some("r2".into())
    );
    // What the /metrics gauges load at start: every rollout's state.
    let mut states = s.rollout_states().await.unwrap();
    states.sort();
    assert_eq!(
        states,
        [
            ("r1".to_string(), "aborted".to_string()),
            ("r2".to_string(), rollout("r2", target).state),
        ]
    );
}

async fn transition_bumps_version_and_appends_events(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    s.insert_rollout(
        &rollout("r1", "x"),
        &event("r1", "accepted", "2026-11-26T10:00:00Z"),
    )
    .await
    .unwrap();
    let c = s
        .transition::<()>("r1", |cur| {
            assert_eq!(cur.version, 1);
            Ok(Some(Update {
                state: "waiting_for_window".into(),
                active: true,
                data: r#"{"step":0}"#.into(),
                next_wake: Some(t("2026-11-27T00:25:00Z")),
                events: vec![
                    event("r1", "preflight_passed", "2026-11-26T10:00:05Z"),
                    event("r1", "waiting", "2026-11-26T10:00:05Z"),
                ],
                // Two notifications on one channel, each for its own event
                // (a rollback: "started" and "rolled back"): both are queued.
                outbox: vec![
                    NewOutbox {
                        channel: "webhook:mm".into(),
                        payload: "{\"n\":1}".into(),
                        event: 0,
                    },
                    NewOutbox {
                        channel: "webhook:mm".into(),
                        payload: "{\"n\":2}".into(),
                        event: 1,
                    },
                ],
                pools: None,
            }))
        })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(c.record.version, 2);
    let back = s.rollout("r1").await.unwrap().unwrap();
    assert_eq!(back, c.record);
    assert_eq!(back.state, "waiting_for_window");
    assert_eq!(back.next_wake, Some(t("2026-11-27T00:25:00Z")));
    let ev = s.events(Some("r1"), 0, 10).await.unwrap();
    assert_eq!(
        ev.iter().map(|e| e.event.kind.as_str()).collect::<Vec<_>>(),
        ["accepted", "preflight_passed", "waiting"]
    );
    // Events carry the version they produced.
    assert_eq!(ev[1].event.version, 2);
    assert_eq!(c.first_seq, Some(ev[1].seq));
    let due = s.outbox_due(t("2026-11-26T10:00:05Z"), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|o| o.payload.as_str()).collect::<Vec<_>>(),
        ["{\"n\":1}", "{\"n\":2}"],
        "one_transition_with_several_notifications_keeps_them_all"
    );
}

async fn transition_that_errs_or_declines_changes_nothing(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    s.insert_rollout(
        &rollout("r1", "x"),
        &event("r1", "accepted", "2026-11-26T10:00:00Z"),
    )
    .await
    .unwrap();
    let r = s
        .transition("r1", |_| Err::<Option<Update>, _>("stale_approval"))
        .await
        .unwrap();
    assert_eq!(r, Err("stale_approval"));
    let r = s.transition::<()>("r1", |_| Ok(None)).await.unwrap();
    assert_eq!(r, Ok(None));
    assert_eq!(s.rollout("r1").await.unwrap().unwrap().version, 1);
    assert_eq!(s.events(Some("r1"), 0, 10).await.unwrap().len(), 1);
    match s.transition::<()>("missing", |_| Ok(None)).await {
        Err(StoreError::NotFound(id)) => assert_eq!(id, "missing"),
        other => panic!("{other:?}"),
    }
}

async fn concurrent_transitions_serialise(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    s.insert_rollout(
        &rollout("r1", "x"),
        &event("r1", "accepted", "2026-11-26T10:00:00Z"),
    )
    .await
    .unwrap();
    // 20 tasks each append a counter to the data; with the row locked for the
    // whole transaction none is lost.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.transition::<()>("r1", |cur| {
                let mut v: Vec<i64> =
                    serde_json::from_str(if cur.data == "{}" { "[]" } else { &cur.data }).unwrap();
                v.push(i);
                Ok(Some(Update {
                    state: "baking".into(),
                    active: true,
                    data: serde_json::to_string(&v).unwrap(),
                    next_wake: None,
                    events: vec![event("r1", "tick", "2026-11-26T10:00:00Z")],
                    outbox: vec![],
                    pools: None,
                }))
            })
            .await
            .unwrap()
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let r = s.rollout("r1").await.unwrap().unwrap();
    let v: Vec<i64> = serde_json::from_str(&r.data).unwrap();
    assert_eq!(v.len(), 20);
    assert_eq!(r.version, 21);
    let versions: Vec<i64> = s
        .events(Some("r1"), 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.version)
        .collect();
    assert_eq!(versions, (1..=21).collect::<Vec<_>>());
}

async fn events_after_a_sequence_number(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    s.insert_rollout(
        &rollout("r1", "x"),
        &event("r1", "accepted", "2026-11-26T10:00:00Z"),
    )
    .await
    .unwrap();
    let seq = s
        .append_event(&NewEvent {
            rollout_id: None,
            kind: "freeze_on".into(),
            at: t("2026-11-26T10:00:01Z"),
            ..Default::default()
        })
        .await
        .unwrap();
    let all = s.events(None, 0, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].seq, seq);
    assert_eq!(s.events(None, seq, 10).await.unwrap().len(), 0);
    assert_eq!(
        s.events(None, all[0].seq, 10).await.unwrap()[0].event.kind,
        "freeze_on"
    );
    assert_eq!(s.events(Some("r1"), 0, 10).await.unwrap().len(), 1);
}

async fn due_and_next_wake(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    let mut a = rollout("a", "ta");
    a.next_wake = Some(t("2026-11-27T00:00:00Z"));
    let mut c = rollout("c", "tc");
    c.next_wake = Some(t("2026-11-26T12:00:00Z"));
    s.insert_rollout(&a, &event("a", "accepted", "2026-11-26T10:00:00Z"))
        .await
        .unwrap();
    s.insert_rollout(&c, &event("c", "accepted", "2026-11-26T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(
        s.next_wake().await.unwrap(),
        Some(t("2026-11-26T12:00:00Z"))
    );
    let due: Vec<String> = s
        .due(t("2026-11-26T13:00:00Z"))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(due, ["c"]);
    assert_eq!(s.due(t("2026-11-27T00:00:00Z")).await.unwrap().len(), 2);
}

async fn pools_and_freeze(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    assert_eq!(s.pool_state("x").await.unwrap(), None);
    let p = PoolRecord {
        target: "x".into(),
        live: "blue".into(),
        idle: "green".into(),
        updated_at: t("2026-11-26T10:00:00Z"),
    };
    s.set_pool_state(&p).await.unwrap();
    let swapped = PoolRecord {
        live: "green".into(),
        idle: "blue".into(),
        ..p.clone()
    };
    s.set_pool_state(&swapped).await.unwrap();
    assert_eq!(s.pool_state("x").await.unwrap(), Some(swapped));
    assert!(!s.freeze().await.unwrap().on);
    let f = FreezeRecord {
        on: true,
        reason: "budget".into(),
        by: "ravi".into(),
        since: t("2026-11-26T10:00:00Z"),
    };
    let seq = s
        .set_freeze(
            &f,
            &NewEvent {
                kind: "freeze_on".into(),
                why: "budget".into(),
                at: f.since,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.freeze().await.unwrap(), f);
    assert_eq!(
        s.events(None, seq - 1, 10).await.unwrap()[0].event.kind,
        "freeze_on"
    );
}

async fn tokens_lifecycle(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    let tok = TokenRecord {
        name: "ci".into(),
        hash: "h1".into(),
        role: "deployer".into(),
        principal: "gitlab".into(),
        created_at: t("2026-11-26T10:00:00Z"),
        created_by: "bootstrap".into(),
        revoked_at: None,
        revoked_by: None,
    };
    s.insert_token(&tok).await.unwrap();
    assert!(
        matches!(s.insert_token(&tok).await, Err(StoreError::Io(m)) if m.contains("already exists"))
    );
    assert_eq!(s.token_by_hash("h1").await.unwrap(), Some(tok.clone()));
    assert!(
        s.revoke_token("ci", "ravi", t("2026-11-27T00:00:00Z"))
            .await
            .unwrap()
    );
    assert!(
        !s.revoke_token("ci", "ravi", t("2026-11-27T00:00:00Z"))
            .await
            .unwrap()
    );
    let back = s.token_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(back.revoked_by.as_deref(), Some("ravi"));
    assert_eq!(s.tokens().await.unwrap().len(), 1);
}

async fn check_results_with_retention(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    let base = t("2026-11-26T10:00:00Z");
    let rs: Vec<CheckResultRecord> = (0..5)
        .map(|i| CheckResultRecord {
            rollout_id: "r1".into(),
            check_name: "error-rate".into(),
            at: base + TimeDelta::minutes(i),
            query: "up".into(),
            value: if i == 2 { None } else { Some(i as f64 / 10.0) },
            verdict: if i == 2 {
                "inconclusive".into()
            } else {
                "pass".into()
            },
            reason: "".into(),
            in_session: i % 2 == 0,
        })
        .collect();
    s.insert_check_results(&rs).await.unwrap();
    let back = s.check_results("r1", 3).await.unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back[0], rs[4]);
    assert_eq!(back[2].value, None);
    assert_eq!(
        s.prune_check_results(base + TimeDelta::minutes(3))
            .await
            .unwrap(),
        3
    );
    assert_eq!(s.check_results("r1", 10).await.unwrap().len(), 2);
}

async fn outbox_at_least_once_deduplicated(b: Backend) {
    let (s, _url, _d) = fresh(b).await;
    let now = t("2026-11-26T10:00:00Z");
    let o = NewOutbox {
        channel: "webhook:mm".into(),
        payload: r#"{"text":"hi"}"#.into(),
        ..Default::default()
    };
    s.enqueue(7, &o, now).await.unwrap();
    s.enqueue(7, &o, now).await.unwrap();
    let due = s.outbox_due(now, 10).await.unwrap();
    assert_eq!(due.len(), 1, "de-duplicated by (event, channel)");
    s.outbox_failed(due[0].id, "500", now + TimeDelta::seconds(30))
        .await
        .unwrap();
    assert!(s.outbox_due(now, 10).await.unwrap().is_empty());
    let again = s
        .outbox_due(now + TimeDelta::seconds(30), 10)
        .await
        .unwrap();
    assert_eq!(again[0].attempts, 1);
    s.outbox_sent(again[0].id, now + TimeDelta::seconds(31))
        .await
        .unwrap();
    assert!(
        s.outbox_due(now + TimeDelta::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn second_server_is_refused(b: Backend) {
    let (s, url, _d) = fresh(b).await;
    let lock = ServerLock::acquire(&s, &url).await.unwrap();
    let s2 = Store::open(&url).await.unwrap();
    match ServerLock::acquire(&s2, &url).await {
        Err(StoreError::Locked(what)) => assert!(
            what.contains(if b == Backend::Sqlite {
                "lock file"
            } else {
                "advisory"
            }),
            "{what}"
        ),
        other => panic!("expected Locked, got {other:?}"),
    }
    lock.release().await;
    // Released: a new server may start.
    let again = ServerLock::acquire(&s2, &url).await;
    assert!(again.is_ok(), "{again:?}");
}
