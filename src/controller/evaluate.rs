//! Running a rollout's checks once, at one evaluation instant.
//!
//! The pool orientation comes from the caller — the pools the pass read, or
//! while the store is down the ones last read — never from the store here:
//! with no orientation, `{{canary_servers}}` would render empty and a query
//! could match nothing (never failing) or make canary and baseline the same
//! query. So no orientation is an `error` verdict for every check, never a
//! pass.

use chrono::{DateTime, Utc};

use super::Controller;
use crate::engine::{self, CheckResult};
use crate::gates::{self, Vars};
use crate::spec::{Orientation, Spec};
use crate::store::{CheckResultRecord, RolloutRecord};

impl Controller {
    pub(super) async fn evaluate(
        &self,
        rec: &RolloutRecord,
        spec: &Spec,
        at: DateTime<Utc>,
        orientation: Option<&Orientation>,
    ) -> Vec<CheckResult> {
        let Some(a) = &spec.analysis else {
            return Vec::new();
        };
        let cal = self.calendars.get(&spec.calendar);
        let in_session = cal
            .as_ref()
            .is_some_and(|c| engine::in_session(spec, c, at));
        let query_time = at - a.query_delay;
        let vars = orientation.map(|o| Vars {
            rollout: rec.id.clone(),
            revision: rec.revision.clone(),
            canary_pool: o.canary.name.clone(),
            live_pool: o.live.name.clone(),
            canary_servers: o.canary.servers.clone(),
            live_servers: o.live.servers.clone(),
        });
        let source = self.metrics.source(a);
        let mut results = Vec::new();
        let mut records = Vec::new();
        for check in &a.checks {
            let ev = match (&source, &vars) {
                (Ok(src), Some(vars)) => gates::evaluate(check, src.as_ref(), vars, query_time).await,
                (Err(e), _) => gates::Evaluation {
                    check: check.name.clone(),
                    verdict: engine::Verdict::Error,
                    value: None,
                    query: check.query.clone(),
                    reason: format!("metrics source unusable: {e}"),
                    server_date: None,
                },
                (_, None) => gates::Evaluation {
                    check: check.name.clone(),
                    verdict: engine::Verdict::Error,
                    value: None,
                    query: check.query.clone(),
                    reason: "the target's pool orientation is unknown, so {{canary_servers}} cannot be rendered".into(),
                    server_date: None,
                },
            };
            if let Some(d) = ev.server_date {
                // The Date header has one-second resolution: compare with the
                // wall clock, not the evaluation instant.
                let now = self.now();
                self.trust
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .metrics(now, now - d);
            }
            records.push(CheckResultRecord {
                rollout_id: rec.id.clone(),
                check_name: ev.check.clone(),
                at,
                query: ev.query.clone(),
                value: ev.value,
                verdict: serde_json::to_value(ev.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                reason: ev.reason.clone(),
                in_session,
            });
            self.counters.verdict(ev.verdict);
            results.push(CheckResult {
                check: ev.check,
                verdict: ev.verdict,
                in_session,
            });
        }
        if let Err(e) = self.store.insert_check_results(&records).await {
            tracing::warn!(rollout = %rec.id, error = %e, "Check results not stored (the decision is still journalled in the audit log).");
        }
        results
    }
}
