//! A simulated world for controller tests: the real NSE calendar, a manual
//! clock, the in-memory traffic target and a scripted metrics source.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, Datelike, TimeDelta, Timelike, Utc, Weekday};
use muhurat::clock::{Clock, ManualClock};
use muhurat::controller::testing::ScriptedMetrics;
use muhurat::controller::{Calendars, Config, Controller, StartOutcome, StartRequest};
use muhurat::engine::{Input, Rollout, State};
use muhurat::gates::Sample;
use muhurat::store::{Backend, Store, testing};
use muhurat::traffic::memory::{MemoryFactory, MemoryTarget};

pub const IST: chrono_tz::Tz = chrono_tz::Asia::Kolkata;

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn spec(extra_analysis: &str, steps: &str) -> String {
    format!(
        r#"name: kite-api
calendar: nse
segments: [equity, fno, currency, commodity]
traffic:
  haproxy:
    endpoints: ["unix:/run/haproxy/a.sock", "unix:/run/haproxy/b.sock"]
    backend: kite_api
    pools: {{blue: [b1, b2], green: [g1, g2]}}
analysis:
  prometheus: http://127.0.0.1:8428
  interval: 30m
  query_delay: 30s
  min_passes: 2
  inconclusive_limit: 3
{extra_analysis}  checks:
    - name: error-rate
      query: errors{{server=~"{{{{canary_servers}}}}"}}
      max: 0.01
steps:
{steps}"#
    )
}

pub const STEPS: &str = "  - set_weight: 5\n  - bake: {sessions: 1, segment: equity}\n  - approval: {min: 1}\n  - set_weight: 50\n  - bake: {sessions: 1}\n  - set_weight: 100\n  - bake: {sessions: 1}\n";

/// Weekdays 08:00–24:00 IST, a little wider than the sessions of the spec's
/// segments (equity 08:45 … commodity 23:55): customers trade and the
/// metrics store has data; otherwise nobody trades and it has none.
pub fn trading(at: DateTime<Utc>) -> bool {
    let l = at.with_timezone(&IST);
    let wd = l.weekday();
    !matches!(wd, Weekday::Sat | Weekday::Sun) && l.hour() >= 8
}

pub fn healthy(_q: &str, at: DateTime<Utc>) -> Result<Sample, muhurat::gates::GateError> {
    Ok(if trading(at) {
        Sample::Value(0.001)
    } else {
        Sample::NoData
    })
}

pub struct H {
    pub c: Arc<Controller>,
    pub clock: Arc<ManualClock>,
    pub target: MemoryTarget,
    pub metrics: ScriptedMetrics,
    pub _dir: Option<tempfile::TempDir>,
}

pub async fn harness(b: Backend, start: &str) -> H {
    let (store, _url, dir) = testing::fresh(b).await;
    harness_with(store, dir, start).await
}

/// A world on a given store; the journal goes to a temp dir.
pub async fn harness_with(store: Store, dir: Option<tempfile::TempDir>, start: &str) -> H {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cals = Arc::new(Calendars::load(&root.join("rollouts/calendars")).unwrap());
    let clock = Arc::new(ManualClock::new(t(start)));
    // Endpoint latencies (when a test sets them) move the manual clock on.
    let traffic = MemoryFactory::with_clock(clock.clone());
    let metrics = ScriptedMetrics::new(healthy);
    // Each world journals into its own temp dir (kept: the dir must outlive
    // the controller; the OS cleans /tmp).
    let journal = tempfile::tempdir().unwrap().keep().join("muhurat.journal");
    let cfg = Config {
        drift_interval: TimeDelta::minutes(10),
        measure_db_skew: false,
        journal,
        server_notify: vec!["sre".into()],
        ..Config::default()
    };
    let c = Controller::new(
        store,
        cals,
        Arc::new(traffic.clone()),
        Arc::new(metrics.clone()),
        clock.clone(),
        cfg,
    );
    // The target exists before the first rollout: blue (the first pool) at
    // 0%, so green is live and blue is the canary.
    let s = muhurat::spec::load("s", &spec("", STEPS), |_| {
        Ok(c.calendars().get("nse").unwrap().as_ref().clone())
    })
    .unwrap()
    .spec;
    let target = traffic.target(&s.traffic);
    H {
        c,
        clock,
        target,
        metrics,
        _dir: dir,
    }
}

impl H {
    pub async fn start(&self, yaml: &str) -> String {
        let out = self
            .c
            .start(StartRequest {
                spec_yaml: yaml.into(),
                revision: "abc123".into(),
                initiator: "asha".into(),
                principal: "asha".into(),
            })
            .await
            .unwrap();
        let StartOutcome::Created(rec) = out else {
            panic!("expected a new rollout")
        };
        // Preflight runs in the background; let it land.
        for _ in 0..200 {
            if self.rollout(&rec.id).await.state != State::Pending {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        rec.id
    }

    pub async fn rollout(&self, id: &str) -> Rollout {
        let rec = self.c.store().rollout(id).await.unwrap().unwrap();
        serde_json::from_str(&rec.data).unwrap()
    }

    /// Run passes every `step` until `until` or until `stop` says so.
    pub async fn run(
        &self,
        id: &str,
        until: &str,
        step: TimeDelta,
        mut on_each: impl FnMut(&Rollout) -> Option<Input>,
        stop: impl Fn(&Rollout) -> bool,
    ) -> Rollout {
        let until = t(until);
        loop {
            self.c.pass().await.unwrap();
            self.c.settled().await;
            let r = self.rollout(id).await;
            if stop(&r) || self.clock.now() >= until {
                return r;
            }
            if let Some(input) = on_each(&r) {
                let principal = match &input {
                    Input::Approve { principal, .. } => Some(principal.clone()),
                    _ => None,
                };
                self.c.input(id, input, principal.as_deref()).await.unwrap();
                self.c.settled().await;
            }
            self.clock.advance(step);
        }
    }

    pub async fn events(&self, id: &str) -> Vec<(String, DateTime<Utc>, String)> {
        self.c
            .store()
            .events(Some(id), 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.event.kind, e.event.at, e.event.why))
            .collect()
    }
}

pub fn approve_when_waiting(r: &Rollout) -> Option<Input> {
    (r.state == State::AwaitingApproval).then(|| Input::Approve {
        principal: "ravi".into(),
        is_initiator: false,
        step: r.step,
        spec_hash: r.spec_hash.clone(),
        comment: None,
    })
}
