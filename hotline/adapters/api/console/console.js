// The supervisors' console: sign in with a token (then an HttpOnly session cookie), follow the
// board by server-sent events, act through the API with the session's CSRF token. No framework,
// nothing from elsewhere; everything shown is set as text, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = null;
let events = null;
let reasons = [];
let names = new Map();  // responder id -> name

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(r).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function time(iso) {
  if (!iso) return "none";
  return iso.slice(11, 16);
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (e) { data = null; }
  return { ok: response.ok, status: response.status, data };
}

function setOptions(select, options) {
  // Keep the chosen value across updates; rebuild only when the options change.
  const key = JSON.stringify(options);
  if (select.dataset.key === key) return;
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
  if (options.some(([value]) => value === chosen)) select.value = chosen;
  select.dataset.key = key;
}

function renderQueue(queue) {
  const covered = queue.covered;
  const box = el("article", {
    class: "queue" + (covered ? "" : " uncovered"),
    "data-queue": queue.name, "aria-label": `queue ${queue.name}`,
  });
  box.append(el("h3", {}, el("span", {}, queue.name),
    el("span", { class: covered ? "muted" : "bad" },
      `${queue.present} of ${queue.min_responders} needed` + (covered ? "" : " — UNDERSTAFFED"))));
  const waiting = queue.callers.waiting;
  box.append(el("div", { class: "figures" },
    el("div", { class: "figure waiting" }, "Waiting",
      el("strong", { "data-field": "waiting" }, waiting)),
    el("div", { class: "figure" }, "Longest wait",
      el("strong", { "data-field": "longest" }, duration(queue.callers.longest_wait_s))),
    el("div", { class: "figure" }, "Surge", el("strong", {}, queue.surging ? "ON" : "off"))));
  const rows = queue.members.map((m) => {
    const state = m.state === "paused" && m.paused_reason ? `paused: ${m.paused_reason}` : m.state;
    const reason = reasons.find((r) => r.name === m.paused_reason);
    const limit = m.over_limit ? ` OVER LIMIT (${duration(reason ? reason.max_s : null)})` : "";
    return el("tr", { class: m.over_limit ? "over-limit" : null, "data-responder": m.responder },
      el("td", {}, names.get(m.responder) || m.responder), el("td", { class: `state-${m.state}`, "data-field": "state" }, state + limit),
      el("td", {}, duration(m.state === "paused" ? m.paused_for_s : m.for_s)));
  });
  box.append(el("table", {},
    el("caption", { class: "muted" }, "Members now"),
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Responder"),
      el("th", { scope: "col" }, "State"), el("th", { scope: "col" }, "For"))),
    el("tbody", {}, ...rows)));
  const now = Object.values(queue.scheduled_now).flat().sort().join(", ") || "nobody";
  const next = queue.next_change;
  box.append(el("p", {}, "On shift now: ", now));
  box.append(el("p", { class: "muted" },
    `Next at ${time(next.at)}: ${next.responders.join(", ") || "nobody"}`));
  return box;
}

