/* The JSON API as the UI sees it. Every assumption about paths and shapes (issues 5, 6, 7) lives
   in this file: the rest of the UI uses only the normalized objects returned from here. */
"use strict";

const PBX = (() => {
  const ctx = JSON.parse(document.getElementById("ui-context").textContent);
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const strings = ctx.strings || {};

  function T(key, values) {
    let text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    for (const [name, value] of Object.entries(values || {})) text = text.split("{" + name + "}").join(String(value));
    return text;
  }

  class ApiError extends Error {
    constructor(status, code, message) { super(message || code || ("HTTP " + status)); this.status = status; this.code = code; }
  }

  /* One request: same-origin cookie, CSRF header on unsafe methods, errors in the API's one
     shape {"error": {"code", "message"}}. A 401 means the session ended: back to sign-in. */
  async function request(method, path, options) {
    const opts = options || {};
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(opts.params || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
    }
    const headers = { "Accept": "application/json" };
    let body;
    if (opts.body !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(opts.body); }
    if (!["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = csrf;
    const resp = await fetch(url, { method, headers, body, credentials: "same-origin" });
    if (resp.status === 401) {
      location.href = "/ui/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new ApiError(401, "unauthorized", T("error.signed_out"));
    }
    let data = null;
    const text = await resp.text();
    if (text) { try { data = JSON.parse(text); } catch (e) { data = null; } }
    if (!resp.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(resp.status, err.code, err.message || resp.statusText);
    }
    return data;
  }

  /* Lists: {"items": [...], "next_cursor": ...} (issue 5); a bare array is accepted too. */
  function listOf(data, ...keys) {
    if (Array.isArray(data)) return data;
    if (!data || typeof data !== "object") return [];
    for (const k of ["items", ...keys]) if (Array.isArray(data[k])) return data[k];
    return [];
  }
  function nextCursor(data) {
    if (!data || Array.isArray(data)) return null;
    return data.next_cursor ?? data.cursor ?? null;
  }

  /* Call record: CallRecord.to_dict() plus maybe "recording", "transcript", "client", "tags". */
  function call(r) {
    const c = Object.assign({}, r || {});
    c.id = c.id ?? null;
    c.client = c.client && typeof c.client === "object" ? client(c.client) : null;
    c.client_id = c.client_id ?? (c.client ? c.client.id : null);
    c.live = !c.ended_at;
    // recording: absent = unknown (try answered calls), null/false = none, object/str/true = there.
    c.hasRecording = ("recording" in c) ? Boolean(c.recording) && (c.recording.status ? c.recording.status === "ready" : true)
                                        : c.status === "answered";
    c.tags = tags(c.tags || (c.transcript && c.transcript.tags) || []);
    c.snippet = c.snippet || c.match || (c.search && c.search.snippet) || null;
    return c;
  }

  /* Client card (issue 4/5): phones as strings or {number|phone|e164, label|kind}. */
  function client(d) {
    if (!d || typeof d !== "object") return null;
    const phones = (d.phones || (d.phone ? [d.phone] : [])).map(p =>
      typeof p === "string" ? { number: p, label: "" } : { number: p.number || p.phone || p.e164 || "", label: p.label || p.kind || "" });
    return {
      id: d.id ?? null,
      name: d.name || d.full_name || d.display_name || "",
      company: d.company || d.organization || "",
      email: d.email || "",
      notes: d.notes || d.note || d.comment || "",
      responsible: d.responsible_operator ?? d.responsible ?? d.owner ?? d.operator ?? null,
      phones,
      isNew: Boolean(d.is_new || d.created || d.new),
      raw: d,
    };
  }

  /* Transcript (issue 7): {turns: [{speaker, start, end, text, words: [{word, start, end, conf}]}], tags}. */
  function transcript(d) {
    if (!d) return null;
    const src = d.transcript && typeof d.transcript === "object" && !Array.isArray(d.transcript) ? d.transcript : d;
    const turns = (src.turns || src.dialog || []).map(t => {
      const words = (t.words || t.result || []).map(w => ({
        word: w.word ?? w.text ?? "", start: Number(w.start), end: Number(w.end), conf: w.conf ?? w.confidence ?? null,
      })).filter(w => Number.isFinite(w.start) && Number.isFinite(w.end));
      return { speaker: t.speaker || t.channel || t.side || "customer", start: Number(t.start ?? (words[0] && words[0].start) ?? 0),
               end: Number(t.end ?? (words.length ? words[words.length - 1].end : 0)), text: t.text || words.map(w => w.word).join(" "), words };
    });
    return { turns, tags: tags(src.tags || d.tags || []), status: src.status || d.status || null };
  }

  /* Tags: strings, or {label|keyword|phrase|name|tag, kind|list|type, start|at|offset}. */
  function tags(list) {
    return (Array.isArray(list) ? list : []).map(t => typeof t === "string" ? { label: t, kind: "", start: null }
      : { label: t.label || t.keyword || t.phrase || t.name || t.tag || "", kind: t.kind || t.list || t.type || "",
          start: t.start ?? t.at ?? t.offset ?? null });
  }

  /* Task (issue 4/5): {id, title|text|kind, status, due_at, client_id, call_id, phone|number}. */
  function task(d) {
    return { id: d.id, title: d.title || d.text || d.description || d.kind || "", kind: d.kind || d.type || "",
             status: d.status || (d.closed_at ? "closed" : "open"), due: d.due_at || d.due || null,
             created: d.created_at || null, client_id: d.client_id ?? null, call_id: d.call_id ?? null,
             phone: d.phone || d.number || d.customer_number || null, client_name: d.client_name || null };
  }

  /* Timeline entry (issue 4/5): {kind|type: call|task|note|..., at, call?, task?, text?}. */
  function timelineEntry(d) {
    const kind = d.kind || d.type || (d.call ? "call" : d.task ? "task" : "note");
    return { kind, at: d.at || d.created_at || d.started_at || (d.call && d.call.started_at) || null,
             call: d.call ? call(d.call) : (kind === "call" ? call(d.data || d) : null),
             task: d.task ? task(d.task) : (kind === "task" ? task(d.data || d) : null),
             text: d.text || d.note || d.body || d.summary || "", raw: d };
  }

  /* Live event (issue 5): {"type": "call.ringing", "call": record, "extension": "101", "client": card|null}. */
  function liveEvent(m) {
    return { type: m.type || m.event || "", call: m.call ? call(m.call) : null, extension: m.extension ?? null,
             client: m.client ? client(m.client) : null, raw: m };
  }

  const api = {
    calls: async (params) => { const d = await request("GET", "/api/v1/calls", { params });
                                return { items: listOf(d, "calls").map(call), next: nextCursor(d) }; },
    call: async (id) => { const d = await request("GET", `/api/v1/calls/${encodeURIComponent(id)}`); return call(d && d.call ? d.call : d); },
    recordingUrl: (id) => `/api/v1/calls/${encodeURIComponent(id)}/recording`,
    transcript: async (id) => {
      try { return transcript(await request("GET", `/api/v1/calls/${encodeURIComponent(id)}/transcript`)); }
      catch (e) { if (e.status === 404) return null; throw e; }
    },
    clients: async (params) => { const d = await request("GET", "/api/v1/clients", { params });
                                 return { items: listOf(d, "clients").map(client), next: nextCursor(d) }; },
    client: async (id) => { const d = await request("GET", `/api/v1/clients/${encodeURIComponent(id)}`); return client(d && d.client ? d.client : d); },
    createClient: async (fields) => client(await request("POST", "/api/v1/clients", { body: fields })),
    updateClient: async (id, fields) => client(await request("PATCH", `/api/v1/clients/${encodeURIComponent(id)}`, { body: fields })),
    timeline: async (id) => { const d = await request("GET", `/api/v1/clients/${encodeURIComponent(id)}/timeline`);
                              return listOf(d, "timeline", "events").map(timelineEntry); },
    tasks: async (params) => { const d = await request("GET", "/api/v1/tasks", { params }); return listOf(d, "tasks").map(task); },
    closeTask: async (id) => request("POST", `/api/v1/tasks/${encodeURIComponent(id)}/close`, { body: {} }),
    clickToCall: async (extension, number, clientId) =>
      request("POST", "/api/v1/click-to-call", { body: Object.assign({ extension, number }, clientId ? { client_id: clientId } : {}) }),
    eventsUrl: () => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/events",
    // Client fields the edit form sends with PATCH / POST.
    _call: call, _client: client, _event: liveEvent,
    clientFields: (form) => ({ name: form.name, company: form.company, email: form.email, notes: form.notes,
                               phones: form.phones, responsible_operator: form.responsible || null }),
  };

  /* Formatting in the reader's language: Intl with the page's locale. */
  const locale = ctx.locale || "en-GB";
  const numberFmt = new Intl.NumberFormat(locale);
  const dateTimeFmt = new Intl.DateTimeFormat(locale, { dateStyle: "short", timeStyle: "medium" });
  const timeFmt = new Intl.DateTimeFormat(locale, { timeStyle: "medium" });
  const dateFmt = new Intl.DateTimeFormat(locale, { dateStyle: "medium" });
  const fmt = {
    number: (n) => (n === null || n === undefined || Number.isNaN(Number(n))) ? "—" : numberFmt.format(Number(n)),
    duration: (s) => {
      if (s === null || s === undefined || Number.isNaN(Number(s))) return "—";
      const total = Math.round(Number(s)); const h = Math.floor(total / 3600); const m = Math.floor((total % 3600) / 60); const sec = total % 60;
      const mm = h ? String(m).padStart(2, "0") : String(m);
      return (h ? h + ":" : "") + mm + ":" + String(sec).padStart(2, "0");
    },
    dateTime: (iso) => iso ? dateTimeFmt.format(new Date(iso)) : "—",
    time: (iso) => iso ? timeFmt.format(new Date(iso)) : "—",
    date: (iso) => iso ? dateFmt.format(new Date(iso)) : "—",
    phone: (n) => n || T("call.unknown_number"),
  };

  return { ctx, user: ctx.user, data: ctx.data || {}, T, api, fmt, ApiError, request };
})();
