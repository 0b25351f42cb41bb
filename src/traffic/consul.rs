//! Consul KV traffic backend: the canary share is written as one JSON
//! document per target at `traffic.consul.kv.key`, which consul-template
//! renders into HAProxy's `server … weight` lines
//! (`contrib/consul-template/`).
//!
//! The one decision a newcomer must know: **a KV write proves nothing about
//! HAProxy.** consul-template may be stopped, the render may fail `haproxy
//! -c`, the reload may not happen. So a write is confirmed *only* by an
//! independent, read-only check of the HAProxy endpoints named in `verify:`
//! (the same Runtime API reads as the HAProxy backend); without `verify`
//! nothing is ever confirmed and the report says why.
//!
//! The document is written with `?cas=<ModifyIndex>`, and the backend
//! remembers the ModifyIndex of its own last write (per target, shared by
//! every backend one [`ConsulFactory`] builds). A document whose index is
//! not the remembered one — or a CAS write that Consul refuses — means
//! someone else wrote it: that is a [`TrafficError::Conflict`], and only a
//! *decrease* of the canary share is ever written over someone else's
//! document (docs/design.md §3, "Consul KV targets").

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use super::haproxy::{HaproxyBackend, HaproxyLimits, compute_weights};
use super::{
    ApplyReport, EndpointReading, Orientation, Permit, PreflightIssue, Reading, TrafficBackend,
    TrafficError, TrafficFactory,
};
use crate::secrets::Secrets;
use crate::spec::{Traffic, Verify};

/// Format version of [`WeightsDocument`]; templates can check it.
pub const DOCUMENT_VERSION: u32 = 1;

/// How close (percentage points) HAProxy's share must be to the document's
/// for a change to count as confirmed. The template renders the exact
/// integer weights, so any real difference is a render that did not happen;
/// the slack only absorbs float rounding and a `verify` HAProxy whose pools
/// are configured slightly differently.
pub const CONFIRM_TOLERANCE: f64 = 0.5;

/// How many times a decrease is retried when Consul keeps refusing the CAS
/// write (someone keeps writing). Each attempt re-reads the document first.
const MAX_CAS_ATTEMPTS: usize = 4;

/// Limits that keep a slow or hostile Consul from hurting the controller.
#[derive(Debug, Clone)]
pub struct ConsulLimits {
    /// TCP (and TLS) connect. Without it a firewalled address waits for
    /// the kernel's SYN retries.
    pub connect_timeout: Duration,
    /// One whole request: send, headers and body. A deadline, so an agent
    /// that accepts and never answers cannot hold the actuator.
    pub request_timeout: Duration,
    /// Largest response body read. The document is a few hundred bytes and
    /// Consul caps values at 512 KiB (base64 in JSON: ~700 KB).
    pub max_body_bytes: usize,
    /// How long an apply polls the `verify` endpoints for consul-template's
    /// render + reload to show up before reporting "not confirmed" (the
    /// controller retries, and a retry does not write again).
    pub confirm_wait: Duration,
    /// Gap between the two matching HAProxy reads that confirm a change
    /// (past the 60–90 ms an old worker answers after a reload).
    pub confirm_interval: Duration,
    /// For the `verify` HAProxy reads and the rollback drain.
    pub haproxy: HaproxyLimits,
}

impl Default for ConsulLimits {
    fn default() -> Self {
        ConsulLimits {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_body_bytes: 1 << 20,
            // consul-template's usual `wait { min = "2s" max = "10s" }` plus
            // `haproxy -c` and a reload.
            confirm_wait: Duration::from_secs(15),
            confirm_interval: Duration::from_millis(250),
            haproxy: HaproxyLimits::default(),
        }
    }
}

/// The document at the KV key. consul-template reads `weights`; the rest is
/// for people and for muhurat's own checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsDocument {
    pub version: u32,
    /// The pool carrying the traffic.
    pub live_pool: String,
    /// The pool the new version was deployed to (the canary).
    pub idle_pool: String,
    /// The idle pool's share in percent, as asked for.
    pub canary_share: u32,
    /// The share the integer weights below actually give.
    pub effective_share: f64,
    /// Server → HAProxy weight (0–256), for every server of both pools.
    pub weights: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// Where the target lives (from `Traffic::Consul`).
