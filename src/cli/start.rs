//! `muhurat start`: the CI step. Submit the spec, print the rollout id,
//! write the dotenv artifact, then wait as `--wait` says.
//!
//! Why the dotenv is written before waiting: GitLab reads the artifact even
//! when the job fails (`artifacts: when: always`), so a job that times out or
//! sees the rollout pause still hands the rollout id and dashboard link to
//! the `pause`/`abort` jobs and the environment page.
//!
//! Waiting polls `GET /rollouts/{id}` once a second and re-reads the whole
//! rollout every time, so a dropped connection or a server restart loses
//! nothing: the next successful read is the truth.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clock::Clock;

use super::remote::{self, Client, RemoteArgs, RemoteError, StatusRow};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_HUMAN, EXIT_INTERNAL, EXIT_OK, EXIT_TIMEOUT};

/// What `start` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    /// The rollout left `pending` (preflight passed, plan computed).
    Accepted,
    /// The first `set_weight` is confirmed on every endpoint.
    FirstStep,
    /// A terminal state.
    Done,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// The rollout spec (YAML); the server validates it and its policy.
    pub file: PathBuf,
    /// The revision deployed to the idle pool (e.g. $CI_COMMIT_SHORT_SHA).
    #[arg(long)]
    pub revision: String,
    /// Who started it (e.g. $GITLAB_USER_LOGIN) [default: the token's principal].
    #[arg(long)]
    pub initiator: Option<String>,
    /// Return once the rollout is accepted, its first weight confirmed, or done.
    #[arg(long, value_enum, default_value = "accepted")]
    pub wait: WaitFor,
    /// Give up waiting after this long (e.g. 30m) with exit 4 [default: no limit].
    #[arg(long)]
    pub timeout: Option<String>,
    /// Write MUHURAT_ROLLOUT_ID and MUHURAT_DASHBOARD_URL here (GitLab dotenv report).
    #[arg(long)]
    pub dotenv: Option<PathBuf>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// GitLab sets this during a deploy freeze window.
pub const FREEZE_VAR: &str = "CI_DEPLOY_FREEZE";

/// How often the rollout is re-read while waiting.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// How long the server may stay unreachable while we wait before we give up
/// with exit 3: long enough to ride out a server restart.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(120);

pub fn run(args: &StartArgs) -> i32 {
    if let Some(v) = std::env::var_os(FREEZE_VAR).filter(|v| !v.is_empty()) {
        eprintln!(
            "muhurat start: refusing to start: {FREEZE_VAR} is set ({}): GitLab says this is a deploy freeze. Run the job again after the freeze.",
            v.to_string_lossy()
        );
        return EXIT_BAD_INPUT;
    }
    let timeout = match args.timeout.as_deref().map(crate::duration::parse) {
        None => None,
        Some(Ok(d)) => match d.to_std() {
            Ok(d) => Some(d),
            Err(_) => {
                eprintln!("muhurat start: --timeout must be positive");
                return EXIT_BAD_INPUT;
            }
        },
        Some(Err(e)) => {
            eprintln!("muhurat start: --timeout: {e} — {}", crate::duration::FIX);
            return EXIT_BAD_INPUT;
        }
    };
    let rt = match remote::runtime() {
        Ok(rt) => rt,
        Err(e) => return remote::fail("start", &e),
    };
    rt.block_on(start(args, timeout))
}

async fn start(args: &StartArgs, timeout: Option<Duration>) -> i32 {
    let began = Instant::now();
    let client = match Client::new(&args.remote) {
        Ok(c) => c,
        Err(e) => return remote::fail("start", &e),
    };
    let spec = match remote::read_spec(&args.file) {
        Ok(s) => s,
        Err(e) => return remote::fail("start", &e),
    };
    let mut body = json!({"spec": spec, "revision": args.revision});
    if let Some(i) = &args.initiator {
        body["initiator"] = json!(i);
    }
    let created = match client.post("/rollouts", body).await {
        Ok(v) => v,
        Err(e) => return remote::fail("start", &e),
    };
    let id = match remote::id_of(&created) {
        Ok(id) => id,
        Err(e) => return remote::fail("start", &e),
    };
    // The contract: the id alone on the first line of stdout.
    println!("{id}");
    let _ = std::io::stdout().flush();
    let dashboard = dashboard_of(&client, &created, &id);
    if let Some(path) = &args.dotenv
        && let Err(e) = write_dotenv(path, &id, &dashboard)
    {
        eprintln!("muhurat start: {e}");
        return EXIT_INTERNAL;
    }
    eprintln!("Rollout {id} accepted: {dashboard}");
    wait(&client, &id, args.wait, timeout, began, &created).await
}

