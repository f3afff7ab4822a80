// The pages e-mailed links open: confirm an address, reset a password. Same origin as the API, addressed
// relatively (a stage prefix such as /prod stays); the token comes from the link's ?token= and is only ever
// sent to the API in a request body.
"use strict";

const token = new URLSearchParams(window.location.search).get("token") || "";
const status = document.getElementById("status");

function say(text, isError) {
  status.textContent = text;
  status.className = isError ? "error" : "";
}

/** The session's CSRF token, from the cookie login set: a signed-in browser proves the request is ours. */
function csrfToken() {
  const pair = document.cookie.split("; ").find((c) => c.startsWith("inferex_csrf="));
  return pair ? pair.slice("inferex_csrf=".length) : "";
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", "x-csrf-token": csrfToken() },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = answer.error || {};
    throw new Error(error.message || "the request failed (" + response.status + ")");
  }
  return answer;
}

function verifyEmailPage() {
  const button = document.getElementById("confirm");
  if (!token) {
    say("This page needs the link from your e-mail.", true);
    button.disabled = true;
    return;
  }
  // A click, not page load: mail scanners that open links must not confirm anything.
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const verified = await post("v1/auth/verify-email", { token });
      say(verified.email + " is confirmed. You can close this page.", false);
    } catch (error) {
      say(error.message, true);
      button.disabled = false;
    }
  });
}

function resetPasswordPage() {
  const request = document.getElementById("request");
  const choose = document.getElementById("choose");
  if (!token) {
    request.hidden = false;
    request.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const answer = await post("v1/auth/password-reset", { email: document.getElementById("email").value });
        say(answer.message, false);
      } catch (error) {
        say(error.message, true);
      }
    });
    return;
  }
  choose.hidden = false;
  choose.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = document.getElementById("password").value;
    if (password !== document.getElementById("repeat").value) {
      say("The two passwords differ.", true);
      return;
    }
    try {
      const done = await post("v1/auth/password-reset/confirm", { token, password });
      choose.hidden = true;
      say("Your password is set; " + done.sessions_ended + " session(s) were signed out. Sign in with it now.", false);
    } catch (error) {
      say(error.message, true);
    }
  });
}

if (document.body.dataset.page === "verify-email") {
  verifyEmailPage();
} else if (document.body.dataset.page === "reset-password") {
  resetPasswordPage();
}
