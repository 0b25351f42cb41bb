//! `muhurat server`: one binary — controller, API and (later) dashboard.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::TimeDelta;
use serde::Deserialize;

use crate::api;
use crate::clock::SystemClock;
use crate::controller::{Calendars, Config, Controller};
use crate::gates::prometheus::PrometheusFactory;
use crate::store::{ServerLock, Store};
use crate::traffic::haproxy::{HaproxyFactory, HaproxyLimits};

/// The config file (`--config FILE`). Every key is also a flag and a
/// `MUHURAT_*` environment variable; flags and variables win over the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub db: Option<String>,
    pub calendars: Option<PathBuf>,
    pub public_url: Option<String>,
    pub drift_interval: Option<String>,
    pub max_clock_skew: Option<String>,
    /// Trust a clock the kernel reports unsynchronised (demos, tests).
    pub allow_unsynced_clock: Option<bool>,
    pub log_format: Option<String>,
    /// Server-wide notifications (coverage, clock skew, store errors).
    pub notify: Option<Vec<ServerNotify>>,
    /// The floor under every spec (docs/design.md §3 *Policy*).
    pub policy: Option<crate::policy::RawPolicy>,
}

/// One server-wide notification channel: `{webhook_secret: NAME}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerNotify {
    pub webhook_secret: String,
}

/// The settings in force after merging flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub db: String,
    pub calendars: PathBuf,
    pub public_url: Option<String>,
    pub drift_interval: TimeDelta,
    pub max_clock_skew: TimeDelta,
    pub allow_unsynced_clock: bool,
    pub log_json: bool,
    /// Secret names of the server-wide webhooks.
    pub notify: Vec<String>,
    pub policy: crate::policy::Policy,
}

/// The flags (each also an environment variable, see `--help`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:7878].
    #[arg(long, env = "MUHURAT_LISTEN")]
    pub listen: Option<String>,
    /// sqlite://PATH (created if missing) or postgres://… [default: sqlite://muhurat.db].
    #[arg(long, env = "MUHURAT_DB")]
    pub db: Option<String>,
    /// Folder of calendar files NAME.yaml [default: rollouts/calendars].
    #[arg(long, env = "MUHURAT_CALENDARS")]
    pub calendars: Option<PathBuf>,
    /// YAML config file.
    #[arg(long, env = "MUHURAT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The dashboard's public URL, for links in notifications.
    #[arg(long, env = "MUHURAT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How often every target's weights are read back [default: 10s].
    #[arg(long, env = "MUHURAT_DRIFT_INTERVAL")]
    pub drift_interval: Option<String>,
    /// Above this clock skew no raise is made [default: 5s].
    #[arg(long, env = "MUHURAT_MAX_CLOCK_SKEW")]
    pub max_clock_skew: Option<String>,
    /// Trust the clock even though the kernel reports it unsynchronised
    /// (no NTP). For demos and test machines: in production run chrony or
    /// ntpd instead. `/readyz` and every decision say it was used.
    #[arg(long, env = "MUHURAT_ALLOW_UNSYNCED_CLOCK", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_unsynced_clock: bool,
    /// text or json [default: text].
    #[arg(long, env = "MUHURAT_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Policy file (YAML, as `policy:` in the config file); wins over the
    /// config file's `policy`.
    #[arg(long, env = "MUHURAT_POLICY")]
    pub policy: Option<PathBuf>,
    /// Secret name of a server-wide webhook (repeat, or comma-separate in
    /// the variable); wins over the config file's `notify`.
    #[arg(long = "notify", env = "MUHURAT_NOTIFY", value_delimiter = ',')]
    pub notify: Vec<String>,
}

fn dur(what: &str, v: Option<String>, default: TimeDelta) -> Result<TimeDelta, String> {
    match v {
        None => Ok(default),
        Some(t) => crate::duration::parse(&t)
            .map_err(|e| format!("{what}: {e} — {}", crate::duration::FIX)),
    }
}