/// The dashboard link: the server's (it knows its public URL), else ours.
fn dashboard_of(client: &Client, doc: &Value, id: &str) -> String {
    let v = remote::unwrap_rollout(doc);
    ["dashboard_url", "url"]
        .iter()
        .find_map(|k| {
            v.get(*k)
                .or_else(|| doc.get(*k))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| client.dashboard_url(id))
}

/// `KEY=value` lines GitLab's dotenv report accepts (no quotes, no spaces
/// around `=`, one variable per line).
pub fn write_dotenv(path: &Path, id: &str, dashboard: &str) -> Result<(), String> {
    let text = format!("MUHURAT_ROLLOUT_ID={id}\nMUHURAT_DASHBOARD_URL={dashboard}\n");
    std::fs::write(path, text)
        .map_err(|e| format!("cannot write the dotenv file {}: {e}", path.display()))
}

/// The verdict of one reading of the rollout, for `--wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep waiting.
    Waiting,
    /// Stop with this exit code.
    Exit(i32),
}

/// Decide from one reading. `first_weight` is confirmed when the canary
/// share is above 0 or the rollout has moved past step 0 (a spec's first
/// step may be a bake or approval before its first `set_weight`; a confirmed
/// share above 0 is the only thing that means "first weight confirmed").
pub fn judge(wait: WaitFor, r: &StatusRow) -> Verdict {
    match r.state.as_str() {
        "succeeded" => return Verdict::Exit(EXIT_OK),
        "rolled_back" | "aborted" | "failed" => return Verdict::Exit(EXIT_FAILED),
        // A human must act: say so at once rather than burn the timeout.
        "paused" => return Verdict::Exit(EXIT_HUMAN),
        _ => {}
    }
    match wait {
        WaitFor::Accepted if r.state != "pending" && !r.state.is_empty() => Verdict::Exit(EXIT_OK),
        WaitFor::FirstStep if r.canary_weight.unwrap_or(0) > 0 => Verdict::Exit(EXIT_OK),
        _ => Verdict::Waiting,
    }
}

async fn wait(
    client: &Client,
    id: &str,
    mode: WaitFor,
    timeout: Option<Duration>,
    began: Instant,
    first: &Value,
) -> i32 {
    let mut progress = Progress::new(mode);
    let mut row = StatusRow::from_value(first);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        progress.show(&row);
        if let Verdict::Exit(code) = judge(mode, &row) {
            progress.finish(&row, code);
            return code;
        }
        if let Some(t) = timeout
            && began.elapsed() >= t
        {
            progress.abandon();
            eprintln!(
                "muhurat start: timed out after {} waiting for `{}`; rollout {id} is {} and carries on: follow it with `muhurat status {id}`",
                humantime(t),
                wait_name(mode),
                row.state
            );
            return EXIT_TIMEOUT;
        }
        tokio::time::sleep(POLL_EVERY).await;
        match client.get(&format!("/rollouts/{id}")).await {
            Ok(v) => {
                if let Some(since) = unreachable_since.take() {
                    progress.line(&format!(
                        "server reachable again after {}",
                        humantime(since.elapsed())
                    ));
                }
                row = StatusRow::from_value(&v);
            }
            Err(e @ RemoteError::Unreachable(_)) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    progress.abandon();
                    return remote::fail("start", &e);
                }
                if since.elapsed() < POLL_EVERY * 2 {
                    progress.line("server unreachable; retrying");
                }
            }
            Err(e) if e.status().is_some_and(|s| s >= 500) => {
                progress.line(&format!("server error, retrying: {e}"));
            }
            Err(e) => {
                progress.abandon();
                return remote::fail("start", &e);
            }
        }
    }
}