#[derive(Debug, Clone)]
pub struct ConsulTarget {
    /// `http(s)://host:port`, without a trailing slash.
    pub address: String,
    /// The KV key, without a leading slash.
    pub key: String,
    /// The secret *name* the token came from, for error messages.
    pub token_secret: Option<String>,
    pub verify: Option<Verify>,
}

impl ConsulTarget {
    /// `consul:<address>/<key>`, as `Traffic::target_id`.
    pub fn id(&self) -> String {
        format!("consul:{}/{}", self.address, self.key)
    }
}

/// The ModifyIndex of muhurat's last write, per target id. Shared by the
/// backends one factory builds, because the controller builds a fresh
/// backend for every write.
///
/// TODO(correctness): this lives in memory. After a controller restart the
/// first read is taken as the baseline, so a hand edit made while the
/// controller was down is not seen as a conflict (drift detection through
/// `verify` still sees its effect). Persisting the index with the pool
/// state would close that gap.
type KvMemory = Arc<Mutex<HashMap<String, u64>>>;

/// A Consul KV target, oriented for one rollout.
pub struct ConsulBackend {
    target: ConsulTarget,
    orientation: Orientation,
    client: reqwest::Client,
    /// Never logged: `ConsulBackend`'s `Debug` leaves it out.
    token: Option<HeaderValue>,
    verify: Option<HaproxyBackend>,
    limits: ConsulLimits,
    rollout: Option<(String, String)>,
    memory: KvMemory,
}

impl fmt::Debug for ConsulBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulBackend")
            .field("target", &self.target)
            .field("orientation", &self.orientation)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// One KV entry as GET returns it.
#[derive(Debug, Clone)]
struct Entry {
    modify_index: u64,
    value: Vec<u8>,
}

/// The JSON object of a KV GET (`[{"Key":…,"Value":<base64|null>,…}]`).
#[derive(Deserialize)]
struct RawEntry {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: Option<String>,
    #[serde(rename = "ModifyIndex")]
    modify_index: u64,
}

/// What a document write did.
struct Written {
    /// The document as it now stands (ours).
    doc: WeightsDocument,
    /// ModifyIndex of the document written or found equal.
    index: Option<u64>,
    /// Someone else had written the document: what we found and did.
    conflict: Option<String>,
}

