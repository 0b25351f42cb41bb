//! The web dashboard: its pages (`/`, `/rollouts/{id}`, `/calendar`,
//! `/login`) and static assets, embedded in the binary from `web/` at
//! compile time, so `cargo build` alone builds everything and the server
//! needs no files beside it.
//!
//! The decision a newcomer must know: the pages are static shells plus one
//! script that reads the JSON API with the browser's session cookie; the
//! server renders nothing but three `<meta>` values (who is signed in, their
//! role, the CSRF token). Nothing but `/login` and the static assets (code,
//! styles, the icon — no data) answers without a session; every other page
//! redirects to `/login`. Every response carries a strict
//! Content-Security-Policy: scripts and styles only from this origin, no
//! inline code, so an injected string in a rollout's name or an audit
//! reason can at worst be text.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::AppState;
use super::session;

/// Scripts, styles, images and connections only from this origin; no inline
/// code; not framable.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

const LOGIN: &str = include_str!("../../web/login.html");
const ROLLOUTS: &str = include_str!("../../web/rollouts.html");
const ROLLOUT: &str = include_str!("../../web/rollout.html");
const CALENDAR: &str = include_str!("../../web/calendar.html");

/// (path, content type, body)
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/assets/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "/assets/login.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/login.js"),
    ),
    (
        "/assets/app.css",
        "text/css; charset=utf-8",
        include_str!("../../web/app.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_str!("../../web/favicon.svg"),
    ),
];

pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/", get(page_rollouts))
        .route("/rollouts/{id}", get(page_rollout))
        .route("/calendar", get(page_calendar))
        .route("/login", get(page_login));
    for (path, _, _) in ASSETS {
        r = r.route(path, get(asset));
    }
    r
}

/// Every response (API included) gets the policy and the usual hardening
/// headers; HTML is never cached, since it carries the CSRF token.
pub async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// A page for a signed-in person, or a redirect to the sign-in page that
/// comes back here afterwards.
async fn signed_in_page(st: &AppState, headers: &HeaderMap, path: &str, shell: &str) -> Response {
    match session::from_cookie(st, headers, &Method::GET).await {
        Ok(Some(s)) => html(
            shell
                .replace("{{principal}}", &escape(&s.caller.principal))
                .replace("{{role}}", s.caller.role.as_str())
                .replace("{{token_name}}", &escape(&s.caller.token_name))
                .replace("{{csrf}}", &s.csrf),
        ),
        Ok(None) | Err(_) => {
            let next: String = form_urlencode(path);
            Redirect::to(&format!("/login?next={next}")).into_response()
        }
    }
}

fn form_urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

async fn page_rollouts(State(st): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&st, &headers, "/", ROLLOUTS).await
}

async fn page_rollout(State(st): State<AppState>, headers: HeaderMap, req: Request) -> Response {
    let path = req.uri().path().to_string();
    signed_in_page(&st, &headers, &path, ROLLOUT).await
}

async fn page_calendar(State(st): State<AppState>, headers: HeaderMap) -> Response {
    signed_in_page(&st, &headers, "/calendar", CALENDAR).await
}

async fn page_login() -> Response {
    html(LOGIN.to_string())
}

/// A static asset, with an ETag so a browser revalidates cheaply.
async fn asset(headers: HeaderMap, req: Request) -> Response {
    let path = req.uri().path();
    let Some((_, ctype, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let digest = Sha256::digest(body.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, ctype.to_string())], *body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_html_specials() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    /// The CSP forbids inline code, so the pages must have none: a page
    /// with a `<script>` body or a `style=` attribute would silently break.
    #[test]
    fn pages_carry_no_inline_script_or_style() {
        for page in [LOGIN, ROLLOUTS, ROLLOUT, CALENDAR] {
            assert!(!page.contains(" style="), "inline style in a page");
            assert!(!page.contains("<style"), "inline <style> in a page");
            for (i, _) in page.match_indices("<script") {
                let tag = &page[i..page[i..].find('>').map_or(page.len(), |e| i + e)];
                assert!(tag.contains(" src=\"/assets/"), "inline script: {tag}");
            }
            assert!(!page.contains("onclick") && !page.contains("onload"));
        }
        for (p, _, body) in ASSETS {
            if p.ends_with(".js") {
                assert!(!body.contains("eval("), "{p} uses eval");
            }
        }
    }
}
