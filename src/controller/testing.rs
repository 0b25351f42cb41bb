//! Test doubles for the controller's edges that are *not* real servers:
//! a scripted metrics source. (Tests of the real Prometheus/VictoriaMetrics
//! client run against a real VictoriaMetrics; these drive the engine through
//! weeks of simulated time, where a real metrics store cannot follow a
//! manual clock.)

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MetricsFactory;
use crate::gates::{Answer, GateError, MetricsSource, Sample};
use crate::spec::Analysis;

/// Queries seen: (query as sent, query time).
pub type QueryLog = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

type Script = dyn Fn(&str, DateTime<Utc>) -> Result<Sample, GateError> + Send + Sync;

/// Answers every query from a script the test can change at any time.
#[derive(Clone)]
pub struct ScriptedMetrics {
    script: Arc<Mutex<Arc<Script>>>,
    /// Every query: (query as sent, query time).
    pub log: QueryLog,
}

impl ScriptedMetrics {
    pub fn new(
        f: impl Fn(&str, DateTime<Utc>) -> Result<Sample, GateError> + Send + Sync + 'static,
    ) -> Self {
        ScriptedMetrics {
            script: Arc::new(Mutex::new(Arc::new(f))),
            log: Arc::default(),
        }
    }

    pub fn set(
        &self,
        f: impl Fn(&str, DateTime<Utc>) -> Result<Sample, GateError> + Send + Sync + 'static,
    ) {
        *self.script.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(f);
    }
}

#[async_trait]
impl MetricsSource for ScriptedMetrics {
    async fn query(&self, query: &str, time: DateTime<Utc>) -> Result<Answer, GateError> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((query.to_string(), time));
        let f = self
            .script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        f(query, time).map(|sample| Answer {
            sample,
            server_date: None,
        })
    }
}

impl MetricsFactory for ScriptedMetrics {
    fn source(&self, _analysis: &Analysis) -> Result<Arc<dyn MetricsSource>, String> {
        Ok(Arc::new(self.clone()))
    }
}