impl ConsulBackend {
    /// `token` is the secret's value (`X-Consul-Token`); `None` uses the
    /// agent's default token.
    pub fn new(
        target: ConsulTarget,
        orientation: Orientation,
        token: Option<String>,
        limits: ConsulLimits,
    ) -> Result<Self, TrafficError> {
        let secret = target.token_secret.as_deref().unwrap_or("(none)");
        let token = match token {
            None => None,
            Some(t) => {
                let mut v = HeaderValue::from_str(&t).map_err(|_| {
                    // The value itself is never put in a message.
                    TrafficError::Other(format!(
                        "the Consul token in secret `{secret}` is not a valid HTTP header value"
                    ))
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let client = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.request_timeout)
            // The token goes in a header: never through a proxy picked up
            // from the environment, and never on to a redirect target.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TrafficError::Other(format!("cannot build the Consul client: {e}")))?;
        let verify = target.verify.as_ref().map(|v| {
            HaproxyBackend::new(
                v.haproxy_endpoints.clone(),
                v.backend.clone(),
                orientation.clone(),
                limits.haproxy.clone(),
            )
        });
        Ok(ConsulBackend {
            target: ConsulTarget {
                address: target.address.trim_end_matches('/').to_string(),
                key: target.key.trim_start_matches('/').to_string(),
                ..target
            },
            orientation,
            client,
            token,
            verify,
            limits,
            rollout: None,
            memory: KvMemory::default(),
        })
    }

    /// Record the rollout id and revision in the documents written.
    pub fn with_rollout(mut self, id: impl Into<String>, revision: impl Into<String>) -> Self {
        self.rollout = Some((id.into(), revision.into()));
        self
    }

    pub fn target(&self) -> &ConsulTarget {
        &self.target
    }

    /// The document for `share` in this orientation. Consul targets keep no
    /// configured weights of their own (the template renders them), so the
    /// servers of a pool split its share evenly.
    pub fn document(&self, share: u32) -> Result<WeightsDocument, TrafficError> {
        if share > 100 {
            return Err(TrafficError::Other(format!(
                "canary share {share}% is above 100%"
            )));
        }
        let even = |p: &crate::spec::Pool| -> Vec<(String, u32)> {
            p.servers.iter().map(|s| (s.clone(), 0)).collect()
        };
        let plan = compute_weights(
            &even(&self.orientation.canary),
            &even(&self.orientation.live),
            share,
        )
        .map_err(|e| TrafficError::Other(format!("{}: {e}", self.target.id())))?;
        Ok(WeightsDocument {
            version: DOCUMENT_VERSION,
            live_pool: self.orientation.live.name.clone(),
            idle_pool: self.orientation.canary.name.clone(),
            canary_share: share,
            effective_share: plan.effective_share,
            weights: plan.weights,
            rollout: self.rollout.as_ref().map(|r| r.0.clone()),
            revision: self.rollout.as_ref().map(|r| r.1.clone()),
        })
    }

    /// The canary share a stored document gives *this* orientation's canary
    /// pool, from its weights (the document may have been written for the
    /// other orientation by the previous rollout).
    fn share_of(&self, value: &[u8]) -> Result<f64, String> {
        let doc: WeightsDocument = serde_json::from_slice(value)
            .map_err(|e| format!("not a muhurat weights document ({e})"))?;
        let canary = &self.orientation.canary.servers;
        let pooled: Vec<&String> = canary
            .iter()
            .chain(&self.orientation.live.servers)
            .collect();
        let mut c = 0u64;
        let mut total = 0u64;
        for s in &pooled {
            let w = doc
                .weights
                .get(*s)
                .ok_or_else(|| format!("it has no weight for server {s}"))?;
            total += u64::from(*w);
            if canary.contains(s) {
                c += u64::from(*w);
            }
        }
        if let Some(extra) = doc.weights.keys().find(|k| !pooled.contains(k)) {
            return Err(format!("it names server {extra}, which is in neither pool"));
        }
        Ok(if total == 0 {
            0.0
        } else {
            100.0 * c as f64 / total as f64
        })
    }

    // ---- Consul HTTP ----------------------------------------------------

    fn url(&self, query: &str) -> String {
        format!(
            "{}/v1/kv/{}{query}",
            self.target.address,
            encode_key(&self.target.key)
        )
    }

    /// One request under a single deadline, body read under the size limit.
    async fn request(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Vec<u8>>,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), TrafficError> {
        let what = format!("Consul {method} {}", self.target.id());
        let mut req = self.client.request(method, url);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t.clone());
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let max = self.limits.max_body_bytes;
        let exchange = async {
            let mut resp = req.send().await.map_err(|e| transport(&what, &e))?;
            let status = resp.status();
            if resp.content_length().is_some_and(|n| n > max as u64) {
                return Err(TrafficError::Unreachable(format!(
                    "{what}: the answer is larger than {max} bytes — is this a Consul agent?"
                )));
            }
            let mut buf = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&what, &e))? {
                if buf.len() + chunk.len() > max {
                    return Err(TrafficError::Unreachable(format!(
                        "{what}: the answer is larger than {max} bytes — is this a Consul agent?"
                    )));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok((status, buf))
        };
        // reqwest's own timeout covers this too; the outer one makes the
        // deadline independent of how the body arrives.
        match tokio::time::timeout(self.limits.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(TrafficError::Unreachable(format!(
                "{what}: no answer within {:?} (timed out)",
                self.limits.request_timeout
            ))),
        }
    }

    /// Non-success statuses, as Consul sends them (plain-text bodies).
    fn status_error(&self, op: &str, status: reqwest::StatusCode, body: &[u8]) -> TrafficError {
        let text = excerpt(body);
        let id = self.target.id();
        if status == reqwest::StatusCode::FORBIDDEN {
            let who = match &self.target.token_secret {
                Some(s) => format!("the token in secret `{s}`"),
                None => {
                    "the agent's default token (no traffic.consul.token_secret is set)".to_string()
                }
            };
            return TrafficError::Other(format!(
                "{id}: Consul refused to {op} (403 {text}): {who} needs key:{} on `{}` — \
                 fix the ACL policy or the secret",
                if op == "read" { "read" } else { "write" },
                self.target.key
            ));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return TrafficError::Unreachable(format!(
                "{id}: Consul could not {op} the document ({status}: {text}); will retry"
            ));
        }
        TrafficError::Other(format!(
            "{id}: Consul refused to {op} the document ({status}: {text})"
        ))
    }

    /// GET the entry; `None` when the key does not exist (404).
    async fn get(&self) -> Result<Option<Entry>, TrafficError> {
        let (status, body) = self
            .request(reqwest::Method::GET, self.url(""), None)
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.status_error("read", status, &body));
        }
        let id = self.target.id();
        let entries: Vec<RawEntry> = serde_json::from_slice(&body).map_err(|e| {
            TrafficError::Other(format!(
                "{id}: Consul's answer is not a KV entry list ({e}): {}",
                excerpt(&body)
            ))
        })?;
        let Some(e) = entries.into_iter().find(|e| e.key == self.target.key) else {
            return Err(TrafficError::Other(format!(
                "{id}: Consul's answer has no entry for the key"
            )));
        };
        let value = match e.value.as_deref() {
            // Go encodes an empty []byte as null; accept "" as well.
            None | Some("") => Vec::new(),
            Some(b) => base64_decode(b).ok_or_else(|| {
                TrafficError::Other(format!("{id}: the KV value is not valid base64"))
            })?,
        };
        Ok(Some(Entry {
            modify_index: e.modify_index,
            value,
        }))
    }

