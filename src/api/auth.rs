//! Bearer tokens, roles and the caller of a request.
//!
//! A token is `mht_` + 32 random bytes in hex, shown once; the store keeps
//! only its SHA-256 (hex), so a leaked database does not leak working tokens.
//! Each token carries a role and a *principal* — the person or system
//! behind it. Separation of duties compares principals, not tokens: two
//! tokens of one person are one approver. Tokens are never logged; the
//! audit log names the principal.
//!
//! [`new_token`] and [`create_token`] are what `muhurat token create --db`
//! calls offline to bootstrap the first admin; the API's `POST /tokens`
//! calls the same function, so both paths are audited identically.

use std::fmt;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use super::errors::ApiError;
use crate::store::{NewEvent, Store, StoreError, TokenRecord};

/// Every token starts with this, so a secret scanner can find leaked ones.
pub const TOKEN_PREFIX: &str = "mht_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Starts, pauses, resumes, aborts, adopts.
    Deployer,
    /// Approves; may `resume --override-checks`.
    Approver,
    /// Everything, plus freeze, calendar reload and tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }

    pub fn may(self, action: Action) -> bool {
        use Action::*;
        match self {
            Role::Admin => true,
            Role::Viewer => action == Read,
            Role::Deployer => matches!(action, Read | Deploy),
            Role::Approver => matches!(action, Read | Approve | OverrideChecks),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "approver" => Ok(Role::Approver),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "role `{other}` is not viewer, deployer, approver or admin"
            )),
        }
    }
}

/// What a request wants to do (docs/design.md §7 *Roles*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Any GET, and the read-only checks (`pools`, `check-target`,
    /// `check-metrics`).
    Read,
    /// Start, pause, resume, abort, adopt.
    Deploy,
    Approve,
    /// `resume --override-checks`.
    OverrideChecks,
    /// Freeze, calendar reload, tokens.
    Admin,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::Read => "reading (any role)",
            Action::Deploy => {
                "this (start, pause, resume, abort, adopt) needs the deployer or admin role"
            }
            Action::Approve => "approving needs the approver or admin role",
            Action::OverrideChecks => "resume --override-checks needs the approver or admin role",
            Action::Admin => "this (freeze, calendar reload, tokens) needs the admin role",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_name: String,
    pub role: Role,
    pub principal: String,
}

impl Caller {
    /// 403 `forbidden` unless the caller's role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if self.role.may(action) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token `{}` of {} has the {} role; {}",
                self.token_name,
                self.principal,
                self.role,
                action.describe()
            )))
        }
    }
}

/// SHA-256 of a token, hex: what the store keeps.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random token and its hash: (`mht_…` shown once, hash to store).
pub fn new_token() -> Result<(String, String), TokenError> {
    let hex = random_hex().map_err(|e| TokenError::Random(e.to_string()))?;
    let token = format!("{TOKEN_PREFIX}{hex}");
    let hash = hash_token(&token);
    Ok((token, hash))
}

/// 32 bytes from the operating system's random source, as hex. Its failing
/// is an error, never a fallback: a predictable token or session id would
/// be worse than none.
pub fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named `{0}` already exists; revoke it first or pick another name")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "token `{0}` is the last live admin token; create another admin token first, then revoke this one"
    )]
    LastAdmin(String),
    #[error(
        "the operating system's random source failed ({0}); no token was made — check the host's /dev/urandom and getrandom(2)"
    )]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A principal as stored and compared: trimmed and lower case, so
/// `Asha`, `asha ` and `ASHA` are one person for separation of duties and
/// one vote. Control characters are refused (they could forge log lines).
pub fn normalise_principal(p: &str) -> Result<String, String> {
    let t = p.trim();
    if t.is_empty() {
        return Err("the principal is empty".into());
    }
    if t.chars().any(char::is_control) {
        return Err("the principal contains control characters".into());
    }
    if t.chars().count() > 128 {
        return Err("the principal is longer than 128 characters".into());
    }
    Ok(t.to_lowercase())
}