function renderOverrides(overrides) {
  if (!overrides.length) return el("p", { class: "muted" }, "None");
  return el("table", {},
    el("thead", {}, el("tr", {}, ...["Responder", "Duty", "Queues", "Until", ""].map(
      (h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...overrides.map((o) => {
      const cancel = el("button", { type: "button", "data-override": o.id }, `Cancel override ${o.id}`);
      cancel.addEventListener("click", () => cancelOverride(o));
      return el("tr", {}, el("td", {}, o.responder), el("td", {}, o.on ? "on" : "off"),
        el("td", {}, o.queues ? o.queues.join(", ") : "all"), el("td", {}, time(o.end)),
        el("td", {}, cancel));
    })));
}

function render(board) {
  $("board-at").textContent = `at ${time(board.at)}`;
  $("board").replaceChildren(...board.queues.map(renderQueue));
  // Keep focus on a cancel button that is re-rendered.
  const focused = document.activeElement && document.activeElement.dataset.override;
  $("overrides").replaceChildren(renderOverrides(board.overrides));
  if (focused) {
    const again = document.querySelector(`[data-override="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  const queues = [["", "All their queues"], ...board.queues.map((q) => [q.name, q.name])];
  setOptions($("pause-queue"), queues);
  setOptions($("override-queue"), queues);
}

function follow() {
  if (events) events.close();
  events = new EventSource("/api/v1/board/events");
  events.addEventListener("board", (event) => {
    render(JSON.parse(event.data));
    $("status").textContent = `Signed in; board live`;
  });
  events.addEventListener("error", () => {
    $("status").textContent = "Board connection lost; retrying";
  });
}

async function signedIn(session) {
  csrf = session.csrf;
  $("sign-in-panel").hidden = true;
  $("board-panel").hidden = false;
  $("sign-out").hidden = false;
  $("actions").hidden = session.role === "viewer";
  $("status").textContent = `Signed in as ${session.name} (${session.role})`;
  const roster = await api("GET", "/api/v1/responders");
  if (roster.ok) {
    names = new Map(roster.data.responders.map((r) => [r.id, r.name]));
    const choices = roster.data.responders.map((r) => [r.id, `${r.name} (${r.id})`]);
    setOptions($("pause-responder"), choices);
    setOptions($("override-responder"), choices);
  }
  const result = await api("GET", "/api/v1/pause-reasons");
  if (result.ok) {
    reasons = result.data.reasons;
    setOptions($("pause-reason"), reasons.map((r) => [r.name,
      r.max_s ? `${r.name} (limit ${duration(r.max_s)})` : r.name]));
  }
  follow();
}

function confirmAction(text) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
    $("confirm-no").focus();
  });
}

function report(result, done) {
  const text = result.ok ? done : `Refused (${result.status}): ${result.data ? result.data.message : "no answer"}`;
  $("result").textContent = text;
}

async function cancelOverride(o) {
  if (!await confirmAction(`Cancel override ${o.id} of ${o.responder}?`)) return;
  report(await api("POST", `/api/v1/overrides/${o.id}/cancel`, {}), `Override ${o.id} cancelled`);
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = await api("POST", "/api/v1/session", { token: $("token").value });
  $("token").value = "";
  if (result.ok) {
    await signedIn(result.data);
    $("board-title").focus();
  } else {
    $("status").textContent = result.status === 429
      ? "Too many failed attempts: wait a minute" : "Sign-in refused";
  }
});

$("sign-out").addEventListener("click", async () => {
  await api("DELETE", "/api/v1/session");
  window.location.reload();
});

$("pause-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const what = event.submitter ? event.submitter.value : "pause";
  const responder = $("pause-responder").value;
  const queue = $("pause-queue").value || null;
  const reason = $("pause-reason").value;
  const where = queue ? `in ${queue}` : "in all their queues";
  const text = what === "pause" ? `Pause ${responder} ${where} for ${reason}?` : `Unpause ${responder} ${where}?`;
  if (!await confirmAction(text)) return;
  const path = `/api/v1/responders/${encodeURIComponent(responder)}/${what}`;
  const body = what === "pause" ? { reason, queue } : { queue };
  report(await api("POST", path, body), what === "pause" ? `${responder} paused` : `${responder} unpaused`);
});

$("override-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const responder = $("override-responder").value;
  const on = $("override-on").value === "on";
  const queue = $("override-queue").value;
  const hours = Number($("override-hours").value);
  const until = new Date(Date.now() + hours * 3600 * 1000).toISOString();
  const reason = $("override-reason").value.trim() || null;
  const text = `Put ${responder} ${on ? "on" : "off"} duty ${queue ? "in " + queue : "in all their queues"} for ${hours} h?`;
  if (!await confirmAction(text)) return;
  const body = { responder, on, until, reason, queues: queue ? [queue] : null };
  report(await api("POST", "/api/v1/overrides", body), `Override created for ${responder}`);
});

$("resync-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!await confirmAction("Resync with Asterisk now?")) return;
  report(await api("POST", "/api/v1/resync", {}), "Resync done");
});

(async () => {
  const result = await api("GET", "/api/v1/session");
  if (result.ok) await signedIn(result.data);
  else $("token").focus();
})();