    /// PUT with `?cas=`; Consul answers `true` or `false` (CAS lost).
    async fn put_cas(&self, cas: u64, body: Vec<u8>) -> Result<bool, TrafficError> {
        let (status, reply) = self
            .request(
                reqwest::Method::PUT,
                self.url(&format!("?cas={cas}")),
                Some(body),
            )
            .await?;
        if !status.is_success() {
            return Err(self.status_error("write", status, &reply));
        }
        match std::str::from_utf8(&reply).map(str::trim) {
            Ok("true") => Ok(true),
            Ok("false") => Ok(false),
            _ => Err(TrafficError::Other(format!(
                "{}: unexpected answer to a KV write: {}",
                self.target.id(),
                excerpt(&reply)
            ))),
        }
    }

    fn remembered(&self) -> Option<u64> {
        let m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&self.target.id()).copied()
    }

    fn remember(&self, index: Option<u64>) {
        let mut m = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        match index {
            Some(i) => m.insert(self.target.id(), i),
            None => m.remove(&self.target.id()),
        };
    }

    /// Write the document for `share` unless it already says exactly that.
    ///
    /// Someone else's document (an index that is not our last write, or a
    /// CAS write refused) is only written over by a decrease; the conflict
    /// is reported either way, and its index is then remembered, so it is
    /// reported once: the controller pauses, and the write after a human
    /// resumes goes through.
    async fn write_doc(&self, share: u32, permit: &Permit) -> Result<Written, TrafficError> {
        let want = self.document(share)?;
        let body = serde_json::to_vec(&want)
            .map_err(|e| TrafficError::Other(format!("cannot encode the document: {e}")))?;
        let id = self.target.id();
        let mut conflict: Option<String> = None;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let found = self.get().await?;
            let cas = found.as_ref().map_or(0, |e| e.modify_index);
            let same = found
                .as_ref()
                .and_then(|e| serde_json::from_slice::<WeightsDocument>(&e.value).ok())
                .is_some_and(|d| d == want);
            if same {
                // Already says exactly this (our earlier write, or someone
                // writing the same thing): nothing to overwrite, no new index
                // to wake consul-template for.
                self.remember(Some(cas));
                return Ok(Written {
                    doc: want,
                    index: Some(cas),
                    conflict,
                });
            }
            let foreign = match (&found, self.remembered()) {
                (_, None) => false,
                (Some(e), Some(m)) => e.modify_index != m,
                (None, Some(_)) => true,
            };
            let found_share = found.as_ref().map(|e| self.share_of(&e.value));
            if foreign && conflict.is_none() {
                let last = self.remembered().unwrap_or_default();
                conflict = Some(match (&found, &found_share) {
                    (Some(e), Some(s)) => format!(
                        "{id}: someone else wrote the document (ModifyIndex {}, muhurat last \
                         wrote {last}); it now gives the canary pool {}",
                        e.modify_index,
                        describe_share(s)
                    ),
                    _ => format!(
                        "{id}: the document was deleted by someone else since muhurat wrote it \
                         (ModifyIndex {last})"
                    ),
                });
            }
            if let Some(c) = &conflict {
                // Only a decrease may go over someone else's document; when
                // what is there cannot be read, only 0 is surely one.
                let decrease = match &found_share {
                    Some(Ok(s)) => *s > want.effective_share + 1e-9,
                    _ => share == 0,
                };
                if !decrease {
                    self.remember(found.as_ref().map(|e| e.modify_index));
                    return Err(TrafficError::Conflict(format!(
                        "{c} — not overwritten with {share}%; pausing (resume to write again)"
                    )));
                }
            }
            // The gate, right before the PUT: the share the document gives
            // the canary now (a missing or unreadable one counts as 0, so
            // anything above 0 needs a raise permit) against what we write.
            let baseline = match &found_share {
                Some(Ok(s)) => *s,
                _ => 0.0,
            };
            permit.admit(
                &id,
                &format!("PUT {} ({share}%, cas={cas})", self.target.key),
                baseline,
                want.effective_share,
                self.limits.request_timeout + self.limits.connect_timeout,
            )?;
            if self.put_cas(cas, body.clone()).await? {
                let index = self.learn_index(&want).await;
                let conflict = conflict.map(|c| {
                    format!("{c} — wrote the decrease to {share}% over it (cas={cas}); pausing")
                });
                return Ok(Written {
                    doc: want,
                    index,
                    conflict,
                });
            }
            // Consul refused the CAS: written between our read and our write.
            // Re-read; the branch above decides whether we may still write.
            if conflict.is_none() {
                conflict = Some(format!(
                    "{id}: someone else wrote the document between muhurat's read \
                     (ModifyIndex {cas}) and its write (Consul refused ?cas={cas})"
                ));
            }
        }
        Err(TrafficError::Conflict(format!(
            "{} — the document kept changing: {MAX_CAS_ATTEMPTS} writes refused; pausing",
            conflict.unwrap_or_else(|| id.clone())
        )))
    }

    /// After a successful PUT (which answers only `true`), learn the new
    /// ModifyIndex so the next write can tell our document from someone
    /// else's.
    async fn learn_index(&self, want: &WeightsDocument) -> Option<u64> {
        match self.get().await {
            Ok(Some(e)) => {
                let ours =
                    serde_json::from_slice::<WeightsDocument>(&e.value).is_ok_and(|d| &d == want);
                // Someone wrote right after us: remember an index no document
                // has, so the next write reports the conflict.
                self.remember(Some(if ours { e.modify_index } else { 0 }));
                ours.then_some(e.modify_index)
            }
            Ok(None) => {
                self.remember(Some(0));
                None
            }
            Err(e) => {
                // Cannot tell: forget rather than raise a false conflict on
                // the next write (which will take what it reads as baseline).
                tracing::warn!(target = %self.target.id(), error = %e, "Could not read back the KV index after a write.");
                self.remember(None);
                None
            }
        }
    }

    // ---- confirmation through HAProxy -----------------------------------

    /// Poll the `verify` endpoints until two reads `confirm_interval` apart
    /// both show `effective` on every endpoint, or `confirm_wait` passes.
    async fn confirm(&self, written: &Written) -> ApplyReport {
        let effective = written.doc.effective_share;
        let share = written.doc.canary_share;
        let index = written
            .index
            .map_or_else(|| "unknown".to_string(), |i| i.to_string());
        let Some(h) = &self.verify else {
            let why = "no `verify` HAProxy endpoints in the spec, and a KV write proves \
                       nothing about HAProxy — add traffic.consul.verify to confirm changes";
            return ApplyReport {
                confirmed: false,
                effective_share: effective,
                detail: format!(
                    "{} at {share}% (ModifyIndex {index}); not confirmed: {why}",
                    self.target.id()
                ),
                endpoints: [(self.target.id(), Err(why.to_string()))].into(),
            };
        };
        let exact = effective == 0.0 || effective == 100.0;
        let matches = |s: f64| {
            if exact {
                (s - effective).abs() < 1e-9
            } else {
                (s - effective).abs() <= CONFIRM_TOLERANCE
            }
        };
        let deadline = tokio::time::Instant::now() + self.limits.confirm_wait;
        let mut agreed_once = false;
        loop {
            let endpoints: BTreeMap<String, Result<f64, String>> = match h.read().await {
                Ok(r) => r
                    .endpoints
                    .into_iter()
                    .map(|(ep, r)| {
                        let v = r.and_then(|r| {
                            if matches(r.share) {
                                Ok(r.share)
                            } else {
                                Err(format!(
                                    "endpoint {ep} shows {:.2}%, the document says {effective:.2}% \
                                     — consul-template has not rendered it or HAProxy was not reloaded",
                                    r.share
                                ))
                            }
                        });
                        (ep, v)
                    })
                    .collect(),
                Err(e) => [(self.target.id(), Err(e.to_string()))].into(),
            };
            let all = !endpoints.is_empty() && endpoints.values().all(Result::is_ok);
            let now = tokio::time::Instant::now();
            if all && agreed_once {
                return ApplyReport {
                    confirmed: true,
                    effective_share: effective,
                    detail: format!(
                        "{} at {share}% (effective {effective:.2}%, ModifyIndex {index}), \
                         confirmed on every verify endpoint: {}",
                        self.target.id(),
                        endpoints.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    endpoints,
                };
            }
            if now + self.limits.confirm_interval > deadline {
                let bad: Vec<&str> = endpoints
                    .values()
                    .filter_map(|r| r.as_ref().err().map(String::as_str))
                    .collect();
                let why = if bad.is_empty() {
                    "HAProxy agreed only once before the wait ran out".to_string()
                } else {
                    bad.join("; ")
                };
                return ApplyReport {
                    confirmed: false,
                    effective_share: effective,
                    detail: format!(
                        "{} at {share}% (ModifyIndex {index}) but not confirmed within \
                         {:?}: {why}",
                        self.target.id(),
                        self.limits.confirm_wait
                    ),
                    endpoints,
                };
            }
            agreed_once = all;
            tokio::time::sleep(self.limits.confirm_interval).await;
        }
    }
}

