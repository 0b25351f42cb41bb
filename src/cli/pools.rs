//! The spec-file verbs that run inside the server (`pools`, `adopt`,
//! `check-target`, `check-metrics`) and `freeze`. Each sends the spec's YAML
//! text: the server, not this machine, holds the calendars, the secrets and
//! the network path to HAProxy and the metrics store.

use std::path::Path;

use serde_json::{Value, json};

use super::remote::{self, Client, RemoteArgs, RemoteError};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_HUMAN, EXIT_OK, Output};

/// Run `f` on a fresh runtime; its `Ok` is the exit code.
fn block_on<F: std::future::Future<Output = Result<i32, RemoteError>>>(
    verb: &str,
    f: impl FnOnce() -> F,
) -> i32 {
    let rt = match remote::runtime() {
        Ok(rt) => rt,
        Err(e) => return remote::fail(verb, &e),
    };
    match rt.block_on(f()) {
        Ok(code) => code,
        Err(e) => remote::fail(verb, &e),
    }
}

/// `pools`: which pool is idle, and whether CI may deploy to it. Exit 5
/// (a human must act) when it is not safe: CI must not deploy over a
/// canary that carries traffic.
pub fn pools(file: &Path, output: Output, args: &RemoteArgs) -> i32 {
    block_on("pools", || async move {
        let client = Client::new(args)?;
        let spec = remote::read_spec(file)?;
        let v = client.post("/pools", json!({"spec": spec})).await?;
        let safe = v
            .get("safe_to_deploy")
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                RemoteError::Protocol(format!(
                    "the server's pools answer has no safe_to_deploy: {v}"
                ))
            })?;
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
            Output::Text => println!("{}", pools_text(&v)),
        }
        Ok(if safe { EXIT_OK } else { EXIT_HUMAN })
    })
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("?")
}

fn pools_text(v: &Value) -> String {
    let mut out = format!(
        "{}\n  live: {}\n  idle: {}",
        s(v, "target"),
        s(v, "live"),
        s(v, "idle")
    );
    if let Some(w) = v.get("idle_weight_max").and_then(Value::as_f64) {
        out.push_str(&format!(" (at most {w}% of traffic on any endpoint)"));
    }
    if let Some(a) = v.get("active_rollout").filter(|a| !a.is_null()) {
        let id = a.as_str().map(String::from).unwrap_or_else(|| {
            a.get("id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        });
        out.push_str(&format!("\n  active rollout: {id}"));
    }
    let safe = v.get("safe_to_deploy").and_then(Value::as_bool) == Some(true);
    if safe {
        out.push_str(&format!("\nSafe to deploy to {}.", s(v, "idle")));
    } else {
        out.push_str(&format!(
            "\nNOT safe to deploy to {}: {}",
            s(v, "idle"),
            v.get("reason")
                .and_then(Value::as_str)
                .unwrap_or("(no reason given)")
        ));
    }
    out
}

/// `adopt FILE --live POOL`: move all traffic to POOL (a decrease of the
/// other pool, allowed at any time) and record it as live.
pub fn adopt(file: &Path, live: &str, args: &RemoteArgs) -> i32 {
    block_on("adopt", || async move {
        let client = Client::new(args)?;
        let spec = remote::read_spec(file)?;
        let v = client
            .post("/pools/adopt", json!({"spec": spec, "live": live}))
            .await?;
        if v.get("target").is_some() {
            println!("{}", pools_text(&v));
        } else {
            println!("Adopted: {live} is live. {}", compact(&v));
        }
        Ok(EXIT_OK)
    })
}

fn compact(v: &Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        v.to_string()
    }
}

/// Did every check pass? Read from the usual spellings of the verdict; an
/// answer with none of them counts as failed (fail closed).
pub fn all_passed(v: &Value) -> bool {
    for k in ["ok", "passed", "all_passed", "pass"] {
        if let Some(b) = v.get(k).and_then(Value::as_bool) {
            return b;
        }
    }
    false
}

/// `check-target` / `check-metrics`: exit 0 when everything passes, 1 when
/// any check fails or any query errors.
pub fn check(verb: &str, file: &Path, revision: Option<&str>, args: &RemoteArgs) -> i32 {
    block_on(verb, || async move {
        let client = Client::new(args)?;
        let spec = remote::read_spec(file)?;
        let mut body = json!({"spec": spec});
        if let Some(r) = revision {
            body["revision"] = json!(r);
        }
        let v = client.post(&format!("/{verb}"), body).await?;
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        Ok(if all_passed(&v) { EXIT_OK } else { EXIT_FAILED })
    })
}

/// `freeze on|off --reason`: the global kill switch for raises.
pub fn freeze(on: bool, reason: &str, args: &RemoteArgs) -> i32 {
    if reason.trim().is_empty() {
        eprintln!("muhurat freeze: --reason must say why (it goes into the audit log)");
        return EXIT_BAD_INPUT;
    }
    block_on("freeze", || async move {
        let client = Client::new(args)?;
        client
            .post("/freeze", json!({"on": on, "reason": reason}))
            .await?;
        if on {
            println!(
                "Freeze on: no raise will be made anywhere until `muhurat freeze off`. Decreases continue."
            );
        } else {
            println!("Freeze off: raises may happen again inside permitted windows.");
        }
        Ok(EXIT_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_text_says_why_it_is_not_safe() {
        let v = json!({"target": "haproxy:kite_api@unix:/a", "live": "blue", "idle": "green",
            "active_rollout": "kite-api-1", "idle_weight_max": 5.0, "safe_to_deploy": false,
            "reason": "rollout kite-api-1 is active"});
        let t = pools_text(&v);
        assert!(
            t.contains("NOT safe to deploy to green: rollout kite-api-1 is active"),
            "{t}"
        );
        assert!(t.contains("active rollout: kite-api-1"), "{t}");
    }

    #[test]
    fn a_check_answer_without_a_verdict_fails_closed() {
        assert!(all_passed(&json!({"ok": true})));
        assert!(!all_passed(&json!({"ok": false})));
        assert!(!all_passed(&json!({"results": []})));
    }
}