/// Merge flags/environment over the config file over the defaults.
pub fn settings(args: &ServerArgs) -> Result<Settings, String> {
    let (file, file_text): (FileConfig, String) = match &args.config {
        None => (FileConfig::default(), String::new()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("{}: cannot read the config file: {e}", p.display()))?;
            (
                crate::yaml::from_str(&p.display().to_string(), &text)
                    .map_err(|d| d.to_string())?,
                text,
            )
        }
    };
    let policy = match (&args.policy, &file.policy) {
        (Some(p), _) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("{}: cannot read the policy file: {e}", p.display()))?;
            crate::policy::load(&p.display().to_string(), &text).map_err(|ds| {
                ds.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })?
        }
        (None, Some(raw)) => crate::policy::validate(raw, "policy").map_err(|ps| {
            let shown = args
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let positions = crate::yaml::Positions::index(&file_text);
            ps.into_iter()
                .map(|p| positions.place(&shown, p).to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })?,
        (None, None) => crate::policy::Policy::default(),
    };
    let notify = if args.notify.is_empty() {
        file.notify
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.webhook_secret)
            .collect()
    } else {
        args.notify.clone()
    };
    // A server-wide webhook must be bound now, not fail at its first delivery.
    for n in &notify {
        policy
            .secrets
            .binding(n)
            .map_err(|e| format!("notify: {e}"))?;
    }
    let log_format = args
        .log_format
        .clone()
        .or(file.log_format)
        .unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        return Err(format!("--log-format `{log_format}`: use text or json"));
    }
    Ok(Settings {
        listen: args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:7878".into()),
        db: args
            .db
            .clone()
            .or(file.db)
            .unwrap_or_else(|| "sqlite://muhurat.db".into()),
        calendars: args
            .calendars
            .clone()
            .or(file.calendars)
            .unwrap_or_else(|| PathBuf::from("rollouts/calendars")),
        public_url: args.public_url.clone().or(file.public_url),
        drift_interval: dur(
            "drift_interval",
            args.drift_interval.clone().or(file.drift_interval),
            TimeDelta::seconds(10),
        )?,
        max_clock_skew: dur(
            "max_clock_skew",
            args.max_clock_skew.clone().or(file.max_clock_skew),
            TimeDelta::seconds(5),
        )?,
        allow_unsynced_clock: args.allow_unsynced_clock
            || file.allow_unsynced_clock.unwrap_or(false),
        log_json: log_format == "json",
        notify,
        policy,
    })
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

pub fn run(args: &ServerArgs) -> i32 {
    let s = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("muhurat server: {e}");
            return super::EXIT_BAD_INPUT;
        }
    };
    init_tracing(s.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("muhurat server: cannot start the runtime: {e}");
            return super::EXIT_INTERNAL;
        }
    };
    match rt.block_on(serve(s)) {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            tracing::error!(error = %e, "Server stopped.");
            eprintln!("muhurat server: {e}");
            super::EXIT_INTERNAL
        }
    }
}