#[async_trait]
impl TrafficBackend for ConsulBackend {
    async fn apply(&self, share: u32, permit: &Permit) -> Result<ApplyReport, TrafficError> {
        let written = self.write_doc(share, permit).await?;
        if let Some(c) = written.conflict {
            return Err(TrafficError::Conflict(c));
        }
        Ok(self.confirm(&written).await)
    }

    /// 0 in the document and, at the same time, on the `verify` sockets
    /// (weights, drain, optionally session shutdown) — which only works when
    /// they are `level admin`; read-only sockets leave it to the template.
    async fn rollback(
        &self,
        shutdown_sessions: bool,
        permit: &Permit,
    ) -> Result<ApplyReport, TrafficError> {
        let runtime = async {
            match &self.verify {
                Some(h) => Some(h.rollback(shutdown_sessions, permit).await),
                None => None,
            }
        };
        let (doc, runtime) = tokio::join!(self.write_doc(0, permit), runtime);
        let runtime_note = match runtime {
            None => None,
            Some(Ok(r)) if r.confirmed => None,
            Some(Ok(r)) => Some(format!(
                "drain/session shutdown through the verify sockets did not complete (they need \
                 `level admin`): {}",
                r.detail
            )),
            Some(Err(e)) => Some(format!("drain through the verify sockets failed: {e}")),
        };
        let written = match doc {
            Ok(w) => w,
            Err(TrafficError::Conflict(c)) => {
                // Someone else's document that already gives the canary 0
                // (so not written), or one that kept changing: report it,
                // with what HAProxy shows.
                Written {
                    doc: self.document(0)?,
                    index: None,
                    conflict: Some(c),
                }
            }
            Err(e) => {
                // The verify sockets were still set to 0 (above, at the same
                // time): a rollback must not wait for Consul.
                let extra = match (&self.verify, &runtime_note) {
                    (None, _) => String::new(),
                    (Some(_), Some(n)) => format!("; {n}"),
                    (Some(_), None) => {
                        "; meanwhile the verify sockets were set to 0 and drained".to_string()
                    }
                };
                return Err(match e {
                    TrafficError::Unreachable(m) => TrafficError::Unreachable(m + &extra),
                    other => TrafficError::Other(format!("{other}{extra}")),
                });
            }
        };
        let mut report = self.confirm(&written).await;
        if let Some(n) = runtime_note {
            report.detail.push_str(&format!("; {n}"));
        }
        match (written.conflict, &self.verify) {
            (Some(c), Some(_)) => Err(TrafficError::Conflict(format!(
                "{c}; HAProxy: {}",
                report.detail
            ))),
            (Some(c), None) => Err(TrafficError::Conflict(c)),
            (None, _) => Ok(report),
        }
    }

