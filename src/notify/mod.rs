//! Notifications: Slack/Mattermost-compatible incoming webhooks, delivered
//! from the store's outbox table.
//!
//! The design decision to know: the controller never sends anything. A
//! transition that notifies writes an outbox row (channel
//! `webhook:<secret-name>`, payload `{"kind", "text"}`) in the same
//! transaction as its event, unique per (event, channel). This worker, a
//! separate task, takes due rows, POSTs them and marks them sent. So a slow
//! or failing webhook can never delay a decision, a crash between commit and
//! send loses nothing, and a retried transition cannot queue a duplicate.
//! Delivery is at-least-once: a crash after the POST but before the row is
//! marked sent sends it again on restart (webhooks have no idempotency key).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::secrets::Secrets;
use crate::store::{OutboxRecord, Store, StoreError};

/// Channels of the form `webhook:<secret name>`.
pub const WEBHOOK_PREFIX: &str = "webhook:";

/// Failed deliveries since start, for `/metrics`
/// (`muhurat_notification_failures_total`).
static FAILURES: AtomicU64 = AtomicU64::new(0);
/// Delivered notifications since start (`muhurat_notifications_sent_total`).
static SENT: AtomicU64 = AtomicU64::new(0);

pub fn failures_total() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

pub fn sent_total() -> u64 {
    SENT.load(Ordering::Relaxed)
}

/// The dashboard page of a rollout under a base URL. One definition, so the
/// CLI's dotenv link and the notification link agree.
pub fn dashboard_url(base: &str, rollout_id: &str) -> String {
    format!("{}/rollouts/{rollout_id}", base.trim_end_matches('/'))
}

/// How the worker behaves. The defaults suit production.
#[derive(Debug, Clone)]
pub struct Options {
    /// The dashboard's public URL; when set, messages about a rollout end
    /// with a link to it.
    pub public_url: Option<String>,
    /// One webhook call may take this long; a hung receiver is cut off and
    /// retried later instead of holding the worker.
    pub request_timeout: Duration,
    /// How often the outbox is polled when idle.
    pub poll_every: Duration,
    /// Rows taken per pass (sent concurrently).
    pub batch: i64,
    /// The first retry waits this long; each further failure doubles it…
    pub backoff_base: TimeDelta,
    /// …up to this cap, so a webhook that comes back is used within minutes.
    pub backoff_cap: TimeDelta,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            public_url: None,
            request_timeout: Duration::from_secs(10),
            poll_every: Duration::from_secs(2),
            batch: 50,
            backoff_base: TimeDelta::seconds(5),
            backoff_cap: TimeDelta::minutes(10),
        }
    }
}

/// The delay before retry number `attempts + 1`, after `attempts` failures
/// so far (0 = the first failure): base·2^attempts, capped.
pub fn backoff(opts: &Options, attempts: i64) -> TimeDelta {
    let exp = attempts.clamp(0, 30) as u32;
    let ms = opts
        .backoff_base
        .num_milliseconds()
        .saturating_mul(1i64 << exp);
    TimeDelta::milliseconds(ms).min(opts.backoff_cap)
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub sent: usize,
    pub failed: usize,
}

/// Everything the worker needs.
#[derive(Clone)]
pub struct Worker {
    pub store: Store,
    /// Webhook URLs are secrets bound to their hosts ([`Secrets::webhook_url`]).
    pub secrets: Secrets,
    /// The policy's `allowed_hosts`, checked on every resolved URL.
    pub policy: Arc<crate::policy::Policy>,
    /// Build it with [`client`]: redirects are never followed.
    pub http: reqwest::Client,
    pub clock: Arc<dyn Clock>,
    pub opts: Options,
}

/// The webhook body for one outbox row: Slack's and Mattermost's common
/// `{"text": …}`, with the dashboard link when a public URL is configured
/// and the row's event belongs to a rollout.
pub fn message(payload: &str, rollout_id: Option<&str>, public_url: Option<&str>) -> Value {
    let p: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
    let mut text = p
        .get("text")
        .and_then(Value::as_str)
        .map(String::from)
        // A payload that is not our JSON is still worth delivering as is.
        .unwrap_or_else(|| payload.to_string());
    if let (Some(id), Some(base)) = (rollout_id, public_url.filter(|u| !u.trim().is_empty())) {
        text.push_str(&format!("\n{}", dashboard_url(base.trim(), id)));
    }
    json!({ "text": text })
}

