/* The JSON API as the UI sees it. Every assumption about paths and shapes (issues 5, 6, 7) lives
   in this file: the rest of the UI uses only the normalized objects returned from here.
   The browser tests run these against the real API (calls, events, clients, tasks, timeline,
   transcript, recording states, q= search matches); only the API's own field names are read
   (the OpenAPI document, /api/v1/openapi.json, names them). Who may see what is the API's
   decision: the pages never hide things by role, they say so calmly when the API answers 403. */
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

  /* The API's errors in the reader's language: by code (and for invalid_field, by the field the
     message names: "phones: ..."); the API's own English text is kept in .detail, never shown. */
  function errorText(status, code, detail) {
    if (code === "invalid_field" || code === "invalid_parameter") {
      const m = /^'?([a-z_]+)'?[:\s]/.exec(detail || "");
      const key = "error." + code + "." + (m ? m[1] : "");
      if (m && Object.prototype.hasOwnProperty.call(strings, key)) return T(key);
    }
    if (code && Object.prototype.hasOwnProperty.call(strings, "error.code." + code)) return T("error.code." + code);
    if (status >= 500) return T("error.code.internal_error");
    return T("error.generic", { status });
  }

  class ApiError extends Error {
    constructor(status, code, detail) { super(errorText(status, code, detail)); this.status = status; this.code = code; this.detail = detail || ""; }
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
      throw new ApiError(401, "signed_out", "");
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

  /* Lists: {"items": [...], "next_cursor": ...}. */
  function listOf(data) {
    return data && Array.isArray(data.items) ? data.items : [];
  }
  function nextCursor(data) {
    return (data && data.next_cursor) ?? null;
  }

  /* Call record: CallRecord.to_dict() (list items), plus on GET /calls/{id} the keys "legs",
     "client", "recording", "transcript" (null until a feature fills them in: null is "not told",
     not "none"). A recording object is playable in the states "ready" and "truncated". */
  const PLAYABLE = ["ready", "truncated"];
  function call(r) {
    const c = Object.assign({}, r || {});
    c.id = c.id ?? null;
    c.client = c.client && typeof c.client === "object" ? client(c.client) : null;
    c.client_id = c.client_id ?? (c.client ? c.client.id : null);
    c.live = !c.ended_at;
    const rec = c.recording;
    if (rec && typeof rec === "object") c.hasRecording = PLAYABLE.includes(rec.state);
    else c.hasRecording = c.status === "answered";  // not told (list items): answered calls may have one
    const analytics = c.transcript && c.transcript.analytics;
    c.tags = tags((analytics && analytics.tags) || []);
    c.snippet = snippet(c.match || null);
    return c;
  }

  /* A transcript search hit (q=): {snippet, speaker, offset}. */
  function snippet(d) {
    return d && d.snippet ? { text: d.snippet, offset: d.offset ?? null, speaker: d.speaker || null } : null;
  }

  /* Client card (crm_sync Card / CardSummary): phones [{e164, raw}], emails [], responsible,
     auto_created, tags; the screen pop's summary adds last_call and open_tasks, a create or
     update answer conflicts. */
  function client(d) {
    if (!d || typeof d !== "object") return null;
    const phones = (d.phones || []).map(p => ({ number: p.e164 || p.raw || "" }));
    const emails = Array.isArray(d.emails) ? d.emails : [];
    return {
      id: d.id ?? null,
      name: d.name || "",
      company: d.company || "",
      email: emails.length ? emails[0] : "",
      emails,
      notes: d.notes || "",
      responsible: d.responsible ?? null,
      tags: Array.isArray(d.tags) ? d.tags.map(String) : [],
      source: d.source || "",
      lastCall: d.last_call || null,
      openTasks: Array.isArray(d.open_tasks) ? d.open_tasks : [],
      conflicts: Array.isArray(d.conflicts) ? d.conflicts : [],
      lastActivity: d.last_activity_at || null,
      phones,
      isNew: Boolean(d.auto_created),
      raw: d,
    };
  }

  /* Transcript (GET /calls/{id}/transcript): {call_id, job: {state, last_error, ...}|null,
     transcript: {turns: [{speaker, start, end, text, words: [{word, start, end, conf}]}], text,
     analytics: {keyword_hits, flagged_hits, required_phrases, tags, talk_seconds, ...}}|null}. */
  function transcript(d) {
    if (!d) return null;
    const src = d.transcript || {};
    const turns = (src.turns || []).map(t => ({
      speaker: t.speaker, start: Number(t.start), end: Number(t.end), text: t.text,
      words: (t.words || []).map(w => ({ word: w.word, start: Number(w.start), end: Number(w.end), conf: w.conf })),
    }));
    const analytics = src.analytics || null;
    const found = [];
    if (analytics) {
      for (const h of analytics.keyword_hits || []) found.push({ label: h.term, kind: "keyword", start: h.start ?? null });
      for (const h of analytics.flagged_hits || []) found.push({ label: h.term, kind: "flagged", start: h.start ?? null });
      const phrases = analytics.required_phrases || {};
      for (const p of phrases.present || []) found.push({ label: p, kind: "required", start: null });
      for (const p of phrases.missing || []) found.push({ label: p, kind: "missing", start: null });
      found.push(...tags(analytics.tags || []));
    }
    const job = d.job && typeof d.job === "object" ? { state: d.job.state || "", error: d.job.last_error || null } : null;
    return { turns, tags: uniqueTags(found), analytics, job, model: src.model || null, language: src.language || null };
  }

  /* Tags (the transcript's analytics): "keyword:цена", "flagged:...", "missing_phrase:...". */
  function tags(list) {
    return (Array.isArray(list) ? list : []).map(t => {
      const m = /^(keyword|flagged|missing_phrase):(.+)$/.exec(String(t));
      return m ? { label: m[2], kind: m[1] === "missing_phrase" ? "missing" : m[1], start: null } : { label: String(t), kind: "", start: null };
    }).filter(t => t.label);
  }

  /* One chip per (kind, label): the earliest time wins. */
  function uniqueTags(list) {
    const seen = new Map();
    for (const t of list) {
      const key = t.kind + "|" + t.label;
      const had = seen.get(key);
      if (!had || (had.start === null && t.start !== null) || (t.start !== null && had.start !== null && t.start < had.start)) seen.set(key, t);
    }
    return [...seen.values()];
  }

  /* Task (crm_sync Task): {id, client_id, number, kind: "call_back", assignee, status: open|closed,
     due_at, created_at, closed_at, created_by_call_id}. */
  function task(d) {
    return { id: d.id, title: d.title || "", kind: d.kind || "",
             status: d.status || (d.closed_at ? "closed" : "open"), due: d.due_at || null,
             created: d.created_at || null, client_id: d.client_id ?? null, call_id: d.created_by_call_id ?? null,
             phone: d.number || null, assignee: d.assignee ?? null,
             assignees: Array.isArray(d.assignees) ? d.assignees : (d.assignee ? [d.assignee] : []),
             client_name: d.client_name || null };
  }

  /* Timeline entry (crm_sync): {id, kind: call|task|note|recording|transcript, call_id, payload, at};
     a call's payload is the call's facts plus links {recording, transcript}; a note's {text, author}. */
  function timelineEntry(d) {
    const kind = d.kind;
    const p = d.payload && typeof d.payload === "object" ? d.payload : {};
    let entryCall = null;
    if (kind === "call") {
      const facts = Object.assign({}, p, { id: d.call_id ?? null });
      if (p.links && typeof p.links === "object") facts.recording = p.links.recording || null;
      delete facts.links;
      entryCall = call(facts);
    }
    return { id: d.id ?? null, kind, at: d.at || null,
             call: entryCall, task: kind === "task" ? task(Object.assign({ id: p.task_id }, p)) : null,
             text: p.text || "", author: p.author || null, raw: d };
  }

  /* Live event (issue 5): {"type": "call.ringing", "call": record, "extension": "101", "client": card|null}. */
  function liveEvent(m) {
    return { type: m.type || "", call: m.call ? call(m.call) : null, extension: m.extension ?? null,
             client: m.client ? client(m.client) : null, reason: m.reason || null, from: m.from_extension || null,
             adChannel: m.ad_channel || null, task: m.task ? task(m.task) : null,
             c2c: m.click_to_call || null, raw: m };
  }

  const api = {
    calls: async (params) => { const d = await request("GET", "/api/v1/calls", { params });
                                return { items: listOf(d).map(call), next: nextCursor(d) }; },
    exportUrl: (params, format) => {
      const url = new URL("/api/v1/calls/export", location.origin);
      for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "" && k !== "limit" && k !== "cursor" && k !== "sort") url.searchParams.set(k, String(v));
      url.searchParams.set("format", format); url.searchParams.set("lang", ctx.lang || "ru");
      return url.pathname + url.search;
    },
    call: async (id) => call(await request("GET", `/api/v1/calls/${encodeURIComponent(id)}`)),
    recordingUrl: (id) => `/api/v1/calls/${encodeURIComponent(id)}/recording`,
    transcript: async (id) => {
      try { return transcript(await request("GET", `/api/v1/calls/${encodeURIComponent(id)}/transcript`)); }
      catch (e) { if (e.status === 404) return null; throw e; }
    },
    clients: async (params) => { const d = await request("GET", "/api/v1/clients", { params });
                                 return { items: listOf(d).map(client), next: nextCursor(d) }; },
    client: async (id) => client(await request("GET", `/api/v1/clients/${encodeURIComponent(id)}`)),
    createClient: async (fields) => client(await request("POST", "/api/v1/clients", { body: fields })),
    updateClient: async (id, fields) => client(await request("PATCH", `/api/v1/clients/${encodeURIComponent(id)}`, { body: fields })),
    timeline: async (id) => { const d = await request("GET", `/api/v1/clients/${encodeURIComponent(id)}/timeline`);
                              return listOf(d).map(timelineEntry); },
    tasks: async (params) => { const d = await request("GET", "/api/v1/tasks", { params }); return listOf(d).map(task); },
    createTask: async (body) => task(await request("POST", "/api/v1/tasks", { body })),
    addNote: async (id, text) => request("POST", `/api/v1/clients/${encodeURIComponent(id)}/notes`, { body: { text } }),
    mergeClients: async (keepId, fromId) => client(await request("POST", `/api/v1/clients/${encodeURIComponent(keepId)}/merge`, { body: { from_id: Number(fromId) } })),
    closeTask: async (id) => request("POST", `/api/v1/tasks/${encodeURIComponent(id)}/close`, { body: {} }),
    clickToCall: async (extension, number, clientId) =>
      request("POST", "/api/v1/click-to-call", { body: Object.assign({ extension, number }, clientId ? { client_id: clientId } : {}) }),
    eventsUrl: () => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/v1/events",
    _call: call, _client: client, _event: liveEvent, _timelineEntry: timelineEntry, _transcript: transcript,
    /* Card bodies (crm_sync): POST takes phones; PATCH takes add_phones / remove_phones. */
    newClientBody: (form) => ({ name: form.name, company: form.company || null, notes: form.notes || null,
                                responsible: form.responsible || null, phones: form.phones, source: form.source || null,
                                emails: form.email ? [form.email] : [] }),
    clientChangesBody: (form, card) => {
      const before = new Set(card.phones.map(p => p.number));
      const after = new Set(form.phones);
      return { name: form.name, company: form.company || null, notes: form.notes || null, source: form.source || "",
               responsible: form.responsible || "", emails: form.email ? [form.email] : [],
               add_phones: form.phones.filter(n => !before.has(n)), remove_phones: [...before].filter(n => !after.has(n)) };
    },
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

  return { ctx, user: ctx.user, data: ctx.data || {}, T, api, fmt, ApiError, request, errorText };
})();