    /// With `verify`, what HAProxy has in effect; without it, what the
    /// document says (which may never have been rendered).
    async fn read(&self) -> Result<Reading, TrafficError> {
        if let Some(h) = &self.verify {
            return h.read().await;
        }
        let id = self.target.id();
        let reading = match self.get().await? {
            None => Err(format!("{id}: the document does not exist yet")),
            Some(e) => self
                .share_of(&e.value)
                .map(|share| EndpointReading {
                    share,
                    // Unknown: KV says nothing about health. Fail closed for
                    // raises; never block a rollback.
                    canary_up: false,
                    live_up: true,
                })
                .map_err(|m| format!("{id}: the document is unusable: {m}")),
        };
        Ok(Reading {
            endpoints: [(id, reading)].into(),
        })
    }

    async fn preflight(&self) -> Result<Vec<PreflightIssue>, TrafficError> {
        let id = self.target.id();
        let mut issues = Vec::new();
        match self.get().await {
            Ok(None) => {}
            Ok(Some(e)) => {
                if let Err(m) = self.share_of(&e.value) {
                    issues.push(PreflightIssue {
                        endpoint: id.clone(),
                        message: format!(
                            "{id}: the document at `{}` is unusable: {m} — point kv.key at \
                             this target's own key, or delete the stale document",
                            self.target.key
                        ),
                    });
                }
            }
            Err(TrafficError::Other(m)) => issues.push(PreflightIssue {
                endpoint: id.clone(),
                message: m,
            }),
            Err(e) => return Err(e),
        }
        if let Some(h) = &self.verify {
            issues.extend(h.preflight().await?);
        }
        Ok(issues)
    }

