// The login page: POST /api/v1/login as JSON; the API sets the session and CSRF cookies.
"use strict";

(function () {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");

  function nextUrl() {
    const next = new URLSearchParams(location.search).get("next") || "/";
    // Only same-site paths: never "//evil.example" or "https://…".
    return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/";
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const user = form.user.value.trim();
    const password = form.password.value;
    if (!user || !password) {
      error.textContent = "Enter a user name and a password.";
      error.hidden = false;
      return;
    }
    let resp;
    try {
      resp = await fetch("/api/v1/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json",
                   "X-Requested-With": "quiesce-dashboard" },
        body: JSON.stringify({ user, password }),
      });
    } catch (e) {
      error.textContent = "The balancer did not answer: " + e.message;
      error.hidden = false;
      return;
    }
    if (resp.ok) {
      try {
        const data = await resp.json();
        if (data && data.csrf) sessionStorage.setItem("quiesce_csrf", data.csrf);
      } catch (e) { /* the cookie carries the token too */ }
      location.replace(nextUrl());
      return;
    }
    let detail = "Log-in failed (" + resp.status + ")";
    try {
      const data = await resp.json();
      if (data && typeof data.detail === "string") detail = data.detail;
    } catch (e) { /* keep the generic text */ }
    if (resp.status === 401 || resp.status === 403) detail = "Wrong user name or password.";
    if (resp.status === 429) detail = "Too many failed log-ins: wait a minute and try again.";
    error.textContent = detail;
    error.hidden = false;
    form.password.select();
  });
})();
