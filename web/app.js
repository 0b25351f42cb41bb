// muhurat dashboard: the rollouts page, a rollout's detail, the calendar.
//
// Plain JavaScript, no build step. The server writes who is signed in,
// their role and the CSRF token into <meta> elements; everything else
// comes from the JSON API with the session cookie. Every string from the
// API goes through esc() before it reaches innerHTML (and the CSP forbids
// inline scripts besides). Live updates come from GET /api/v1/events.
"use strict";
(() => {
  const meta = (n) => (document.querySelector(`meta[name="${n}"]`) || {}).content || "";
  const ME = { principal: meta("muhurat-principal"), role: meta("muhurat-role"), csrf: meta("csrf-token") };
  const ROLE = ME.role;
  const CAN = {
    deploy: ROLE === "deployer" || ROLE === "admin",
    approve: ROLE === "approver" || ROLE === "admin",
    override: ROLE === "approver" || ROLE === "admin",
    admin: ROLE === "admin",
  };
  const $ = (id) => document.getElementById(id);
  const PAGE = document.body.dataset.page;

  // ---- text ---------------------------------------------------------------

  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => (s === null || s === undefined ? "" : String(s)).replace(/[&<>"']/g, (c) => ESC[c]);

  // Times: absolute in the rollout's zone (IST by default) with the zone
  // named, and relative beside it, counting down live.
  const IST = "Asia/Kolkata";
  const fmts = new Map();
  function fmt(zone, withDate) {
    const k = zone + withDate;
    let f = fmts.get(k);
    if (!f) {
      const o = { timeZone: zone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
      if (withDate) Object.assign(o, { weekday: "short", day: "numeric", month: "short" });
      f = new Intl.DateTimeFormat("en-GB", o);
      fmts.set(k, f);
    }
    return f;
  }
  function zoneName(zone, d) {
    if (zone === IST) return "IST";
    const k = "z" + zone;
    let f = fmts.get(k);
    if (!f) {
      f = new Intl.DateTimeFormat("en-US", { timeZone: zone, timeZoneName: "short" });
      fmts.set(k, f);
    }
    const p = f.formatToParts(d).find((x) => x.type === "timeZoneName");
    return p ? p.value : zone;
  }
  function abs(iso, zone) {
    if (!iso) return "";
    const z = zone || IST;
    const d = new Date(iso);
    return fmt(z, true).format(d).replace(/,/g, "") + " " + zoneName(z, d);
  }
  function rel(iso, now) {
    if (!iso) return "";
    let s = Math.round((new Date(iso).getTime() - (now || Date.now())) / 1000);
    if (Math.abs(s) < 2) return "just now";
    const future = s >= 0;
    s = Math.abs(s);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    let t;
    if (d > 0) t = `${d} d ${h} h`;
    else if (h > 0) t = `${h} h ${m} m`;
    else if (m > 0) t = `${m} m ${String(sec).padStart(2, "0")} s`;
    else t = `${sec} s`;
    return future ? "in " + t : t + " ago";
  }
  const relTag = (iso) => `<time class="rel" datetime="${esc(iso)}">${esc(rel(iso))}</time>`;
  const when = (iso, zone) =>
    iso ? `<span class="when"><time datetime="${esc(iso)}">${esc(abs(iso, zone))}</time> · ${relTag(iso)}</span>` : "";
  // One timer updates every relative time on the page.
  setInterval(() => {
    const now = Date.now();
    for (const t of document.querySelectorAll("time.rel")) t.textContent = rel(t.getAttribute("datetime"), now);
  }, 1000);

  const pct = (x) => (x === null || x === undefined ? "–" : (Math.round(x * 10) / 10).toString() + "%");
  const STATE_LABEL = {
    pending: "pending", waiting_for_window: "waiting for window", waiting_for_checks: "waiting for checks",
    applying: "applying", baking: "baking", awaiting_approval: "awaiting approval", paused: "paused",
    rolling_back: "rolling back", rolled_back: "rolled back", aborted: "aborted", succeeded: "succeeded", failed: "failed",
  };
  const stateTag = (s) => `<span class="state s-${esc(s)}" data-state="${esc(s)}">${esc(STATE_LABEL[s] || s)}</span>`;

  function stepText(s) {
    if (!s) return "";
    switch (s.type) {
      case "set_weight": return `set weight ${s.weight}%`;
      case "bake":
        if (s.sessions !== undefined && s.sessions !== null) return `bake ${s.sessions} ${s.segment || ""} trading day${s.sessions === 1 ? "" : "s"}`;
        if (s.duration_seconds !== undefined) return `bake ${dur(s.duration_seconds)}`;
        return "bake";
      case "approval": return `approval (${s.min || 1} approver${(s.min || 1) === 1 ? "" : "s"})`;
      case "pause": return "pause until resumed";
      default: return s.type;
    }
  }
  function dur(sec) {
    const d = Math.floor(sec / 86400), h = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60);
    if (d) return h ? `${d} d ${h} h` : `${d} d`;
    // Under a minute (a demo's 15 s bake): seconds, never "0 m".
    if (!h && !m) return `${Math.round(sec)} s`;
    return h && m ? `${h} h ${m} m` : h ? `${h} h` : `${m} m`;
  }

  // The canary share as a bar: confirmed filled, desired lighter behind
  // it, each endpoint's observed share as a tick (only when they differ).
  function bar(r) {
    const c = r.canary_weight || 0, d = r.desired_weight || 0;
    const obs = Object.values(r.observed || {});
    const w = (x) => Math.max(0, Math.min(100, Math.round(x)));
    // Spans sized by classes (.w0–.w100, .l0–.l100): the CSP allows no
    // inline styles, and a thousand of these lay out faster than SVG.
    let h = `<span class="bar" aria-hidden="true">`;
    if (d > c) h += `<span class="desired w${w(d)}"></span>`;
    h += `<span class="confirmed w${w(c)}"></span>`;
    const odd = obs.filter((o) => Math.abs(o - c) >= 0.5);
    for (const o of odd) h += `<span class="observed l${w(o)}"></span>`;
    h += "</span>";
    let text = pct(c);
    if (d !== c) text += ` → ${pct(d)}`;
    if (odd.length) text += ` (observed ${odd.map(pct).join(", ")})`;
    const label = `confirmed ${pct(c)}, desired ${pct(d)}` + (obs.length ? `, observed ${obs.map(pct).join(", ")}` : "");
    return `<div class="share" role="img" aria-label="${esc(label)}">${h}<span class="pct">${esc(text)}</span></div>`;
  }

  function health(list) {
    if (!list || !list.length) return `<span class="muted small">no checks</span>`;
    return `<span class="dots">${list
      .map((c) => {
        const v = c.failure_streak > 0 ? "fail" : c.last || "none";
        const label = v === "none" ? "no result yet" : v;
        return `<span class="dot ${esc(v)}" title="${esc(c.name)}: ${esc(label)}">${esc(c.name)}: ${esc(label)}</span>`;
      })
      .join("")}</span>`;
  }

  // ---- API ----------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET") headers["X-CSRF-Token"] = ME.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
    } catch (e) {
      return { ok: false, status: 0, data: null, message: "the server did not answer (" + e.message + ")" };
    }
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401 && path !== "/api/v1/session") {
      location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
    }
    const message = data && data.error ? data.error.message : r.ok ? "" : `HTTP ${r.status}`;
    const code = data && data.error ? data.error.code : null;
    return { ok: r.ok, status: r.status, data, message, code };
  }

  function toast(text, bad) {
    const t = document.createElement("div");
    t.className = "toast" + (bad ? " bad" : "");
    t.setAttribute("role", bad ? "alert" : "status");
    t.textContent = text;
    document.body.appendChild(t);
    setTimeout(() => t.remove(), bad ? 8000 : 3500);
  }

  // ---- live updates -------------------------------------------------------

  // EventSource reconnects by itself (sending Last-Event-ID) after a broken
  // stream; after an error answer (the server down behind a proxy, a 5xx)
  // it gives up, so then we open a new one from the last id we saw.
  function live(onEvent, onOpen) {
    let es = null, lastId = null, lost = false, wait = 1000;
    const conn = $("conn"), ind = $("live");
    function state(on, text) {
      ind.textContent = text;
      ind.className = "live " + (on ? "on" : "off");
    }
    function open() {
      es = new EventSource("/api/v1/events" + (lastId ? "?after=" + encodeURIComponent(lastId) : ""));
      es.onopen = () => {
        wait = 1000;
        state(true, "live");
        if (lost) {
          lost = false;
          conn.textContent = "Live updates resumed.";
          setTimeout(() => { if (!lost) conn.hidden = true; }, 1500);
        }
        onOpen();
      };
      es.onmessage = (m) => {
        if (m.lastEventId) lastId = m.lastEventId;
        let ev = null;
        try { ev = JSON.parse(m.data); } catch (_) { return; }
        onEvent(ev);
      };
      es.onerror = () => {
        lost = true;
        state(false, "offline");
        conn.hidden = false;
        conn.textContent = "Live updates lost — reconnecting… (this page may be out of date)";
        if (es.readyState === EventSource.CLOSED) {
          es.close();
          setTimeout(async () => {
            // A session that ended sends the person to sign in again.
            const s = await api("GET", "/api/v1/session");
            if (s.status === 401) location.assign("/login?next=" + encodeURIComponent(location.pathname));
            open();
          }, wait);
          wait = Math.min(wait * 2, 15000);
        }
      };
    }
    open();
  }

  // Reload after events, at most every 300 ms, never two loads at once.
  function debounced(load) {
    let timer = null, running = false, again = false;
    async function run() {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      try { await load(); } finally {
        running = false;
        if (again) { again = false; schedule(); }
      }
    }
    function schedule() { if (!timer) timer = setTimeout(run, 300); }
    return { now: run, schedule };
  }

  // ---- dialogs and actions ------------------------------------------------

  // Ask, then run: the dialog stays open until the server accepts, and a
  // refusal shows the server's own reason in it.
  function ask({ title, body, reason, reasonRequired, ok, okClass, confirmName, run }) {
    const dlg = $("dialog"), err = $("dialog-error"), okb = $("dialog-ok"), rs = $("dialog-reason");
    $("dialog-title").textContent = title;
    $("dialog-body").innerHTML = body;
    $("dialog-reason-label").textContent = reason || "Reason";
    $("dialog-reason-label").hidden = !reason;
    rs.hidden = !reason;
    rs.value = "";
    // Our own check (below) says why a reason is needed; the browser's
    // bubble would not.
    rs.setAttribute("aria-required", reasonRequired ? "true" : "false");
    err.hidden = true;
    okb.textContent = ok;
    okb.className = okClass || "primary";
    okb.disabled = false;
    const nameInput = $("confirm-name");
    const gate = () => { if (nameInput) okb.disabled = nameInput.value.trim() !== confirmName; };
    if (nameInput) { nameInput.addEventListener("input", gate); gate(); }
    $("dialog-form").onsubmit = async (e) => {
      e.preventDefault();
      if (reasonRequired && !rs.value.trim()) {
        err.textContent = "Say why: the reason goes into the audit log and the notification.";
        err.hidden = false;
        rs.focus();
        return;
      }
      okb.disabled = true;
      const res = await run(rs.value.trim());
      okb.disabled = false;
      if (res.ok) {
        dlg.close();
        refreshAll();
      } else {
        err.textContent = `Refused (${res.code || res.status}): ${res.message}`;
        err.hidden = false;
      }
    };
    $("dialog-cancel").onclick = () => dlg.close();
    dlg.showModal();
    (nameInput || (reason ? rs : okb)).focus();
  }

  let refreshAll = () => {};

  async function approve(id) {
    const d = await api("GET", `/api/v1/rollouts/${encodeURIComponent(id)}`);
    if (!d.ok) return toast(d.message, true);
    const r = d.data, a = r.approval;
    if (!a) return toast(`${r.name} is not waiting for an approval any more (${STATE_LABEL[r.state] || r.state}).`, true);
    const zone = r.timezone || IST;
    const next = ((r.plan && r.plan.steps) || []).find((s) => s.index > a.step && s.type === "set_weight");
    let effect = "The rollout continues with its next step.";
    if (next) {
      effect = `Next: <strong>${pct(r.canary_weight)} → ${next.weight}%</strong>` +
        (next.at ? ` at <strong>${esc(abs(next.at, zone))}</strong> (${esc(rel(next.at))}, projected)` : " — no permitted window before the calendar's coverage ends");
    }
    const more = a.need - a.have - 1;
    const mine = r.separation_of_duties && (ME.principal === r.principal || ME.principal === r.initiator);
    const body = `<p>Approve <strong>step ${a.step}</strong> of <strong>${esc(r.name)}</strong> (revision <code>${esc(r.revision)}</code>, started by ${esc(r.initiator)}).</p>
      <p>${effect}</p>
      <p class="muted small">${a.have} of ${a.need} approval${a.need === 1 ? "" : "s"} so far${more > 0 ? `; ${more} more needed after yours` : ""}. Your approval names step ${a.step} and spec <code>${esc(a.spec_hash.slice(0, 12))}</code>, so it cannot approve a later step by mistake.</p>
      ${mine ? `<p class="warning">You started this rollout; under separation of duties another approver must approve it.</p>` : ""}`;
    ask({
      title: `Approve ${r.name}`,
      body,
      reason: "Comment (optional)",
      ok: "Approve",
      run: (comment) => api("POST", `/api/v1/rollouts/${encodeURIComponent(r.id)}/approve`, { step: a.step, spec_hash: a.spec_hash, comment: comment || undefined }),
    });
  }

  function pause(id, name) {
    ask({
      title: `Pause ${name}`,
      body: `<p>The rollout holds at its current share; checks keep running. Resume it to continue.</p>`,
      reason: "Reason", ok: "Pause",
      run: (reason) => api("POST", `/api/v1/rollouts/${encodeURIComponent(id)}/pause`, { reason: reason || undefined }),
    });
  }

  function resume(id, name, override) {
    ask({
      title: override ? `Resume ${name}, overriding checks` : `Resume ${name}`,
      body: override
        ? `<p class="warning"><strong>Overriding checks</strong> lets the next raise happen without the passes the checks require. Use it only for a genuine no-data deadlock; it is audited with your reason.</p>`
        : `<p>The rollout continues from where it stopped; raises still wait for a permitted window.</p>`,
      reason: "Reason", reasonRequired: override, ok: override ? "Resume, overriding checks" : "Resume", okClass: override ? "danger" : "primary",
      run: (reason) => api("POST", `/api/v1/rollouts/${encodeURIComponent(id)}/resume`, { override_checks: !!override, reason: reason || undefined }),
    });
  }

  function abort(id, name) {
    ask({
      title: `Abort ${name}?`,
      body: `<p class="warning">Aborting <strong>${esc(name)}</strong> takes canary traffic to <strong>0% now</strong>, drains the canary servers and ends the rollout. It cannot be undone; start again to retry.</p>
        <label for="confirm-name">Type <strong>${esc(name)}</strong> to confirm</label>
        <input id="confirm-name" class="confirm-name" autocomplete="off" spellcheck="false">`,
      reason: "Reason", reasonRequired: true, ok: "Abort: canary to 0% now", okClass: "danger", confirmName: name,
      run: (reason) => api("POST", `/api/v1/rollouts/${encodeURIComponent(id)}/abort`, { reason }),
    });
  }

  function freeze(on) {
    ask({
      title: on ? "Freeze all raises" : "Lift the global freeze",
      body: on
        ? `<p class="warning">While the freeze is on, no rollout raises its canary share anywhere. Decreases (rollback, abort) continue.</p>`
        : `<p>Rollouts may raise again, each in its own permitted windows.</p>`,
      reason: "Reason", reasonRequired: true, ok: on ? "Freeze" : "Lift freeze", okClass: on ? "danger" : "primary",
      run: (reason) => api("POST", "/api/v1/freeze", { on, reason }),
    });
  }

  document.addEventListener("click", (e) => {
    const b = e.target.closest("[data-act]");
    if (!b) return;
    const { act, id, name } = b.dataset;
    if (act === "approve") approve(id);
    else if (act === "pause") pause(id, name);
    else if (act === "resume") resume(id, name, false);
    else if (act === "override") resume(id, name, true);
    else if (act === "abort") abort(id, name);
    else if (act === "freeze-on") freeze(true);
    else if (act === "freeze-off") freeze(false);
  });

  $("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/api/v1/session");
    location.assign("/login");
  });

  // Which actions this person may take on a rollout (the server decides;
  // buttons a role may not use are not shown at all).
  function actions(r) {
    const active = r.active;
    if (!active) return "";
    const a = (act, label, cls) =>
      `<button type="button" class="${cls || ""}" data-act="${act}" data-id="${esc(r.id)}" data-name="${esc(r.name)}">${label}</button>`;
    let h = "";
    if (CAN.approve && r.state === "awaiting_approval") h += a("approve", "Approve…", "primary");
    if (CAN.deploy && r.state !== "paused" && r.state !== "rolling_back") h += a("pause", "Pause…");
    if (CAN.deploy && r.state === "paused") h += a("resume", "Resume…");
    if (CAN.override && (r.state === "paused" || r.state === "waiting_for_checks")) h += a("override", "Resume, override checks…");
    if (CAN.deploy && r.state !== "rolling_back") h += a("abort", "Abort…", "danger");
    return h ? `<div class="actions" id="actions">${h}</div>` : "";
  }

  // ---- needs attention ----------------------------------------------------

  const DAY = 86400;
  function attention(rollouts, freezeState, ready) {
    const items = [];
    const link = (r) => `<a href="/rollouts/${encodeURIComponent(r.id)}">${esc(r.name)}</a> <span class="rev">${esc(r.revision)}</span>`;
    if (freezeState && freezeState.on) {
      items.push({ kind: "freeze", label: "Global freeze", html: `No raises anywhere: ${esc(freezeState.reason)} — ${esc(freezeState.by)}, ${when(freezeState.since)}` });
    }
    for (const c of (ready && ready.calendars) || []) {
      if (c.coverage_remaining_seconds < 45 * DAY) {
        const days = Math.max(0, Math.floor(c.coverage_remaining_seconds / DAY));
        items.push({ kind: "coverage", label: "Calendar coverage", html: `Calendar <strong>${esc(c.calendar)}</strong> ends in ${days} day${days === 1 ? "" : "s"}: after it every instant is blocked. Extend the calendar.` });
      }
    }
    for (const p of (ready && ready.problems) || []) {
      if (/clock/.test(p.code)) items.push({ kind: "clock", label: "Clock", html: `${esc(p.message)} — no raises until it is fixed.` });
    }

    for (const r of rollouts) {
      if (!r.active) continue;
      if (r.pass_failing) {
        items.push({ kind: "cannot-act", label: "Controller cannot act", id: r.id, html: `${link(r)}: its last ${r.pass_failing.passes} controller passes failed (since ${when(r.pass_failing.since, r.timezone)}), so nothing is done for it — not even an abort: ${esc(r.pass_failing.error)}` });
      }
      if (r.state === "awaiting_approval" && CAN.approve) {
        const initiator = r.separation_of_duties && (ME.principal === r.principal || ME.principal === r.initiator);
        const done = (r.approved_by || []).includes(ME.principal);
        if (!initiator && !done) {
          const s = r.next_step ? `step ${r.next_step.index}` : "a step";
          items.push({ kind: "approval", label: "Your approval", id: r.id, html: `${link(r)} waits for your approval of ${s}.`,
            action: `<button type="button" class="primary" data-act="approve" data-id="${esc(r.id)}">Approve…</button>` });
        }
      }
      if (r.state === "paused") {
        const drift = r.paused_cause === "drift";
        items.push({ kind: drift ? "drift" : "paused", label: drift ? "Drift" : "Paused", id: r.id, html: `${link(r)} ${esc(r.waiting_for || "is paused")}` });
      }
      const failing = (r.health || []).filter((c) => c.failure_streak > 0 || c.last === "fail");
      if (failing.length) {
        items.push({ kind: "failing", label: "Failing checks", id: r.id, html: `${link(r)}: ${failing.map((c) => `<strong>${esc(c.name)}</strong> failed ${c.failure_streak}×`).join(", ")}` });
      }
      if (r.raise_expired_at && (!r.confirmed_at || r.raise_expired_at > r.confirmed_at)) {
        items.push({ kind: "expired", label: "Raise expired", id: r.id, html: `${link(r)}: a raise was not confirmed before its window closed (${when(r.raise_expired_at, r.timezone)}). ${esc(r.waiting_for || "")}` });
      }
    }
    const ul = $("attention");
    if (!items.length) {
      ul.innerHTML = `<li class="attn none">Nothing needs you right now.</li>`;
      return;
    }
    ul.innerHTML = items
      .map((i) => `<li class="attn k-${i.kind}" data-kind="${i.kind}"${i.id ? ` data-rollout="${esc(i.id)}"` : ""}><span class="kind">${esc(i.label)}</span><span class="what">${i.html}</span><span>${i.action || ""}</span></li>`)
      .join("");
  }

  function banners(freezeState) {
    const el = $("banners");
    let h = "";
    if (CAN.admin) {
      const tools = $("admin-tools");
      tools.innerHTML = freezeState && freezeState.on
        ? `<button type="button" data-act="freeze-off">Lift global freeze…</button>`
        : `<button type="button" class="danger" data-act="freeze-on">Freeze all raises…</button>`;
    }
    el.innerHTML = h;
  }

  // ---- the rollouts page --------------------------------------------------

  function row(r) {
    const zone = r.timezone || IST;
    const next = !r.active ? `<span class="muted">ended ${relTag(r.updated_at)}</span>` : r.next_step ? esc(stepText(r.next_step)) : "";
    const at = r.active && r.next_window ? `<br>${when(r.next_window, zone)}` : "";
    return `<div class="rrow${r.active ? "" : " done"}" role="row" data-id="${esc(r.id)}" data-state="${esc(r.state)}">` +
      `<div role="cell" data-label="Rollout"><a href="/rollouts/${encodeURIComponent(r.id)}">${esc(r.name)}</a><br><span class="rev">${esc(r.revision)}</span></div>` +
      `<div role="cell" data-label="State">${stateTag(r.state)}</div>` +
      `<div role="cell" data-label="Canary">${bar(r)}</div>` +
      `<div role="cell" data-label="Next">${next}${at}</div>` +
      `<div role="cell" data-label="Waiting for">${esc(r.waiting_for || "")}</div>` +
      `<div role="cell" data-label="Checks">${health(r.health)}</div>` +
      `<div role="cell" data-label="Initiator">${esc(r.initiator)}</div></div>`;
  }

  function renderRollouts(list) {
    const t0 = performance.now();
    const only = $("only-active").checked;
    const shown = only ? list.filter((r) => r.active) : list;
    // Active first, then newest first (the API's order).
    const sorted = shown.filter((r) => r.active).concat(shown.filter((r) => !r.active));
    const html = sorted.map(row).join("");
    const t1 = performance.now();
    $("rollouts").innerHTML = html;
    $("empty").hidden = sorted.length > 0;
    $("count").textContent = `${sorted.filter((r) => r.active).length} active, ${sorted.length} shown`;
    const t2 = performance.now();
    void $("rollouts").offsetHeight; // include layout in the measurement
    const t3 = performance.now();
    document.body.dataset.renderMs = (t3 - t0).toFixed(1);
    document.body.dataset.renderParts = `build ${(t1 - t0).toFixed(1)} dom ${(t2 - t1).toFixed(1)} layout ${(t3 - t2).toFixed(1)}`;
    document.body.dataset.rows = String(sorted.length);
  }

  function rolloutsPage() {
    let last = [], lastKey = "";
    $("only-active").addEventListener("change", () => renderRollouts(last));
    const loader = debounced(async () => {
      const [list, fr, ready] = await Promise.all([
        api("GET", "/api/v1/rollouts?limit=1000"),
        api("GET", "/api/v1/freeze"),
        fetch("/readyz", { credentials: "same-origin" }).then((r) => r.json()).catch(() => null),
      ]);
      if (!list.ok) return toast("Could not load rollouts: " + list.message, true);
      const f = fr.ok ? fr.data : null;
      const key = JSON.stringify([list.data, f, ready]);
      if (key === lastKey) return;
      lastKey = key;
      last = list.data;
      banners(f);
      attention(last, f, ready);
      renderRollouts(last);
      document.body.dataset.loaded = String(Date.now());
    });
    refreshAll = loader.schedule;
    live(() => loader.schedule(), () => loader.schedule());
    setInterval(() => { if (!document.hidden) loader.schedule(); }, 30000);
    loader.now();
  }

  // ---- one rollout ----------------------------------------------------------

  // The k-th done step of a kind ends with the k-th event of that kind.
  function doneTimes(spec, events) {
    const ends = { set_weight: "weight_confirmed", bake: "bake_completed", approval: "step_approved", pause: "resumed" };
    const seen = {}, out = {};
    const byKind = {};
    for (const e of events) (byKind[e.kind] = byKind[e.kind] || []).push(e.at);
    for (const s of spec) {
      const k = ends[s.type];
      seen[k] = (seen[k] || 0) + 1;
      const list = byKind[k] || [];
      out[s.index] = list[seen[k] - 1];
    }
    return out;
  }

  function spark(c) {
    const h = (c.history || []).filter((p) => typeof p.value === "number");
    if (h.length < 2) return `<span class="muted small">${h.length ? "1 value so far" : "no values yet"}</span>`;
    const thr = c.threshold || {};
    const vals = h.map((p) => p.value);
    for (const t of [thr.max, thr.min]) if (typeof t === "number") vals.push(t);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (hi === lo) { hi += 1; lo -= 1; }
    const W = 160, H = 36, pad = 3;
    const x = (i) => (i / (h.length - 1)) * W;
    const y = (v) => H - pad - ((v - lo) / (hi - lo)) * (H - 2 * pad);
    const pts = h.map((p, i) => `${x(i).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
    let s = `<svg class="spark" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${esc(c.name)}: last ${h.length} values">`;
    for (const t of [thr.max, thr.min]) if (typeof t === "number") s += `<line class="thr" x1="0" x2="${W}" y1="${y(t).toFixed(1)}" y2="${y(t).toFixed(1)}"/>`;
    s += `<polyline class="line" points="${pts}"/>`;
    h.forEach((p, i) => { if (p.verdict === "fail") s += `<circle class="pt-fail" cx="${x(i).toFixed(1)}" cy="${y(p.value).toFixed(1)}" r="2"/>`; });
    return s + "</svg>";
  }

  function thresholdText(t) {
    if (!t) return "";
    const parts = [];
    if (typeof t.min === "number") parts.push(`≥ ${t.min}`);
    if (typeof t.max === "number") parts.push(`≤ ${t.max}`);
    if (t.baseline) {
      if (typeof t.baseline.min_ratio === "number") parts.push(`ratio ≥ ${t.baseline.min_ratio}`);
      if (typeof t.baseline.max_ratio === "number") parts.push(`ratio ≤ ${t.baseline.max_ratio}`);
    }
    return parts.join(", ");
  }

  function fmtVal(v) {
    if (v === null || v === undefined) return "no data";
    if (typeof v !== "number") return String(v);
    return Math.abs(v) >= 1000 || v === 0 ? String(v) : v.toPrecision(4).replace(/\.?0+$/, "");
  }

  function renderDetail(r, events) {
    const zone = r.timezone || IST;
    const spec = r.spec_steps || [];
    const plan = {};
    for (const s of (r.plan && r.plan.steps) || []) plan[s.index] = s;
    const done = doneTimes(spec, events);
    const timeline = spec
      .map((s) => {
        const cls = s.index < r.step ? "done" : s.index === r.step && r.active ? "current" : "";
        const mark = cls === "done" ? "✓" : cls === "current" ? "▶" : "·";
        let t = "";
        if (cls === "done") t = done[s.index] ? `done ${when(done[s.index], zone)}` : "done";
        else if (cls === "current") t = `now: ${esc(r.waiting_for || STATE_LABEL[r.state])}` + (r.next_window ? ` — ${when(r.next_window, zone)}` : "") + (r.next_window_after ? `, <span class="wait-rule">when ${esc(r.next_window_after)}</span>` : "");
        if (r.active && plan[s.index] && cls !== "done") {
          const p = plan[s.index];
          const proj = p.type === "bake" ? (p.start && p.until ? `${when(p.start, zone)} → ${esc(abs(p.until, zone))}` : null) : p.at ? when(p.at, zone) : null;
          t += (t ? "<br>" : "") + `<span class="muted small">projected: </span>` + (proj || `<span class="muted small">not before the calendar's coverage ends${r.plan.frozen ? " (global freeze on)" : ""}</span>`) +
            (proj && p.waits_for ? ` <span class="muted small wait-rule">(waits until ${esc(p.waits_for)})</span>` : "");
        }
        if (!r.active && cls !== "done") t = `<span class="muted small">not reached</span>`;
        return `<li class="${cls}" data-step="${s.index}"><span class="mark">${mark}</span><span class="idx">${s.index}</span><span><strong>${esc(stepText(s))}</strong><br>${t}</span></li>`;
      })
      .join("");

    const obs = r.weights ? r.weights.observed || {} : {};
    const eps = Object.keys(obs);
    const weights = `<div class="table-wrap"><table><thead><tr><th>Endpoint</th><th>Desired</th><th>Confirmed</th><th>Observed</th></tr></thead><tbody>${
      (eps.length ? eps : ["(no reading yet)"]).map((e) => `<tr><td><code>${esc(e)}</code></td><td class="num">${pct(r.desired_weight)}</td><td class="num">${pct(r.canary_weight)}</td><td class="num">${e in obs ? pct(obs[e]) : "–"}</td></tr>`).join("")
    }</tbody></table></div>` +
      (r.write ? `<p class="small">Write in flight: ${esc(r.write.purpose)} to ${r.write.share}%` + (r.write.deadline ? ` — <strong>raise deadline</strong> ${when(r.write.deadline, zone)}` : "") + (r.write.last_error ? `<br><span class="error">${esc(r.write.last_error)}</span>` : "") + `</p>` : "") +
      (r.pools ? `<p class="small muted">Canary pool <strong>${esc(r.pools.canary)}</strong> (${esc((r.pools.canary_servers || []).join(", "))}), live pool <strong>${esc(r.pools.live)}</strong> (${esc((r.pools.live_servers || []).join(", "))}).</p>` : "");

    const checks = (r.checks || []).length
      ? `<div class="table-wrap"><table><thead><tr><th>Check</th><th>Latest</th><th>Threshold</th><th>Evidence</th><th>Recent values</th></tr></thead><tbody>${r.checks
          .map((c) => {
            const l = c.latest;
            const v = l ? `<span class="dot ${esc(l.verdict)}">${esc(l.verdict)}</span> ${esc(fmtVal(l.value))}<br><span class="muted small">${esc(abs(l.at, zone))}${l.in_session ? " · in session" : ""}</span>${l.reason ? `<br><span class="small">${esc(l.reason)}</span>` : ""}` : `<span class="muted">not evaluated yet</span>`;
            const ev = c.min_passes ? `${Math.min(c.passes, c.min_passes)} of ${c.min_passes} passes` : `${c.passes} passes`;
            return `<tr data-check="${esc(c.name)}"><td><strong>${esc(c.name)}</strong></td><td>${v}</td><td>${esc(thresholdText(c.threshold))}</td><td>${ev}<br><span class="muted small">fail streak ${c.failure_streak}${c.threshold ? " of " + c.threshold.failure_limit : ""}, inconclusive ${c.inconclusive_streak}</span></td><td>${spark(c)}</td></tr>`;
          })
          .join("")}</tbody></table></div>`
      : `<p class="muted">This spec has no checks: it advances on time and approvals alone.</p>`;

    const approvals = (r.approvals || []).length
      ? `<ul>${r.approvals.map((a) => `<li${a.void ? ' class="muted"' : ""}><strong>${esc(a.principal)}</strong> approved step ${a.step} ${when(a.at, zone)}${a.comment ? ` — “${esc(a.comment)}”` : ""}${a.void ? " (void)" : ""}</li>`).join("")}</ul>`
      : `<p class="muted">No approvals yet.</p>`;
    const need = r.approval ? `<p>Waiting at step ${r.approval.step}: ${r.approval.have} of ${r.approval.need} approval${r.approval.need === 1 ? "" : "s"}${r.approval.separation_of_duties ? "; the initiator cannot approve" : ""}.</p>` : "";

    const audit = events.slice().reverse();
    const shownAudit = audit.slice(0, 300);
    const auditRows = shownAudit
      .map((e) => `<tr><td>${esc(abs(e.at, zone))}<br>${relTag(e.at)}</td><td><code>${esc(e.kind)}</code></td><td>${esc(e.principal || "controller")}</td><td class="why">${esc(e.why)}${e.input && typeof e.input === "object" && Object.keys(e.input).length ? `<details><summary class="small">input</summary><pre>${esc(JSON.stringify(e.input, null, 1))}</pre></details>` : ""}</td><td>${esc(e.state)}</td><td class="small">${esc(e.calendar ? e.calendar + " " + (e.calendar_version || "") : "")}${e.clock_skew_ms !== null && e.clock_skew_ms !== undefined ? `<br>skew ${e.clock_skew_ms} ms` : ""}</td></tr>`)
      .join("");

    $("detail").innerHTML = `
      <div class="card">
        <h1>${esc(r.name)} <span class="rev">${esc(r.revision)}</span> ${stateTag(r.state)}</h1>
        <dl class="kv">
          <dt>Rollout</dt><dd><code>${esc(r.id)}</code></dd>
          <dt>Started</dt><dd>by ${esc(r.initiator)}${r.principal !== r.initiator ? ` (token of ${esc(r.principal)})` : ""}, ${when(r.created_at, zone)}</dd>
          <dt>Target</dt><dd><code>${esc(r.target)}</code></dd>
          <dt>Calendar</dt><dd>${r.calendar ? esc(r.calendar.name + " " + r.calendar.version) : "–"}; times in ${esc(zone === IST ? "IST (Asia/Kolkata)" : zone)}</dd>
          <dt>Canary share</dt><dd>${bar(r)}</dd>
        </dl>
        <p class="waiting" id="waiting">${r.waiting_for ? esc(r.waiting_for) : ""}${r.active && r.next_window ? ` — ${when(r.next_window, zone)}` : ""}${r.active && r.next_window_after ? `, when ${esc(r.next_window_after)}` : ""}</p>
        ${r.paused ? `<p>Paused (${esc(r.paused.cause)}) by ${esc(r.paused.by)} ${when(r.paused.at, zone)}: ${esc(r.paused.reason)}</p>` : ""}
        ${r.override_checks ? `<p class="warning">Checks overridden for the next raise: ${esc(r.override_checks)}</p>` : ""}
        ${actions(r)}
      </div>
      <div class="grid2">
        <section class="card" aria-labelledby="t-steps"><h2 id="t-steps">Steps</h2><ol class="timeline">${timeline}</ol>
          ${r.plan && r.plan.complete_at ? `<p class="small">Projected to complete ${when(r.plan.complete_at, zone)} (if every check passes and approvals come at once).</p>` : ""}</section>
        <section class="card" aria-labelledby="t-weights"><h2 id="t-weights">Weights</h2>${weights}</section>
      </div>
      ${windowsCard(r, zone)}
      <section class="card" aria-labelledby="t-checks"><h2 id="t-checks">Checks</h2>${checks}</section>
      <section class="card" aria-labelledby="t-appr"><h2 id="t-appr">Approvals</h2>${need}${approvals}</section>
      <section class="card" aria-labelledby="t-audit"><h2 id="t-audit">Audit log <span class="muted small">(newest first${audit.length > shownAudit.length ? `, latest ${shownAudit.length} of ${audit.length}` : ""})</span></h2>
        <div class="table-wrap"><table class="audit"><thead><tr><th>When</th><th>Event</th><th>By</th><th>Why</th><th>State</th><th>Calendar</th></tr></thead><tbody>${auditRows}</tbody></table></div></section>`;
    $("detail").setAttribute("aria-busy", "false");
    document.title = `${r.name} ${r.revision} · muhurat`;
  }

  // The spec's next permitted windows and what closes each: why it waits.
  function windowsCard(r, zone) {
    if (!r.active || !Array.isArray(r.windows)) return "";
    const list = r.windows.slice(0, 8);
    const items = list.length
      ? list.map((w) => `<li data-window><strong>${esc(abs(w.start, zone))}</strong> → ${esc(abs(w.end, zone))} <span class="muted">(${esc(dur((new Date(w.end) - new Date(w.start)) / 1000))})</span> — ${w.opens_after ? `<span class="muted small">opens when ${esc(w.opens_after)};</span> ` : ""}until ${esc(w.closed_by)}${w.long_enough ? "" : ` <span class="muted small">[shorter than min_remaining: no raise starts]</span>`}</li>`).join("")
      : `<li>No permitted window in the next 14 days${r.plan && r.plan.frozen ? " (the global freeze is on)" : ""}.</li>`;
    return `<section class="card" aria-labelledby="t-win"><h2 id="t-win">Permitted windows <span class="muted small">(next 14 days${r.windows.length > list.length ? `, first ${list.length} of ${r.windows.length}` : ""}; <a href="/calendar?rollout=${encodeURIComponent(r.id)}">on the calendar</a>)</span></h2><ul class="windows">${items}</ul></section>`;
  }

  function rolloutPage() {
    const id = decodeURIComponent(location.pathname.replace(/^\/rollouts\//, ""));
    let rid = id, lastKey = "";
    const loader = debounced(async () => {
      const [d, ev] = await Promise.all([
        api("GET", `/api/v1/rollouts/${encodeURIComponent(id)}`),
        api("GET", `/api/v1/rollouts/${encodeURIComponent(id)}/events?limit=10000`),
      ]);
      if (!d.ok) {
        $("detail").innerHTML = `<p class="error">${esc(d.message)}</p><p><a href="/">All rollouts</a></p>`;
        return;
      }
      rid = d.data.id;
      // Re-render only what changed: a button must not be replaced under
      // the pointer of someone about to click it.
      const events = ev.ok ? ev.data : [];
      // (The plan and windows start "now", so they change every second
      // without anything happening: left out of the comparison.)
      const key = JSON.stringify(Object.assign({}, d.data, { plan: null, windows: null })) + "|" + events.length + "|" + (events.length ? events[events.length - 1].seq : 0);
      if (key === lastKey) return;
      lastKey = key;
      renderDetail(d.data, events);
      document.body.dataset.loaded = String(Date.now());
    });
    refreshAll = loader.schedule;
    live((e) => { if (!e.rollout_id || e.rollout_id === rid) loader.schedule(); }, () => loader.schedule());
    // Observed shares are live readings that do not always make an event:
    // refresh now and then while the page is visible.
    setInterval(() => { if (!document.hidden) loader.schedule(); }, 10000);
    loader.now();
  }

  // ---- calendar -------------------------------------------------------------

  // Coded against GET /api/v1/calendars and /api/v1/calendars/{name}/days
  // (DESIGN §7). Field names are read tolerantly: sessions as local
  // "HH:MM" (open/close, from/to) or as instants (start/end).
  const DAYS = 14;
  function minutes(v, date, zone) {
    if (v === null || v === undefined) return null;
    if (/^\d{1,2}:\d{2}$/.test(v)) { const [h, m] = v.split(":").map(Number); return h * 60 + m; }
    const d = new Date(v);
    if (isNaN(d)) return null;
    const parts = Object.fromEntries(fmt(zone, true).formatToParts(d).map((p) => [p.type, p.value]));
    const local = new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).format(d);
    let m = Number(parts.hour) * 60 + Number(parts.minute);
    if (local < date) m = 0; else if (local > date) m = 1440;
    return m;
  }
  const span = (x) => ({ from: x.open ?? x.from ?? x.start, to: x.close ?? x.to ?? x.end });
  const asList = (x) => (x === null || x === undefined ? [] : Array.isArray(x) ? x : [x]);

  function segSessions(day) {
    const s = day.segments || day.sessions || {};
    if (Array.isArray(s)) return s.map((x) => [x.segment || x.name, asList(x.sessions)]);
    return Object.entries(s).map(([k, v]) => [k, asList(v && v.sessions ? v.sessions : v)]);
  }

  function renderCalendar(cal, days, zone, freezeState, permitted) {
    const segNames = new Set();
    for (const d of days) for (const [n] of segSessions(d)) segNames.add(n);
    const ticks = [0, 3, 6, 9, 12, 15, 18, 21, 24].map((h) => `<span>${String(h).padStart(2, "0")}</span>`).join("");
    const rect = (cls, a, b, title) => (a === null || b === null || b <= a ? "" : `<rect class="${cls}" x="${a}" width="${b - a}" y="0" height="14"><title>${esc(title)}</title></rect>`);
    const html = days.map((d, di) => {
      const date = d.date;
      const dt = new Date(date + "T12:00:00Z");
      const weekend = [0, 6].includes(dt.getUTCDay());
      const hol = asList(d.holiday || d.holidays);
      const spec = asList(d.special_session || d.special_sessions || d.specials);
      const bl = asList(d.blackouts || d.blackout);
      const prov = d.provisional === true;
      const tags = [
        ...hol.map((h) => `<span class="tag holiday" data-kind="holiday">Holiday: ${esc(h.name)}${h.closed ? ` (closed: ${esc(Array.isArray(h.closed) ? h.closed.join(", ") || "none" : h.closed)})` : ""}${src(h)}</span>`),
        ...spec.map((s) => `<span class="tag special" data-kind="special">Special session: ${esc(s.name)}${src(s)}</span>`),
        ...bl.map((b) => `<span class="tag blackout" data-kind="blackout">Blackout ${esc(span(b).from || "")}–${esc(span(b).to || "")}: ${esc(b.name)}${src(b)}</span>`),
        prov ? `<span class="tag provisional">provisional data</span>` : "",
        d.in_coverage === false || d.covered === false ? `<span class="tag blackout">outside coverage: blocked</span>` : "",
      ].join(" ");
      const specialSegs = new Set();
      for (const s of spec) for (const k of Object.keys(s.sessions || {})) specialSegs.add(k);
      const segs = [...segNames].map((n) => {
        const list = (segSessions(d).find(([k]) => k === n) || [n, []])[1];
        let svg = `<svg class="strip-svg" viewBox="0 0 1440 14" preserveAspectRatio="none" aria-hidden="true"><rect class="bg" width="1440" height="14"/>`;
        const texts = [];
        for (const s of list) {
          const sp = span(s);
          const a = minutes(sp.from, date, zone), b = minutes(sp.to, date, zone);
          // The chosen rollout's guard around the sessions of its segments.
          const g = permitted && permitted.guard && permitted.guard.segments.includes(n) ? permitted.guard : null;
          if (g && a !== null && b !== null) {
            const before = Math.round(g.before_open_seconds / 60), after = Math.round(g.after_close_seconds / 60);
            if (before > 0) svg += rect("guard", Math.max(0, a - before), a, `guard before the ${n} session: ${before} min (${permitted.name})`);
            if (after > 0) svg += rect("guard", b, Math.min(1440, b + after), `guard after the ${n} session: ${after} min (${permitted.name})`);
          }
          const special = s.rule === "special" || specialSegs.has(n);
          svg += rect(special ? "special" : "session", a, b, `${n} ${special ? "special " : ""}session${s.rule && s.rule !== "regular" ? ` (${s.rule})` : ""}`);
          texts.push(`${fmtHM(sp.from, zone)}–${fmtHM(sp.to, zone)}`);
        }
        // Guards that cross midnight: after the previous day's session (one
        // closing at 23:30) and before the next day's (one opening at 00:15).
        const pg = permitted && permitted.guard && permitted.guard.segments.includes(n) ? permitted.guard : null;
        if (pg) {
          const sessionsOf = (day) => (day ? (segSessions(day).find(([k]) => k === n) || [n, []])[1] : []);
          const after = Math.round(pg.after_close_seconds / 60), before = Math.round(pg.before_open_seconds / 60);
          for (const s of sessionsOf(days[di - 1])) {
            const end = minutes(span(s).to, days[di - 1].date, zone);
            const spill = end === null ? 0 : end + after - 1440;
            if (spill > 0) svg += rect("guard", 0, Math.min(1440, spill), `guard after the previous day's ${n} session (${permitted.name})`);
          }
          for (const s of sessionsOf(days[di + 1])) {
            const open = minutes(span(s).from, days[di + 1].date, zone);
            const spill = open === null ? 0 : before - open;
            if (spill > 0) svg += rect("guard", Math.max(0, 1440 - spill), 1440, `guard before the next day's ${n} session (${permitted.name})`);
          }
        }
        // Blackouts block every segment, widened by the same guard.
        const bg = permitted && permitted.guard ? permitted.guard : null;
        for (const b of bl) {
          const a = minutes(span(b).from, date, zone), z = minutes(span(b).to, date, zone);
          if (bg && a !== null && z !== null) {
            svg += rect("guard", Math.max(0, a - Math.round(bg.before_open_seconds / 60)), a, `guard before the blackout (${permitted.name})`);
            svg += rect("guard", z, Math.min(1440, z + Math.round(bg.after_close_seconds / 60)), `guard after the blackout (${permitted.name})`);
          }
          svg += rect("blackout", a, z, b.name || "blackout");
        }
        svg += "</svg>";
        const segInfo = segSessions(d).find(([k]) => k === n);
        const closedByHoliday = (d.segments || []).some && (d.segments || []).some((x) => x.segment === n && x.closed_by_holiday);
        const none = closedByHoliday ? "closed (holiday)" : "no session";
        return `<div class="seg" data-segment="${esc(n)}"><span class="name">${esc(n)}</span><div class="strip">${svg}</div><span class="times">${segInfo && texts.length ? esc(texts.join(", ")) : none}</span></div>`;
      }).join("");
      let perm = "";
      if (permitted) {
        let svg = `<svg class="strip-svg" viewBox="0 0 1440 14" preserveAspectRatio="none" aria-hidden="true"><rect class="bg" width="1440" height="14"/>`;
        const texts = [];
        for (const w of permitted.windows) {
          const a = minutes(w.start, date, zone), b = minutes(w.end, date, zone);
          if (b > a) {
            svg += rect("permitted", a, b, `permitted until ${w.closed_by}`);
            texts.push(`${a === 0 ? "00:00" : fmtHM(w.start, zone)}–${b === 1440 ? "24:00" : fmtHM(w.end, zone)}`);
          }
        }
        svg += "</svg>";
        perm = `<div class="seg permitted-row" data-permitted><span class="name">permitted</span><div class="strip">${svg}</div><span class="times">${texts.length ? esc(texts.join(", ")) : "no permitted window"} <span class="muted">(${esc(permitted.name)})</span></span></div>`;
      }
      return `<article class="cal-day${weekend ? " weekend" : ""}${prov ? " provisional" : ""}" data-date="${esc(date)}"><header><strong>${esc(fmtDate(date))}</strong>${tags}</header>${segs}${perm}</article>`;
    }).join("");
    $("calendar").innerHTML = `<div class="hours"><span>${esc(zone === IST ? "IST" : zone)}</span><span class="ticks">${ticks}</span></div>${html}`;
    $("calendar").setAttribute("aria-busy", "false");
    $("cal-legend").hidden = false;
    const cov = cal.valid_until || (cal.coverage && (cal.coverage.until || cal.coverage.valid_until));
    const left = typeof cal.coverage_remaining_seconds === "number" ? Math.floor(cal.coverage_remaining_seconds / 86400) : null;
    $("cal-meta").innerHTML = `<strong>${esc(cal.name)}</strong> version ${esc(cal.version)} · times in ${esc(zone === IST ? "IST" : zone)} · coverage ${esc(cal.valid_from || (cal.coverage && cal.coverage.from) || "?")} to ${esc(cov || "?")}` +
      (left !== null ? (left < 45 ? ` <strong class="error">(${left} days left: extend it)</strong>` : ` (${left} days left)`) : "") +
      (cal.provisional_from ? ` · provisional from ${esc(cal.provisional_from)}` : "") +
      (freezeState && freezeState.on ? ` · <strong class="error">global freeze on</strong>: ${esc(freezeState.reason)}` : "");
  }
  function src(x) {
    const bits = [];
    if (x.confidence) bits.push(`confidence ${x.confidence}`);
    if (x.source) bits.push(`source: ${x.source}`);
    return bits.length ? ` <span class="small">(${esc(bits.join("; "))})</span>` : "";
  }
  function fmtHM(v, zone) {
    if (!v) return "";
    if (/^\d{1,2}:\d{2}$/.test(v)) return v;
    return fmt(zone, false).format(new Date(v));
  }
  function fmtDate(date) {
    const d = new Date(date + "T12:00:00Z");
    return new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", weekday: "short", day: "numeric", month: "short", year: "numeric" }).format(d).replace(/,/g, "");
  }
  function isoDate(d, zone) {
    return new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).format(d);
  }

  function calendarPage() {
    const pick = $("cal-pick");
    const rpick = $("cal-rollout");
    let cals = [];
    const wanted = new URLSearchParams(location.search).get("rollout");
    const loader = debounced(async () => {
      const [list, fr] = await Promise.all([api("GET", "/api/v1/calendars"), api("GET", "/api/v1/freeze")]);
      if (!list.ok) {
        const missing = list.status === 404 || list.status === 405;
        $("calendar").innerHTML = missing
          ? `<p class="error" id="cal-missing">This server does not offer the calendar API yet (GET /api/v1/calendars answered ${list.status}), so the calendar cannot be shown here.</p><p>Offline, <code>muhurat windows SPEC --days 14</code> shows the permitted windows of a spec.</p>`
          : `<p class="error">Could not load calendars: ${esc(list.message)}</p>`;
        $("calendar").setAttribute("aria-busy", "false");
        return;
      }
      cals = Array.isArray(list.data) ? list.data : list.data.calendars || [];
      if (!cals.length) { $("calendar").innerHTML = `<p class="muted">No calendar is loaded.</p>`; return; }
      if (!pick.options.length) pick.innerHTML = cals.map((c) => `<option value="${esc(c.name)}">${esc(c.name)} ${esc(c.version)}</option>`).join("");
      const cal = cals.find((c) => c.name === pick.value) || cals[0];
      const zone = cal.timezone || IST;
      const from = isoDate(new Date(), zone);
      const to = isoDate(new Date(Date.now() + (DAYS - 1) * 86400000), zone);
      const d = await api("GET", `/api/v1/calendars/${encodeURIComponent(cal.name)}/days?from=${from}&to=${to}`);
      if (!d.ok) {
        $("calendar").innerHTML = `<p class="error" id="cal-missing">Could not load the days of ${esc(cal.name)}: ${esc(d.message)}</p>`;
        return;
      }
      const days = Array.isArray(d.data) ? d.data : d.data.days || [];
      // The permitted windows of the rollout chosen: the active ones, then
      // each other spec by its latest rollout (the windows that spec has
      // now, for planning its next release).
      const [active, recent] = await Promise.all([
        api("GET", "/api/v1/rollouts?state=active&limit=1000"),
        api("GET", "/api/v1/rollouts?limit=200"),
      ]);
      if (active.ok) {
        const cur = rpick.value || wanted || "";
        const names = new Set(active.data.map((r) => r.name));
        const specs = [];
        for (const r of recent.ok ? recent.data : []) if (!names.has(r.name)) { names.add(r.name); specs.push(r); }
        rpick.innerHTML = `<option value="">none</option>` +
          (active.data.length ? `<optgroup label="Active rollouts">${active.data.map((r) => `<option value="${esc(r.id)}">${esc(r.name)} ${esc(r.revision)}</option>`).join("")}</optgroup>` : "") +
          (specs.length ? `<optgroup label="Specs (from their latest rollout)">${specs.map((r) => `<option value="${esc(r.id)}">${esc(r.name)} (as in ${esc(r.revision)}, ${esc(STATE_LABEL[r.state] || r.state)})</option>`).join("")}</optgroup>` : "");
        const all = [...active.data, ...specs];
        rpick.value = all.some((r) => r.id === cur) ? cur : "";
      }
      let permitted = null;
      if (rpick.value) {
        const det = await api("GET", `/api/v1/rollouts/${encodeURIComponent(rpick.value)}`);
        if (det.ok && Array.isArray(det.data.windows)) permitted = { name: det.data.name, windows: det.data.windows, guard: det.data.guard || null };
      }
      renderCalendar(Object.assign({}, cal, d.data.calendar || {}), days, zone, fr.ok ? fr.data : null, permitted);
      document.body.dataset.loaded = String(Date.now());
    });
    pick.addEventListener("change", () => loader.now());
    rpick.addEventListener("change", () => loader.now());
    refreshAll = loader.schedule;
    live((e) => { if (!e.rollout_id || e.rollout_id === rpick.value) loader.schedule(); }, () => {});
    loader.now();
  }

  if (PAGE === "rollouts") rolloutsPage();
  else if (PAGE === "rollout") rolloutPage();
  else if (PAGE === "calendar") calendarPage();
})();
