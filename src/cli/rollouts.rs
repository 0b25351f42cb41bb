//! `status`, `pause`, `resume`, `abort`, `approve`: the verbs a person
//! uses on one rollout. `ROLLOUT` is an id or a spec name (that spec's
//! active rollout).
//!
//! `approve` without `--step` first reads the rollout, shows what approving
//! will do, and then sends exactly the step index and spec hash it showed:
//! if the rollout moved on in between, the server answers `stale_approval`
//! rather than approving something the person never saw.

use std::io::IsTerminal;

use chrono::{DateTime, FixedOffset};
use serde_json::{Value, json};

use super::remote::{self, Client, RemoteArgs, RemoteError, StatusRow};
use super::{EXIT_BAD_INPUT, EXIT_OK, Output};

fn block_on<F: std::future::Future<Output = Result<(), RemoteError>>>(
    verb: &str,
    f: impl FnOnce() -> F,
) -> i32 {
    let rt = match remote::runtime() {
        Ok(rt) => rt,
        Err(e) => return remote::fail(verb, &e),
    };
    match rt.block_on(f()) {
        Ok(()) => EXIT_OK,
        Err(e) => remote::fail(verb, &e),
    }
}

// ---- status -----------------------------------------------------------------

pub fn status(rollout: Option<&str>, output: Output, args: &RemoteArgs) -> i32 {
    block_on("status", || async move {
        let client = Client::new(args)?;
        match rollout {
            Some(r) => {
                let doc = remote::fetch_rollout(&client, r).await?;
                let row = StatusRow::from_value(&doc);
                match output {
                    Output::Json => println!("{}", to_json(&row)),
                    Output::Text => print_detail(&row, &doc),
                }
            }
            None => {
                let list = client.get("/rollouts").await?;
                let rows: Vec<StatusRow> = remote::rollout_list(&list)
                    .iter()
                    .map(StatusRow::from_value)
                    .collect();
                match output {
                    Output::Json => println!("{}", to_json(&rows)),
                    Output::Text => print_table(&rows),
                }
            }
        }
        Ok(())
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
}

fn print_table(rows: &[StatusRow]) {
    if rows.is_empty() {
        println!("No rollouts.");
        return;
    }
    let head = [
        "ID",
        "NAME",
        "REVISION",
        "STATE",
        "STEP",
        "CANARY",
        "WAITING FOR",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.name.clone(),
                r.revision.clone(),
                r.state.clone(),
                r.step.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                remote::pct(r.canary_weight),
                r.waiting_for.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, v) in width.iter_mut().zip(c) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, v) in c.iter().enumerate() {
            if i + 1 == c.len() {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v:<w$}  ", w = width[i]));
            }
        }
        s.trim_end().to_string()
    };
    println!("{}", line(&head.map(String::from)));
    for c in &cells {
        println!("{}", line(c));
    }
}

fn print_detail(r: &StatusRow, doc: &Value) {
    let bold = std::io::stdout().is_terminal();
    let title = format!("{} ({} revision {})", r.id, r.name, r.revision);
    if bold {
        println!("\x1b[1m{title}\x1b[0m");
    } else {
        println!("{title}");
    }
    println!("  state:       {}", r.state);
    println!(
        "  step:        {}",
        r.step.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
    );
    println!(
        "  canary:      {} confirmed, {} desired",
        remote::pct(r.canary_weight),
        remote::pct(r.desired_weight)
    );
    println!("  initiator:   {}", r.initiator);
    if let Some(w) = &r.waiting_for {
        println!("  waiting for: {w}");
    }
    if let Some(t) = doc
        .get("next_window")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
    {
        match doc.get("next_window_after").and_then(Value::as_str) {
            Some(after) => println!("  next window: {} (when {after})", local(t, zone(doc))),
            None => println!("  next window: {}", local(t, zone(doc))),
        }
    }
    if let Some(u) = doc.get("dashboard_url").and_then(Value::as_str) {
        println!("  dashboard:   {u}");
    }
}

// ---- pause / resume / abort -------------------------------------------------