fn wait_name(w: WaitFor) -> &'static str {
    match w {
        WaitFor::Accepted => "accepted",
        WaitFor::FirstStep => "first-step",
        WaitFor::Done => "done",
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Progress while waiting: a bar of the canary share on a terminal, plain
/// timestamped lines (one per change) in CI logs. Both go to stderr so
/// stdout stays the rollout id alone.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last: Option<(String, Option<u64>, Option<String>)>,
}

impl Progress {
    fn new(mode: WaitFor) -> Progress {
        // `accepted` takes a second or two: a bar would only flicker.
        let bar = (std::io::stderr().is_terminal() && mode != WaitFor::Accepted).then(|| {
            let b = indicatif::ProgressBar::new(100);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {pos:>3}% {msg}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress { bar, last: None }
    }

    fn show(&mut self, r: &StatusRow) {
        let key = (r.state.clone(), r.canary_weight, r.waiting_for.clone());
        if self.last.as_ref() == Some(&key) {
            return;
        }
        self.last = Some(key);
        let msg = match &r.waiting_for {
            Some(w) => format!("{} — {w}", r.state),
            None => r.state.clone(),
        };
        match &self.bar {
            Some(b) => {
                b.set_position(r.canary_weight.unwrap_or(0));
                b.set_message(msg);
            }
            None => self.line(&format!("{} canary {}", msg, remote::pct(r.canary_weight))),
        }
    }

    fn line(&self, text: &str) {
        let now = crate::clock::SystemClock.now();
        let line = format!("{} {text}", now.format("%Y-%m-%dT%H:%M:%SZ"));
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&mut self, r: &StatusRow, code: i32) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let what = match code {
            EXIT_OK => "done",
            EXIT_HUMAN => "a human must act",
            _ => "ended",
        };
        let why = r
            .waiting_for
            .as_deref()
            .map(|w| format!(": {w}"))
            .unwrap_or_default();
        eprintln!(
            "Rollout {} is {} at {} ({what}){why}",
            r.id,
            r.state,
            remote::pct(r.canary_weight)
        );
    }

    fn abandon(&mut self) {
        if let Some(b) = self.bar.take() {
            b.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, weight: u64) -> StatusRow {
        StatusRow {
            id: "r".into(),
            name: "n".into(),
            revision: "v".into(),
            initiator: "i".into(),
            state: state.into(),
            step: Some(0),
            canary_weight: Some(weight),
            desired_weight: Some(weight),
            waiting_for: None,
        }
    }

    #[test]
    fn wait_verdicts_follow_the_contract() {
        use Verdict::*;
        use WaitFor::*;
        let cases = [
            (Accepted, "pending", 0, Waiting),
            (Accepted, "waiting_for_window", 0, Exit(0)),
            (Accepted, "awaiting_approval", 0, Exit(0)),
            (Accepted, "failed", 0, Exit(1)),
            (Accepted, "paused", 0, Exit(5)),
            (FirstStep, "waiting_for_window", 0, Waiting),
            (FirstStep, "applying", 0, Waiting),
            (FirstStep, "baking", 5, Exit(0)),
            (FirstStep, "awaiting_approval", 5, Exit(0)),
            (FirstStep, "aborted", 0, Exit(1)),
            (FirstStep, "paused", 5, Exit(5)),
            (Done, "baking", 100, Waiting),
            (Done, "awaiting_approval", 10, Waiting),
            (Done, "succeeded", 100, Exit(0)),
            (Done, "rolled_back", 0, Exit(1)),
            (Done, "paused", 10, Exit(5)),
        ];
        for (mode, state, w, want) in cases {
            assert_eq!(judge(mode, &row(state, w)), want, "{mode:?} {state} {w}");
        }
    }

    #[test]
    fn dotenv_lines_are_plain_key_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.env");
        write_dotenv(&p, "kite-api-20261126-abc123", "https://m/rollouts/x").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "MUHURAT_ROLLOUT_ID=kite-api-20261126-abc123\nMUHURAT_DASHBOARD_URL=https://m/rollouts/x\n"
        );
    }
}
