/* Shared by every page: DOM helpers, toasts, click-to-call, the live event connection and the
   screen pop. Pages listen for "pbx:event" on window to follow calls live. */
"use strict";

const UI = (() => {
  const { T, api, fmt, user } = PBX;

  /* h("a", {href: "/x", class: "y"}, "text", child...) -> element; text is never parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function toast(text, kind) {
    const el = h("div", { class: "toast " + (kind || "info"), role: "status" }, text);
    document.getElementById("toasts").append(el);
    setTimeout(() => el.remove(), 6000);
  }

  function showError(err) { toast(err && err.message ? err.message : String(err), "error"); }

  /* A click-to-call button (for people who have an extension), or null. */
  function c2c(number, clientId) {
    if (!number || !user || !user.extension) return null;
    return h("button", { type: "button", class: "c2c", title: T("c2c.call", { number }),
                         "aria-label": T("c2c.call", { number }), dataset: { number, clientId: clientId || "" } }, "☎");
  }

  /* A phone number with its click-to-call button. */
  function phone(number, clientId) {
    if (!number) return h("span", { class: "muted" }, T("call.unknown_number"));
    return h("span", { class: "phone" }, h("span", { class: "number" }, number), c2c(number, clientId));
  }

  /* Click-to-call progress in words, from the request's click_to_call.updated live events:
     your phone is ringing -> calling the customer -> connected -> ended, or failed and why.
     Events may come before the POST's answer (the PBX is quick): they wait for it. */
  const C2C_ORDER = ["queued", "dialing_operator", "dialing_customer", "connected", "ended", "failed"];
  const c2cRequests = new Map();  // request id -> {number, el, states: [[state, reason]]}
  const c2cEarly = new Map();  // request id -> [[state, reason]] seen before the POST answered
  function c2cShow(id, state, reason) {
    const req = c2cRequests.get(id);
    if (!req) {
      if (c2cEarly.size > 50) c2cEarly.delete(c2cEarly.keys().next().value);
      if (!c2cEarly.has(id)) c2cEarly.set(id, []);
      c2cEarly.get(id).push([state, reason]);
      return;
    }
    if (!C2C_ORDER.includes(state) || req.states.some(([s]) => s === state)) return;
    req.states.push([state, reason]);
    req.states.sort((a, b) => C2C_ORDER.indexOf(a[0]) - C2C_ORDER.indexOf(b[0]));
    const shown = req.states.length > 1 ? req.states.filter(([s]) => s !== "queued") : req.states;
    const words = shown.map(([s, r]) => s === "failed" ? T("c2c.state.failed", { reason: T("c2c.reason." + (r || "unknown")) })
                                                      : T("c2c.state." + s, { number: req.number, extension: user.extension }));
    const last = shown[shown.length - 1][0];
    req.el.className = "c2c-progress st-" + last;
    req.el.querySelector(".c2c-text").textContent = words.join(" → ");
    if (["ended", "failed"].includes(last)) setTimeout(() => { req.el.remove(); c2cRequests.delete(id); }, 10000);
  }
  async function clickToCall(number, clientId) {
    const box = document.getElementById("c2c-box");
    const el = h("div", { class: "c2c-progress st-queued", role: "status" }, h("span", { class: "c2c-number" }, "☎ " + number + ": "),
                 h("span", { class: "c2c-text" }, T("c2c.state.queued", { number, extension: user.extension })));
    box.append(el);
    try {
      const res = await api.clickToCall(user.extension, number, clientId ? Number(clientId) : null);
      c2cRequests.set(res.id, { number, el, states: [] });
      el.dataset.requestId = res.id;
      for (const [state, reason] of [[res.state, res.reason], ...(c2cEarly.get(res.id) || [])]) c2cShow(res.id, state, reason);
      c2cEarly.delete(res.id);
    } catch (e) {
      el.remove();
      toast(T("c2c.failed", { reason: e.message }), "error");
    }
  }

  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest && ev.target.closest("button.c2c");
    if (btn) { ev.preventDefault(); clickToCall(btn.dataset.number, btn.dataset.clientId); }
  });

  function customer(call) {
    const label = call.customer_name || (call.client && call.client.name) || call.customer_number || T("call.unknown_number");
    const id = call.client_id;
    return id ? h("a", { href: "/ui/clients/" + id }, label) : h("span", {}, label);
  }

  /* The call's direction; while an operator's own click-to-call rings their phone the record's
     is still "unknown", but it is an outbound call. */
  function callDirection(call) { return call.direction === "unknown" && call.click_to_call_id ? "outbound" : call.direction; }
  function direction(dir) { if (dir && typeof dir === "object") dir = callDirection(dir);
                            return h("span", { class: "dir dir-" + (dir || "unknown"), title: T("direction." + (dir || "unknown")) },
                                     { inbound: "↙ ", outbound: "↗ ", internal: "↔ " }[dir] || "", T("direction." + (dir || "unknown"))); }

  /* A live call: ringing or talking, with a timer (ticking, see below); an ended one: its own
     status (no answer, busy, abandoned, failed are told apart), missed ones marked as such. */
  function status(call) {
    if (call.live) {
      return h("span", { class: "badge live" }, call.answered_at ? T("state.talking") : T("state.ringing"), " ",
               h("span", { class: "timer", dataset: { since: call.answered_at || call.started_at } }, elapsed(call.answered_at || call.started_at)));
    }
    const key = call.status || "unknown";
    return h("span", { class: "badge st-" + key + (call.missed ? " missed" : ""), title: call.missed ? T("calls.missed") : null },
             T("status." + key));
  }
  function elapsed(since) { return since ? fmt.duration(Math.max(0, (Date.now() - new Date(since).getTime()) / 1000)) : ""; }
  setInterval(() => document.querySelectorAll(".timer[data-since]").forEach(el => { el.textContent = elapsed(el.dataset.since); }), 1000);

  /* --- live events: one WebSocket per page, reconnecting with backoff --------------------- */
  let backoff = 1000;
  function setLiveStatus(ok) {
    const el = document.getElementById("live-status");
    if (el) { el.className = "live-status " + (ok ? "up" : "down"); el.title = ok ? T("live.connected") : T("live.disconnected"); }
  }
  function connect() {
    if (!user) return;
    let ws;
    try { ws = new WebSocket(api.eventsUrl()); } catch (e) { setLiveStatus(false); return; }
    ws.onopen = () => { backoff = 1000; setLiveStatus(true); };
    ws.onmessage = (msg) => {
      let data; try { data = JSON.parse(msg.data); } catch (e) { return; }
      if (!data || typeof data !== "object") return;
      const ev = api._event(data);
      if (ev.type === "call.ringing") screenPop(ev);
      if (ev.type === "call.updated" && ev.reason === "internal") internalNote(ev);
      if (ev.type === "click_to_call.updated" && ev.c2c) c2cShow(ev.c2c.id, ev.c2c.state, ev.c2c.reason);
      if (["call.answered", "call.ended", "call.missed"].includes(ev.type) && ev.call) closePop(ev.call.id);
      window.dispatchEvent(new CustomEvent("pbx:event", { detail: ev }));
    };
    ws.onclose = () => { setLiveStatus(false); setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 30000); };
  }
  /* --- screen pop: a customer's call rings my phone -> the card (or the new contact) --------
     The server sends call.ringing only for that (never for my own click-to-call's first leg nor
     for a colleague's internal call: those are call.updated). */
  let popCallId = null;
  function fact(label, value) { return [h("dt", {}, label), h("dd", {}, value)]; }
  function screenPop(ev) {
    if (!user || !user.extension) return;
    if (ev.extension && String(ev.extension) !== String(user.extension)) return;
    const call = ev.call || {};
    const card = ev.client && ev.client.id ? ev.client : null;
    const box = document.getElementById("screen-pop");
    popCallId = call.id;
    const number = call.customer_number || "";
    // A new contact is named by the caller ID (as the live table shows it), else the number.
    const title = card ? card.name : (call.customer_name || (ev.client && ev.client.name) || number || T("call.unknown_number"));
    const create = "/ui/clients/new?" + new URLSearchParams(Object.assign({ phone: number },
      call.customer_name ? { name: call.customer_name } : {}, ev.adChannel ? { source: ev.adChannel } : {})).toString();
    const link = card ? h("a", { class: "button primary", href: "/ui/clients/" + card.id, id: "pop-card-link" }, T("pop.open_card"))
                      : (number ? h("a", { class: "button primary", href: create, id: "pop-card-link" }, T("pop.create_card")) : null);
    const last = card && card.lastCall;
    const facts = h("dl", { class: "facts" },
      fact(T("client.phones"), number || T("call.unknown_number")),
      card && card.company ? fact(T("client.company"), card.company) : null,
      card ? fact(T("client.responsible"), card.responsible ? String(card.responsible) : "—") : null,
      card ? fact(T("pop.last_call"), last ? [fmt.dateTime(last.started_at), " · ", T("status." + (last.status || "unknown")),
                                             last.operator ? " · " + last.operator : ""].join("") : T("pop.no_calls")) : null,
      ev.adChannel ? fact(T("pop.ad_channel"), ev.adChannel) : (call.did ? fact(T("filter.did"), call.did) : null));
    const tasks = card && card.openTasks.length ? h("div", { class: "pop-tasks" }, h("strong", {}, T("pop.open_tasks", { n: card.openTasks.length })),
      h("ul", {}, ...card.openTasks.map(t => h("li", { class: t.due_at && new Date(t.due_at) < new Date() ? "overdue" : "" },
        t.title || T("task.call_back"), t.due_at ? " · " + T("task.due") + " " + fmt.dateTime(t.due_at) : "")))) : null;
    box.replaceChildren(...[
      h("div", { class: "pop-head" }, h("span", { class: "ringing-dot" }), T("pop.ringing", { extension: user.extension }),
        h("button", { type: "button", class: "link close", "aria-label": T("action.close"), onclick: () => closePop(null) }, "×")),
      h("h2", { class: "pop-name" + (card ? "" : " new") }, title),
      card ? (card.ambiguous ? h("p", { class: "muted" }, T("pop.ambiguous")) : null) : h("p", { class: "pop-new" }, T("pop.new_contact")),
      facts, tasks, link].filter(Boolean));
    box.hidden = false;
    box.dataset.callId = call.id ?? "";
    document.title = "☎ " + (number || title);
  }
  /* A colleague's internal call ringing me: a small note, no pop. */
  function internalNote(ev) {
    if (!user || !user.extension || String(ev.extension) !== String(user.extension)) return;
    toast(T("pop.internal", { from: ev.from || "?" }), "info");
  }
  function closePop(callId) {
    const box = document.getElementById("screen-pop");
    if (!box || box.hidden) return;
    if (callId !== null && String(callId) !== String(popCallId)) return;
    // Keep the card a little after the answer so the operator can click through.
    setTimeout(() => { if (callId === null || String(box.dataset.callId) === String(callId)) box.hidden = true; }, callId === null ? 0 : 15000);
  }

  window.addEventListener("DOMContentLoaded", connect);
  return { h, toast, showError, phone, c2c, customer, direction, callDirection, status, elapsed, fmt, T, api };
})();
