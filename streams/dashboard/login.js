"use strict";
// The login form: trades the token for a session cookie (POST /login, JSON like every
// state-changing request), then opens the dashboard at the view that was asked for (the
// redirect to /login keeps the #/... fragment).

const form = document.getElementById("login");

function refused(text) {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.className = "error";
  el.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = document.getElementById("token").value;
  let reply;
  try {
    reply = await fetch("/login", {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch (err) {
    refused(`no answer from the worker: ${err.message}`);
    return;
  }
  if (reply.ok) {
    location.assign("/" + location.hash);
    return;
  }
  const body = await reply.json().catch(() => ({}));
  refused(`login refused: ${body.error || `${reply.status} ${reply.statusText}`}`);
});