    async fn prepare(&self, permit: &Permit) -> Result<(), TrafficError> {
        // Only our own rollback (through admin-level verify sockets) drains
        // servers; undo that. Nothing to do in KV: the next write sets the
        // canary pool's weights.
        match &self.verify {
            Some(h) => h.prepare(permit).await,
            None => Ok(()),
        }
    }
}

// ---- factory --------------------------------------------------------------

/// Builds [`ConsulBackend`]s for `traffic.consul` targets, resolving the
/// token secret. Compose with the HAProxy factory:
/// `HaproxyFactory::new(l).with_other(Arc::new(ConsulFactory::new(secrets, limits)))`.
#[derive(Clone, Default)]
pub struct ConsulFactory {
    pub secrets: Secrets,
    pub limits: ConsulLimits,
    memory: KvMemory,
}

impl ConsulFactory {
    pub fn new(secrets: Secrets, limits: ConsulLimits) -> Self {
        ConsulFactory {
            secrets,
            limits,
            memory: KvMemory::default(),
        }
    }

    /// The backend, or why it cannot be built (missing secret, bad token).
    pub fn build(
        &self,
        traffic: &Traffic,
        orientation: &Orientation,
    ) -> Result<ConsulBackend, TrafficError> {
        let Traffic::Consul {
            address,
            token_secret,
            key,
            verify,
            ..
        } = traffic
        else {
            return Err(TrafficError::Other(format!(
                "the Consul factory cannot build target {}",
                traffic.target_id()
            )));
        };
        let token = match token_secret {
            Some(name) => Some(
                self.secrets
                    .value_for(name, address)
                    .map_err(|e| TrafficError::Other(format!("{}: {e}", traffic.target_id())))?,
            ),
            None => None,
        };
        let mut b = ConsulBackend::new(
            ConsulTarget {
                address: address.clone(),
                key: key.clone(),
                token_secret: token_secret.clone(),
                verify: verify.clone(),
            },
            orientation.clone(),
            token,
            self.limits.clone(),
        )?;
        b.memory = self.memory.clone();
        Ok(b)
    }
}

