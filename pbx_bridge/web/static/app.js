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

  async function clickToCall(number, clientId) {
    try {
      const res = await api.clickToCall(user.extension, number, clientId ? Number(clientId) : null);
      toast(T("c2c.started", { number, extension: user.extension }) + (res && res.id ? " (#" + res.id + ")" : ""), "ok");
    } catch (e) {
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

  function direction(dir) { return h("span", { class: "dir dir-" + (dir || "unknown"), title: T("direction." + (dir || "unknown")) },
                                     { inbound: "↙ ", outbound: "↗ ", internal: "↔ " }[dir] || "", T("direction." + (dir || "unknown"))); }

  function status(call) {
    if (call.live) return h("span", { class: "badge live" }, call.answered_at ? T("state.talking") : T("state.ringing"));
    const key = call.missed ? "missed" : (call.status || "unknown");
    return h("span", { class: "badge st-" + key }, key === "missed" ? T("calls.missed") : T("status." + key));
  }

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
      if (["call.answered", "call.ended", "call.missed"].includes(ev.type) && ev.call) closePop(ev.call.id);
      window.dispatchEvent(new CustomEvent("pbx:event", { detail: ev }));
    };
    ws.onclose = () => { setLiveStatus(false); setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 30000); };
  }
  /* --- screen pop: my extension rings -> the caller's card (or "new contact") ------------ */
  let popCallId = null;
  function screenPop(ev) {
    if (!user || !user.extension) return;
    if (ev.extension && String(ev.extension) !== String(user.extension)) return;
    const call = ev.call || {};
    const card = ev.client;
    const box = document.getElementById("screen-pop");
    popCallId = call.id;
    const number = call.customer_number || "";
    const title = card && card.name ? card.name : T("pop.new_contact");
    const link = card && card.id ? h("a", { class: "button primary", href: "/ui/clients/" + card.id, id: "pop-card-link" }, T("pop.open_card"))
                                 : h("a", { class: "button primary", href: "/ui/clients/new?phone=" + encodeURIComponent(number), id: "pop-card-link" }, T("pop.create_card"));
    const facts = h("dl", { class: "facts" },
      h("dt", {}, T("client.phones")), h("dd", {}, number || T("call.unknown_number")),
      card && card.company ? [h("dt", {}, T("client.company")), h("dd", {}, card.company)] : null,
      card && card.responsible ? [h("dt", {}, T("client.responsible")), h("dd", {}, String(card.responsible))] : null,
      call.did ? [h("dt", {}, T("filter.did")), h("dd", {}, call.did)] : null,
      card && card.notes ? [h("dt", {}, T("client.notes")), h("dd", {}, card.notes)] : null);
    box.replaceChildren(...[
      h("div", { class: "pop-head" }, h("span", { class: "ringing-dot" }), T("pop.ringing", { extension: user.extension }),
        h("button", { type: "button", class: "link close", "aria-label": T("action.close"), onclick: () => closePop(null) }, "×")),
      h("h2", { class: "pop-name" + (card ? "" : " new") }, title),
      card && card.isNew ? h("p", { class: "muted" }, T("pop.card_created")) : null,
      facts, link].filter(Boolean));
    box.hidden = false;
    box.dataset.callId = call.id ?? "";
    document.title = "☎ " + (number || title);
  }
  function closePop(callId) {
    const box = document.getElementById("screen-pop");
    if (!box || box.hidden) return;
    if (callId !== null && String(callId) !== String(popCallId)) return;
    // Keep the card a little after the answer so the operator can click through.
    setTimeout(() => { if (callId === null || String(box.dataset.callId) === String(callId)) box.hidden = true; }, callId === null ? 0 : 15000);
  }

  window.addEventListener("DOMContentLoaded", connect);
  return { h, toast, showError, phone, c2c, customer, direction, status, fmt, T, api };
})();