/// POST a command to a rollout named by id or spec name.
async fn command(
    client: &Client,
    rollout: &str,
    verb: &str,
    body: Value,
) -> Result<StatusRow, RemoteError> {
    let doc = remote::fetch_rollout(client, rollout).await?;
    let id = remote::id_of(&doc)?;
    let after = client.post(&format!("/rollouts/{id}/{verb}"), body).await?;
    // Some answers carry the rollout, some only an acknowledgement.
    let row = StatusRow::from_value(&after);
    if row.state.is_empty() {
        Ok(StatusRow::from_value(
            &client.get(&format!("/rollouts/{id}")).await?,
        ))
    } else {
        Ok(row)
    }
}

fn report(verb: &str, r: &StatusRow) {
    let why = r
        .waiting_for
        .as_deref()
        .map(|w| format!(" — {w}"))
        .unwrap_or_default();
    println!(
        "{verb}: {} is {} at {}{why}",
        r.id,
        r.state,
        remote::pct(r.canary_weight)
    );
}

pub fn pause(rollout: &str, reason: Option<&str>, args: &RemoteArgs) -> i32 {
    block_on("pause", || async move {
        let client = Client::new(args)?;
        let mut body = json!({});
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        let r = command(&client, rollout, "pause", body).await?;
        report("Paused", &r);
        Ok(())
    })
}

pub fn resume(
    rollout: &str,
    override_checks: bool,
    reason: Option<&str>,
    args: &RemoteArgs,
) -> i32 {
    if override_checks && reason.is_none_or(|r| r.trim().is_empty()) {
        eprintln!(
            "muhurat resume: --override-checks needs --reason TEXT: it is audited, say why the checks cannot give evidence"
        );
        return EXIT_BAD_INPUT;
    }
    block_on("resume", || async move {
        let client = Client::new(args)?;
        let mut body = json!({"override_checks": override_checks});
        if let Some(r) = reason {
            body["reason"] = json!(r);
        }
        let r = command(&client, rollout, "resume", body).await?;
        report("Resumed", &r);
        Ok(())
    })
}

pub fn abort(rollout: &str, reason: &str, args: &RemoteArgs) -> i32 {
    if reason.trim().is_empty() {
        eprintln!("muhurat abort: --reason must say why (it goes into the audit log)");
        return EXIT_BAD_INPUT;
    }
    block_on("abort", || async move {
        let client = Client::new(args)?;
        let r = command(&client, rollout, "abort", json!({"reason": reason})).await?;
        report("Abort requested", &r);
        Ok(())
    })
}

// ---- approve ------------------------------------------------------------------

pub fn approve(rollout: &str, step: Option<u64>, comment: Option<&str>, args: &RemoteArgs) -> i32 {
    block_on("approve", || async move {
        let client = Client::new(args)?;
        let doc = remote::fetch_rollout(&client, rollout).await?;
        let row = StatusRow::from_value(&doc);
        let spec_hash = doc
            .get("spec_hash")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| {
                RemoteError::Protocol(format!(
                    "the server's rollout {} has no spec_hash to approve",
                    row.id
                ))
            })?;
        let step = match step {
            Some(s) => s,
            None => {
                if row.state != "awaiting_approval" {
                    return Err(RemoteError::Input(format!(
                        "{} is {}, not awaiting approval{}; nothing to approve (pass --step N to approve a step ahead of time)",
                        row.id,
                        row.state,
                        row.waiting_for
                            .as_deref()
                            .map(|w| format!(" ({w})"))
                            .unwrap_or_default()
                    )));
                }
                row.step.ok_or_else(|| {
                    RemoteError::Protocol(format!("the server's rollout {} has no step", row.id))
                })?
            }
        };
        // Shown before sending, so the person sees what they approve.
        println!("Approving {}: {}", row.id, preview(&doc, &row, step));
        let mut body = json!({"step": step, "spec_hash": spec_hash});
        if let Some(c) = comment {
            body["comment"] = json!(c);
        }
        let after = client
            .post(&format!("/rollouts/{}/approve", row.id), body)
            .await?;
        let r = StatusRow::from_value(&after);
        if r.state.is_empty() {
            println!("Approved step {step}.");
        } else {
            report("Approved", &r);
        }
        Ok(())
    })
}

