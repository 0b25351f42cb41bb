// Sign-in: exchange the token for a session cookie, then go where the
// person was headed. The token is sent once, as JSON, and not stored.
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const err = document.getElementById("login-error");
  const button = document.getElementById("sign-in");
  function next() {
    const n = new URLSearchParams(location.search).get("next") || "/";
    // Only paths on this server: never an absolute or protocol-relative URL.
    return n.startsWith("/") && !n.startsWith("//") && !n.startsWith("/\\") ? n : "/";
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    err.hidden = true;
    button.disabled = true;
    const token = document.getElementById("token").value.trim();
    try {
      const r = await fetch("/api/v1/session", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token }),
        credentials: "same-origin",
      });
      if (r.ok) {
        location.assign(next());
        return;
      }
      let msg = "sign-in refused (" + r.status + ")";
      try {
        const v = await r.json();
        if (v && v.error && v.error.message) msg = v.error.message;
      } catch (_) { /* not JSON */ }
      err.textContent = msg;
      err.hidden = false;
    } catch (x) {
      err.textContent = "the server did not answer: " + x.message;
      err.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
})();