impl Worker {
    /// Deliver every due row once (concurrently), mark each sent or failed.
    /// Returns after all of them finished or timed out.
    pub async fn deliver_once(&self) -> Result<Report, StoreError> {
        let now = self.clock.now();
        let due = self.store.outbox_due(now, self.opts.batch).await?;
        let mut set = JoinSet::new();
        for row in due {
            let me = self.clone();
            set.spawn(async move {
                let outcome = me.send(&row).await;
                (row, outcome)
            });
        }
        let mut report = Report::default();
        while let Some(joined) = set.join_next().await {
            let Ok((row, outcome)) = joined else {
                continue; // a panicked send leaves its row due; retried next pass
            };
            let now = self.clock.now();
            match outcome {
                Ok(()) => {
                    self.store.outbox_sent(row.id, now).await?;
                    SENT.fetch_add(1, Ordering::Relaxed);
                    report.sent += 1;
                }
                Err(e) => {
                    let retry = now + backoff(&self.opts, row.attempts);
                    tracing::warn!(
                        outbox = row.id, event = row.event_seq, channel = %row.channel,
                        attempts = row.attempts + 1, retry_at = %retry, error = %e,
                        "Notification not delivered; will retry."
                    );
                    self.store.outbox_failed(row.id, &e, retry).await?;
                    FAILURES.fetch_add(1, Ordering::Relaxed);
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// POST one row. The error is for the outbox's `last_error` and the log:
    /// it never contains the webhook URL (a secret).
    async fn send(&self, row: &OutboxRecord) -> Result<(), String> {
        let Some(secret) = row.channel.strip_prefix(WEBHOOK_PREFIX) else {
            return Err(format!(
                "unknown channel `{}` (expected webhook:<secret>)",
                row.channel
            ));
        };
        // Bound host and allowed_hosts, both before any connection. Neither
        // error shows the URL (it is the secret).
        let url = self
            .secrets
            .webhook_url(secret)
            .map_err(|e| e.to_string())?;
        if self.policy.url_allowed(&url).is_err() {
            // url_allowed's message names the URL: keep it out.
            return Err(format!(
                "webhook `{secret}`: its host is not in the server policy's allowed_hosts; refused before connecting"
            ));
        }
        let rollout_id = match self.store.events(None, row.event_seq - 1, 1).await {
            Ok(evs) => evs
                .into_iter()
                .find(|e| e.seq == row.event_seq)
                .and_then(|e| e.event.rollout_id),
            Err(e) => return Err(format!("cannot read event {}: {e}", row.event_seq)),
        };
        let body = message(
            &row.payload,
            rollout_id.as_deref(),
            self.opts.public_url.as_deref(),
        );
        let resp = self
            .http
            .post(&url)
            .timeout(self.opts.request_timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                let what = if e.is_timeout() {
                    format!("no answer within {:?}", self.opts.request_timeout)
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    "request failed".to_string()
                };
                // reqwest's Display includes the URL, which is the secret.
                format!("webhook `{secret}`: {what}")
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // A short, cleaned excerpt: the receiver may be hostile.
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| !c.is_control())
            .take(160)
            .collect();
        Err(format!(
            "webhook `{secret}` answered {status}: {}",
            text.trim()
        ))
    }

    /// Deliver until `stop` turns true: a pass, then sleep `poll_every`
    /// (or stop at once). A store error is logged and retried next pass: the
    /// outbox keeps the rows, nothing is lost.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!("Notification delivery started.");
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = self.deliver_once().await {
                tracing::warn!(error = %e, "Notification outbox unreadable; retrying.");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.opts.poll_every) => {}
                r = stop.changed() => if r.is_err() { break },
            }
        }
        tracing::info!("Notification delivery stopped.");
    }
}

/// The HTTP client for webhooks: a webhook URL carries its own credential
/// (the path), so a redirect — to any host — is never followed, and no
/// proxy from the environment sees it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// Deliver due rows once (see [`Worker::deliver_once`]).
pub async fn deliver_once(
    store: &Store,
    policy: Arc<crate::policy::Policy>,
    secrets: &Secrets,
    http: &reqwest::Client,
    clock: Arc<dyn Clock>,
    opts: &Options,
) -> Result<Report, StoreError> {
    Worker {
        store: store.clone(),
        policy,
        secrets: secrets.clone(),
        http: http.clone(),
        clock,
        opts: opts.clone(),
    }
    .deliver_once()
    .await
}

/// The delivery loop for `muhurat server`: spawn it as its own task.
pub async fn run(
    store: Store,
    policy: Arc<crate::policy::Policy>,
    secrets: Secrets,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    opts: Options,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    Worker {
        store,
        policy,
        secrets,
        http,
        clock,
        opts,
    }
    .run(stop)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = Options::default();
        assert_eq!(backoff(&o, 0), TimeDelta::seconds(5));
        assert_eq!(backoff(&o, 1), TimeDelta::seconds(10));
        assert_eq!(backoff(&o, 3), TimeDelta::seconds(40));
        assert_eq!(backoff(&o, 7), TimeDelta::minutes(10));
        assert_eq!(backoff(&o, 1_000), TimeDelta::minutes(10));
    }

    #[test]
    fn message_links_the_dashboard_only_with_a_public_url() {
        let p = r#"{"kind":"paused","text":"kite-api paused: drift"}"#;
        assert_eq!(
            message(p, Some("kite-api-1"), Some("https://muhurat.internal/")),
            json!({"text": "kite-api paused: drift\nhttps://muhurat.internal/rollouts/kite-api-1"})
        );
        assert_eq!(
            message(p, Some("kite-api-1"), None),
            json!({"text": "kite-api paused: drift"})
        );
        assert_eq!(
            message(p, None, Some("https://m")),
            json!({"text": "kite-api paused: drift"})
        );
    }
}