/// "step 2 of kite-api revision abc: 5% → 10% at Fri 00:25 IST", from the
/// projected plan the server sends with the rollout.
pub fn preview(doc: &Value, row: &StatusRow, step: u64) -> String {
    let head = format!("step {step} of {} revision {}", row.name, row.revision);
    let plan_steps = doc
        .pointer("/plan/steps")
        .or_else(|| doc.get("plan"))
        .and_then(Value::as_array);
    let next = plan_steps.and_then(|steps| {
        steps.iter().find(|s| {
            s.get("type").and_then(Value::as_str) == Some("set_weight")
                && s.get("index")
                    .and_then(Value::as_u64)
                    .is_some_and(|i| i > step)
        })
    });
    let from = remote::pct(row.canary_weight);
    match next {
        Some(n) => {
            let to = remote::pct(n.get("weight").and_then(Value::as_u64));
            let when = n
                .get("at")
                .and_then(Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| format!(" at {}", local(t, zone(doc))))
                .unwrap_or_else(|| " (no permitted window within the calendar's coverage)".into());
            format!("{head}: {from} → {to}{when}")
        }
        None if plan_steps.is_some() => {
            format!(
                "{head}: no further raise; the rollout completes at {from} after its remaining steps"
            )
        }
        None => format!("{head} (currently {from})"),
    }
}

/// The rollout's zone (`timezone` in the API's answer: the spec's
/// `windows.timezone`); Asia/Kolkata when an older server does not say.
fn zone(doc: &Value) -> chrono_tz::Tz {
    doc.get("timezone")
        .and_then(Value::as_str)
        .and_then(|z| z.parse().ok())
        .unwrap_or(chrono_tz::Asia::Kolkata)
}

/// "Fri 27 Nov 00:25 IST": an instant in the rollout's zone.
fn local(t: DateTime<FixedOffset>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz).format("%a %d %b %H:%M %Z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approve_preview_names_the_next_raise_and_its_time() {
        let doc = json!({
            "id": "kite-api-1", "name": "kite-api", "revision": "abc", "state": "awaiting_approval",
            "step": 2, "confirmed": 5, "spec_hash": "h",
            "plan": {"steps": [
                {"index": 0, "type": "set_weight", "weight": 5, "at": "2026-11-26T00:25:00+05:30"},
                {"index": 1, "type": "bake", "start": "x", "until": "y"},
                {"index": 2, "type": "approval", "at": "2026-11-27T00:00:00+05:30"},
                {"index": 3, "type": "set_weight", "weight": 10, "at": "2026-11-27T00:25:00+05:30"}
            ]}
        });
        let row = StatusRow::from_value(&doc);
        assert_eq!(
            preview(&doc, &row, 2),
            "step 2 of kite-api revision abc: 5% → 10% at Fri 27 Nov 00:25 IST"
        );
    }

    #[test]
    fn approve_preview_without_a_plan_still_says_where_it_stands() {
        let doc = json!({"id": "a", "name": "n", "revision": "r", "confirmed": 5});
        let row = StatusRow::from_value(&doc);
        assert_eq!(
            preview(&doc, &row, 2),
            "step 2 of n revision r (currently 5%)"
        );
    }

    #[test]
    fn approve_preview_shows_the_servers_utc_times_in_the_rollouts_zone() {
        // The API answers in UTC (`Z`); the preview is for a person in the
        // spec's zone.
        let mut doc = json!({
            "id": "a", "name": "n", "revision": "r", "confirmed": 5, "timezone": "Asia/Kolkata",
            "plan": {"steps": [{"index": 3, "type": "set_weight", "weight": 10, "at": "2026-11-26T18:55:00Z"}]}
        });
        let row = StatusRow::from_value(&doc);
        assert_eq!(
            preview(&doc, &row, 2),
            "step 2 of n revision r: 5% → 10% at Fri 27 Nov 00:25 IST"
        );
        doc["timezone"] = json!("UTC");
        assert_eq!(
            preview(&doc, &row, 2),
            "step 2 of n revision r: 5% → 10% at Thu 26 Nov 18:55 UTC"
        );
    }
}