/// Compare two names as principals (a free-text `initiator` included).
pub fn same_principal(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Token names appear in messages and URLs: keep them plain.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Create a token now (wall clock): for `muhurat token create --db` (offline
/// bootstrap). Returns the plaintext token — print it once — and the record.
pub async fn create_token(
    store: &Store,
    name: &str,
    role: Role,
    principal: &str,
    created_by: &str,
) -> Result<(String, TokenRecord), TokenError> {
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    create_token_at(store, name, role, principal, created_by, now).await
}

/// [`create_token`] at a given instant (the API passes the controller's clock).
/// Appends a `token_created` audit event naming the creator; the token and
/// its hash are never in it.
pub async fn create_token_at(
    store: &Store,
    name: &str,
    role: Role,
    principal: &str,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<(String, TokenRecord), TokenError> {
    if !valid_name(name) {
        return Err(TokenError::Invalid(format!(
            "token name `{name}`: use 1-64 letters, digits, -, _, ., @"
        )));
    }
    let principal = normalise_principal(principal).map_err(TokenError::Invalid)?;
    let principal = principal.as_str();
    if store.tokens().await?.iter().any(|t| t.name == name) {
        return Err(TokenError::Exists(name.to_string()));
    }
    let (token, hash) = new_token()?;
    let rec = TokenRecord {
        name: name.to_string(),
        hash,
        role: role.as_str().to_string(),
        principal: principal.to_string(),
        created_at: now,
        created_by: created_by.to_string(),
        revoked_at: None,
        revoked_by: None,
    };
    store.insert_token(&rec).await.map_err(|e| match e {
        // Lost a race with another creator of the same name.
        StoreError::Io(_) => TokenError::Exists(name.to_string()),
        e => TokenError::Store(e),
    })?;
    store
        .append_event(&NewEvent {
            at: now,
            kind: "token_created".into(),
            principal: Some(created_by.to_string()),
            why: format!(
                "{created_by} created token `{name}` (role {role}, principal {principal})"
            ),
            input: serde_json::json!({"command": "token_create", "name": name, "role": role, "principal": principal}).to_string(),
            state: "server".into(),
            ..Default::default()
        })
        .await?;
    Ok((token, rec))
}

/// Refuse to revoke the last live admin token through the API: nobody
/// could then create tokens or lift a freeze without database access.
pub async fn ensure_not_last_admin(store: &Store, name: &str) -> Result<(), TokenError> {
    let live: Vec<TokenRecord> = store
        .tokens()
        .await?
        .into_iter()
        .filter(|t| t.revoked_at.is_none())
        .collect();
    let target_is_admin = live
        .iter()
        .any(|t| t.name == name && t.role == Role::Admin.as_str());
    let admins = live
        .iter()
        .filter(|t| t.role == Role::Admin.as_str())
        .count();
    if target_is_admin && admins <= 1 {
        return Err(TokenError::LastAdmin(name.to_string()));
    }
    Ok(())
}

/// Revoke a token by name, with its audit event; false when no live token
/// has that name.
pub async fn revoke_token(
    store: &Store,
    name: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if !store.revoke_token(name, by, now).await? {
        return Ok(false);
    }
    store
        .append_event(&NewEvent {
            at: now,
            kind: "token_revoked".into(),
            principal: Some(by.to_string()),
            why: format!("{by} revoked token `{name}`"),
            input: serde_json::json!({"command": "token_revoke", "name": name}).to_string(),
            state: "server".into(),
            ..Default::default()
        })
        .await?;
    Ok(true)
}

/// Who a bearer token belongs to; 401 with a message that says what to do.
pub async fn authenticate(store: &Store, header: Option<&str>) -> Result<Caller, ApiError> {
    let Some(value) = header else {
        return Err(ApiError::unauthorized(
            "no token: send `Authorization: Bearer <token>` (muhurat --token or MUHURAT_TOKEN)",
        ));
    };
    // RFC 9110: the scheme is case-insensitive (`Bearer`, `bearer`, `BEARER`).
    let token = value
        .trim()
        .split_once(char::is_whitespace)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not `Bearer <token>`")
        })?;
    caller_by_hash(store, &hash_token(token)).await
}

/// Who the token with this hash belongs to (a bearer token, or the token
/// behind a dashboard session); 401 when unknown or revoked.
pub async fn caller_by_hash(store: &Store, hash: &str) -> Result<Caller, ApiError> {
    let unknown = || {
        ApiError::unauthorized(
            "the server does not know this token; check MUHURAT_TOKEN or ask an admin for one",
        )
    };
    let rec = store.token_by_hash(hash).await?.ok_or_else(unknown)?;
    // The lookup is by SHA-256, which a caller cannot steer byte by byte;
    // the stored hash is still compared in constant time so no path
    // compares secret-derived bytes with an early exit.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        rec.hash.as_bytes(),
        hash.as_bytes(),
    )) {
        return Err(unknown());
    }
    if let Some(at) = rec.revoked_at {
        return Err(ApiError::unauthorized(format!(
            "token `{}` was revoked on {} by {}; ask an admin for a new one",
            rec.name,
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
            rec.revoked_by.as_deref().unwrap_or("an admin")
        )));
    }
    let role = rec.role.parse::<Role>().map_err(ApiError::internal)?;
    Ok(Caller {
        token_name: rec.name,
        role,
        // Tokens created before principals were normalised compare the same.
        principal: rec.principal.trim().to_lowercase(),
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Caller, ApiError> {
        let header = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            // A browser: the dashboard's session cookie (with its CSRF
            // token on anything but GET), the same roles as the token.
            None => {
                if let Some(s) =
                    super::session::from_cookie(st, &parts.headers, &parts.method).await?
                {
                    return Ok(s.caller);
                }
                None
            }
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::unauthorized("the Authorization header is not plain text")
            })?),
        };
        authenticate(st.controller.store(), header).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, ha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("mht_") && a.len() == 4 + 64, "{a}");
        assert_eq!(ha, hash_token(&a));
        assert_eq!(ha.len(), 64);
        assert!(!ha.contains(&a[4..]));
    }

    #[test]
    fn roles_allow_what_design_says() {
        use Action::*;
        let table = [
            (Role::Viewer, [true, false, false, false, false]),
            (Role::Deployer, [true, true, false, false, false]),
            (Role::Approver, [true, false, true, true, false]),
            (Role::Admin, [true, true, true, true, true]),
        ];
        for (role, allowed) in table {
            for (action, ok) in [Read, Deploy, Approve, OverrideChecks, Admin]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(role.may(action), ok, "{role} {action:?}");
            }
        }
    }
}
