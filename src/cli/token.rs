//! `muhurat token create|list|revoke`.
//!
//! `create --db URL` works offline, straight against the store: it is how
//! the first admin token comes to exist, before any token could call the
//! API. The new token is printed alone on stdout and never again (only its
//! hash is stored), so `TOKEN=$(muhurat token create …)` just works.

use serde_json::{Value, json};

use super::remote::{self, Client, RemoteArgs, RemoteError};
use super::{EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, Output};
use crate::clock::{Clock, SystemClock};
use crate::store::Store;

/// The roles a token can carry (the API's own type).
pub use crate::api::auth::Role;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it alone on stdout, once.
    Create {
        /// A unique name for the token (e.g. ci-kite-api, ravi-laptop).
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// The person or system it acts for (approvals count per principal) [default: the name].
        #[arg(long)]
        principal: Option<String>,
        /// Create it offline in this database (sqlite://PATH or postgres://…), e.g. to bootstrap the first admin.
        #[arg(long, env = "MUHURAT_DB")]
        db: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List tokens (names, roles, principals; never the tokens).
    List {
        /// Read the database directly instead of asking the server.
        #[arg(long, env = "MUHURAT_DB")]
        db: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Revoke a token by name; it is refused from then on.
    Revoke {
        name: String,
        /// Revoke in the database directly instead of asking the server.
        #[arg(long, env = "MUHURAT_DB")]
        db: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// Who did it, for `created_by`/`revoked_by` when working offline.
fn local_user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user} (offline, --db)")
}

pub fn run(cmd: &TokenCommand) -> i32 {
    let rt = match remote::runtime() {
        Ok(rt) => rt,
        Err(e) => return remote::fail("token", &e),
    };
    rt.block_on(async {
        match cmd {
            TokenCommand::Create {
                name,
                role,
                principal,
                db,
                remote,
            } => {
                let principal = principal.clone().unwrap_or_else(|| name.clone());
                match db {
                    Some(db) => create_offline(db, name, *role, &principal).await,
                    None => create_remote(remote, name, *role, &principal).await,
                }
            }
            TokenCommand::List { db, output, remote } => match db {
                Some(db) => list_offline(db, *output).await,
                None => list_remote(remote, *output).await,
            },
            TokenCommand::Revoke { name, db, remote } => match db {
                Some(db) => revoke_offline(db, name).await,
                None => revoke_remote(remote, name).await,
            },
        }
    })
}

async fn open(db: &str) -> Result<Store, i32> {
    Store::open(db).await.map_err(|e| {
        eprintln!("muhurat token: database {}: {e}", super::server::redact(db));
        match e {
            crate::store::StoreError::BadUrl(_) => EXIT_BAD_INPUT,
            _ => EXIT_INTERNAL,
        }
    })
}

async fn create_offline(db: &str, name: &str, role: Role, principal: &str) -> i32 {
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match bootstrap(&store, name, role.as_str(), principal, &local_user()).await {
        Ok(token) => {
            println!("{token}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("muhurat token create: {e}");
            EXIT_BAD_INPUT
        }
    }
}

/// Create a token in the store (with its audit event); returns the token.
async fn bootstrap(
    store: &Store,
    name: &str,
    role: &str,
    principal: &str,
    created_by: &str,
) -> Result<String, String> {
    let role: crate::api::auth::Role = role.parse().map_err(|e| format!("role `{role}`: {e}"))?;
    crate::api::auth::create_token(store, name, role, principal, created_by)
        .await
        .map(|(token, _)| token)
        .map_err(|e| e.to_string())
}

async fn create_remote(args: &RemoteArgs, name: &str, role: Role, principal: &str) -> i32 {
    let go = async {
        let client = Client::new(args)?;
        let v = client
            .post(
                "/tokens",
                json!({"name": name, "role": role.as_str(), "principal": principal}),
            )
            .await?;
        v.get("token")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| RemoteError::Protocol(format!("the server's answer has no token: {v}")))
    };
    match go.await {
        Ok(t) => {
            println!("{t}");
            EXIT_OK
        }
        Err(e) => remote::fail("token create", &e),
    }
}

/// One row of `token list`.
#[derive(Debug, serde::Serialize)]
struct Row {
    name: String,
    role: String,
    principal: String,
    created_at: String,
    created_by: String,
    revoked_at: Option<String>,
    revoked_by: Option<String>,
}

fn print_rows(rows: &[Row], output: Output) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(rows).unwrap_or_default()),
        Output::Text => {
            if rows.is_empty() {
                println!("No tokens.");
            }
            for r in rows {
                let state = match (&r.revoked_at, &r.revoked_by) {
                    (Some(at), by) => format!("revoked {at} by {}", by.as_deref().unwrap_or("?")),
                    (None, _) => "active".into(),
                };
                println!(
                    "{:<24} {:<9} {:<20} created {} by {}; {state}",
                    r.name, r.role, r.principal, r.created_at, r.created_by
                );
            }
        }
    }
}

async fn list_offline(db: &str, output: Output) -> i32 {
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match store.tokens().await {
        Ok(ts) => {
            let rows: Vec<Row> = ts
                .into_iter()
                .map(|t| Row {
                    name: t.name,
                    role: t.role,
                    principal: t.principal,
                    created_at: t
                        .created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    created_by: t.created_by,
                    revoked_at: t
                        .revoked_at
                        .map(|r| r.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    revoked_by: t.revoked_by,
                })
                .collect();
            print_rows(&rows, output);
            EXIT_OK
        }
        Err(e) => {
            eprintln!("muhurat token list: {e}");
            EXIT_INTERNAL
        }
    }
}

async fn list_remote(args: &RemoteArgs, output: Output) -> i32 {
    let go = async {
        let client = Client::new(args)?;
        client.get("/tokens").await
    };
    match go.await {
        Ok(v) => {
            let list = match &v {
                Value::Array(a) => a.clone(),
                other => other
                    .get("tokens")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            };
            let g = |t: &Value, k: &str| t.get(k).and_then(Value::as_str).map(String::from);
            let rows: Vec<Row> = list
                .iter()
                .map(|t| Row {
                    name: g(t, "name").unwrap_or_default(),
                    role: g(t, "role").unwrap_or_default(),
                    principal: g(t, "principal").unwrap_or_default(),
                    created_at: g(t, "created_at").unwrap_or_default(),
                    created_by: g(t, "created_by").unwrap_or_default(),
                    revoked_at: g(t, "revoked_at"),
                    revoked_by: g(t, "revoked_by"),
                })
                .collect();
            print_rows(&rows, output);
            EXIT_OK
        }
        Err(e) => remote::fail("token list", &e),
    }
}

async fn revoke_offline(db: &str, name: &str) -> i32 {
    let store = match open(db).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match crate::api::auth::revoke_token(&store, name, &local_user(), SystemClock.now()).await {
        Ok(true) => {
            println!("Revoked token {name}.");
            EXIT_OK
        }
        Ok(false) => {
            eprintln!(
                "muhurat token revoke: no active token is named `{name}`; see `muhurat token list`"
            );
            EXIT_BAD_INPUT
        }
        Err(e) => {
            eprintln!("muhurat token revoke: {e}");
            EXIT_INTERNAL
        }
    }
}

async fn revoke_remote(args: &RemoteArgs, name: &str) -> i32 {
    let go = async {
        let client = Client::new(args)?;
        client.delete(&format!("/tokens/{name}")).await
    };
    match go.await {
        Ok(_) => {
            println!("Revoked token {name}.");
            EXIT_OK
        }
        Err(e) => remote::fail("token revoke", &e),
    }
}