async fn serve(s: Settings) -> Result<(), String> {
    let store = Store::open(&s.db)
        .await
        .map_err(|e| format!("database {}: {e}", redact(&s.db)))?;
    let lock = ServerLock::acquire(&store, &s.db)
        .await
        .map_err(|e| e.to_string())?;
    let calendars =
        Arc::new(Calendars::load(Path::new(&s.calendars)).map_err(|e| format!("calendars: {e}"))?);
    for c in calendars.all() {
        tracing::info!(calendar = %c.name, version = %c.version, valid_until = %c.valid_until, "Calendar in force.");
    }
    let consul = Arc::new(crate::traffic::consul::ConsulFactory::new(
        s.policy.secrets(),
        crate::traffic::consul::ConsulLimits::default(),
    ));
    let traffic = Arc::new(HaproxyFactory::new(HaproxyLimits::default()).with_other(consul));
    // Specs name secrets; the policy binds each name to its variable and hosts.
    let metrics = Arc::new(PrometheusFactory {
        secrets: s.policy.secrets(),
        ..PrometheusFactory::default()
    });
    tracing::info!(policy_version = %s.policy.version, empty = s.policy.is_empty(), "Policy in force.");
    let cfg = Config {
        drift_interval: s.drift_interval,
        max_clock_skew: s.max_clock_skew,
        policy_version: if s.policy.version.is_empty() {
            Config::default().policy_version
        } else {
            s.policy.version.clone()
        },
        journal: journal_path(&s.db),
        server_notify: s.notify.clone(),
        allow_unsynced_clock: s.allow_unsynced_clock,
        ..Config::default()
    };
    if s.allow_unsynced_clock {
        tracing::warn!(
            "--allow-unsynced-clock: an unsynchronised kernel clock is trusted for raises; every decision records it."
        );
    }
    let controller = Controller::new(
        store,
        calendars.clone(),
        traffic,
        metrics,
        Arc::new(SystemClock),
        cfg,
    );
    // The one-server lock is watched: on loss the controller sends nothing
    // until it holds the lock again.
    let watched = controller.clone();
    let lock = lock.watch(
        controller.store().clone(),
        std::time::Duration::from_secs(5),
        Arc::new(move |why| watched.set_acting(why)),
    );
    // The /metrics gauges, once from the store; then each commit keeps
    // them (a scrape never queries the store).
    if let Err(e) = controller.load_gauges().await {
        tracing::warn!(error = %e, "Could not load the /metrics gauges; rollouts appear as they change.");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_task = tokio::spawn(controller.clone().run(stop_rx));
    // Webhooks from the outbox, in their own task: never in the controller's way.
    let notify_task = tokio::spawn(crate::notify::run(
        controller.store().clone(),
        Arc::new(s.policy.clone()),
        s.policy.secrets(),
        crate::notify::client(),
        Arc::new(SystemClock),
        crate::notify::Options {
            public_url: s.public_url.clone(),
            ..Default::default()
        },
        stop_tx.subscribe(),
    ));

    let listener = tokio::net::TcpListener::bind(&s.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", s.listen))?;
    tracing::info!(listen = %s.listen, db = %redact(&s.db), "muhurat server started.");
    let app = api::router(
        api::AppState::new(controller.clone())
            .with_policy(s.policy.clone())
            .with_public_url(s.public_url.clone()),
    );
    let mut stop_http = stop_tx.subscribe();
    // Connection limit, header and idle timeouts, descriptors kept for the
    // controller (api::serve).
    let http = tokio::spawn(api::serve::serve(
        listener,
        app,
        api::serve::Limits::default(),
        async move {
            let _ = stop_http.changed().await;
        },
    ));

    // Signals: SIGHUP reloads calendars; SIGTERM/SIGINT stop gracefully.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| e.to_string())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let r = match controller.reload_calendars().await {
                    Ok(r) => r,
                    Err(e) => { tracing::error!(error = %e, "Calendar reload failed; the calendars in force stay."); continue; }
                };
                for l in &r.loaded { tracing::info!(calendar = %l, "Calendar loaded."); }
                for l in &r.refused { tracing::error!(problem = %l, "Calendar refused; the previous version stays in force."); }
                controller.poke();
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("Stopping: finishing the transition in flight.");
    let _ = stop_tx.send(true);
    let _ = loop_task.await;
    let _ = notify_task.await;
    let _ = http.await;
    lock.release().await;
    tracing::info!("Stopped.");
    Ok(())
}

/// Where decisions taken while the database is unreachable are journalled:
/// beside the SQLite file, or `muhurat.journal` in the working directory
/// (the service's state directory) for PostgreSQL.
fn journal_path(db: &str) -> PathBuf {
    if db.starts_with("sqlite:") {
        PathBuf::from(format!("{}.journal", crate::store::sqlite_path(db)))
    } else {
        PathBuf::from("muhurat.journal")
    }
}

/// A database URL without its password, for logs. Parsed as a URL (a
/// password may itself contain `@` or `:`); a `password` query parameter is
/// hidden too, and anything that does not parse is not shown at all.
pub fn redact(db: &str) -> String {
    let Ok(mut u) = url::Url::parse(db) else {
        return match db.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://(unparsable URL, not shown)"),
            None => "(unparsable URL, not shown)".into(),
        };
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let hide = k.to_ascii_lowercase().contains("password");
            (
                k.into_owned(),
                if hide { "***".into() } else { v.into_owned() },
            )
        })
        .collect();
    if !pairs.is_empty() {
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_passwords_with_at_signs_and_query_passwords() {
        let r = redact("postgres://muhurat:p@ss:w@rd@db.internal:5432/muhurat");
        assert!(!r.contains("ss:w") && !r.contains("rd@"), "{r}");
        assert!(r.contains("muhurat:***@db.internal:5432/muhurat"), "{r}");
        let r = redact("postgres://u@db/m?sslmode=require&password=s3cr3t");
        assert!(
            !r.contains("s3cr3t") && r.contains("sslmode=require"),
            "{r}"
        );
        assert_eq!(redact("sqlite://muhurat.db"), "sqlite://muhurat.db");
        assert!(!redact("postgres://u:s3cr3t@[bad").contains("s3cr3t"));
    }
}