impl TrafficFactory for ConsulFactory {
    fn backend(&self, traffic: &Traffic, orientation: &Orientation) -> Arc<dyn TrafficBackend> {
        match self.build(traffic, orientation) {
            Ok(b) => Arc::new(b),
            Err(e) => Arc::new(Refuse(e)),
        }
    }
}

/// A backend that could not be built: every call says why.
#[derive(Debug)]
struct Refuse(TrafficError);

#[async_trait]
impl TrafficBackend for Refuse {
    async fn apply(&self, _: u32, _: &Permit) -> Result<ApplyReport, TrafficError> {
        Err(self.0.clone())
    }
    async fn rollback(&self, _: bool, _: &Permit) -> Result<ApplyReport, TrafficError> {
        Err(self.0.clone())
    }
    async fn read(&self) -> Result<Reading, TrafficError> {
        Err(self.0.clone())
    }
    async fn preflight(&self) -> Result<Vec<PreflightIssue>, TrafficError> {
        Err(self.0.clone())
    }
    async fn prepare(&self, _: &Permit) -> Result<(), TrafficError> {
        Err(self.0.clone())
    }
}

// ---- helpers ----------------------------------------------------------------

fn describe_share(s: &Result<f64, String>) -> String {
    match s {
        Ok(s) => format!("{s:.2}%"),
        Err(e) => format!("an unknown share ({e})"),
    }
}

/// reqwest's error, without anything secret (the token is a header, never
/// part of the URL), classified as retryable.
fn transport(what: &str, e: &reqwest::Error) -> TrafficError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    TrafficError::Unreachable(format!("{what}: {kind}: {e}"))
}

/// Percent-encode a KV key for the URL path, keeping `/` (Consul's own
/// separator) and RFC 3986 unreserved characters.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first line of an answer, cut and cleaned for a message (the peer may
/// be hostile: no control characters, no megabytes).
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    let mut s: String = t
        .chars()
        .take(160)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if t.chars().count() > 160 {
        s.push('…');
    }
    if s.is_empty() { "(empty)".into() } else { s }
}

/// Standard base64 with padding (Go's `encoding/json` for `[]byte`).
/// `None` on anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, chunk) in s.chunks(4).enumerate() {
        let last = i == s.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_go_output_and_rejects_garbage() {
        assert_eq!(base64_decode("NQ==").as_deref(), Some(&b"5"[..]));
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode("YW=j"), None);
        assert_eq!(base64_decode("YWJ"), None);
        assert_eq!(base64_decode("Y!Jj"), None);
    }

    #[test]
    fn keys_are_encoded_for_the_path() {
        assert_eq!(
            encode_key("muhurat/kite-api/weights"),
            "muhurat/kite-api/weights"
        );
        assert_eq!(encode_key("a b?c#d"), "a%20b%3Fc%23d");
    }
}
