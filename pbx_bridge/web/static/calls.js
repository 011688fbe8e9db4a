/* Call journal: filters in the URL, cursor pagination, sorting by the API (the whole journal, not
   the page loaded: GET /api/v1/calls?sort=), a play button. */
"use strict";

(() => {
  const { h, T, api, fmt, showError } = UI;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#journal tbody");
  const player = document.getElementById("row-player");
  const FIELDS = ["from", "to", "direction", "status", "operator", "operator_role", "did", "number", "q"];
  let cursors = [null];  // cursor of each page seen; the last is the current page's
  let next = null;
  let rows = [];
  // The API's order (its `sort`): newest first unless a sortable column header says otherwise.
  const SORTABLE = ["started_at", "wait_seconds", "talk_seconds"];
  let sortKey = "started_at", sortDir = -1;

  function filtersFromUrl() {
    const q = new URLSearchParams(location.search);
    for (const f of FIELDS) if (form.elements[f]) form.elements[f].value = q.get(f) || "";
    if (!form.elements.operator_role.value) form.elements.operator_role.value = "answered";
    const sort = q.get("sort") || "";
    if (SORTABLE.includes(sort.replace(/^-/, ""))) { sortKey = sort.replace(/^-/, ""); sortDir = sort.startsWith("-") ? -1 : 1; }
  }

  /* Dates in the form are local days; the API takes ISO 8601 instants, "to" exclusive. */
  function apiParams() {
    const p = {};
    const v = (f) => form.elements[f].value.trim();
    if (v("from")) p.from = new Date(v("from") + "T00:00:00").toISOString();
    if (v("to")) { const d = new Date(v("to") + "T00:00:00"); d.setDate(d.getDate() + 1); p.to = d.toISOString(); }
    if (v("direction")) p.direction = v("direction");
    if (v("status") === "missed") p.missed = "true"; else if (v("status")) p.status = v("status");
    for (const f of ["operator", "did", "number", "q"]) if (v(f)) p[f] = v(f);
    if (p.operator) p.operator_role = v("operator_role") || "answered";
    p.limit = document.getElementById("page-size").value;
    p.sort = (sortDir < 0 ? "-" : "") + sortKey;
    return p;
  }

  /* What the form says wrong, in the reader's language, before asking the API. */
  function checkFilters() {
    const v = (f) => form.elements[f].value.trim();
    const digits = v("number").replace(/\D/g, "");
    if (v("number") && digits.length < 4) return T("error.code.number_too_short");
    if (v("from") && v("to") && v("to") < v("from")) return T("error.code.invalid_range");
    if (v("operator") && !/^\d{1,16}$/.test(v("operator"))) return T("error.invalid_parameter.operator");
    return null;
  }

  function exportLinks() {
    const p = apiParams();
    document.getElementById("export-csv").href = api.exportUrl(p, "csv");
    document.getElementById("export-xlsx").href = api.exportUrl(p, "xlsx");
  }

  /* The search's snippet marks the words found as [word] (GET /api/v1/calls?q=...). */
  function marked(text) {
    return text.split(/(\[[^\]]*\])/).filter(Boolean)
      .map(part => part.startsWith("[") && part.endsWith("]") ? h("mark", {}, part.slice(1, -1)) : part);
  }

  function render() {
    tbody.replaceChildren(...rows.flatMap(c => {
      const tr = h("tr", { dataset: { callId: c.id } },
        h("td", {}, h("a", { href: "/ui/calls/" + c.id }, fmt.dateTime(c.started_at))),
        h("td", {}, UI.direction(c)),
        h("td", {}, UI.customer(c), c.customer_name && c.customer_number ? h("div", { class: "muted small" }, c.customer_number) : null,
          " ", UI.c2c(c.customer_number, c.client_id)),
        h("td", {}, c.operator || ((c.operators_rung || []).length
          ? h("span", { class: "muted", title: T("call.rung") }, "(" + c.operators_rung.join(", ") + ")") : "—")),
        h("td", { class: "num" }, fmt.duration(c.wait_seconds)),
        h("td", { class: "num" }, fmt.duration(c.talk_seconds)),
        h("td", {}, UI.status(c)),
        h("td", {}, c.hasRecording ? h("button", { type: "button", class: "play", title: T("call.play"), "aria-label": T("call.play"),
                                                   dataset: { callId: c.id }, onclick: (ev) => play(c.id, ev.currentTarget) }, "▶") : ""));
      const sn = c.snippet;
      const extra = sn ? h("tr", { class: "snippet" }, h("td", { colspan: 8 },
        h("a", { href: "/ui/calls/" + c.id + (sn.offset !== null ? "#t=" + sn.offset : "") },
          sn.speaker ? T("speaker." + sn.speaker) + ": " : "", ...marked(sn.text)),
        sn.offset !== null ? " " + T("call.snippet_at", { time: fmt.duration(Math.floor(sn.offset)) })  /* a position: as players show it */ : "")) : null;
      return extra ? [tr, extra] : [tr];
    }));
    document.getElementById("journal-empty").hidden = rows.length > 0;
    document.getElementById("prev-page").disabled = cursors.length <= 1;
    document.getElementById("next-page").disabled = !next;
    document.getElementById("page-info").textContent = T("pager.page", { n: fmt.number(cursors.length) });
    document.querySelectorAll("#journal th.sort").forEach(th => {
      th.classList.toggle("asc", th.dataset.sort === sortKey && sortDir === 1);
      th.classList.toggle("desc", th.dataset.sort === sortKey && sortDir === -1);
    });
  }

  async function load() {
    const cursor = cursors[cursors.length - 1];
    const problem = checkFilters();
    const errorBox = document.getElementById("filter-error");
    errorBox.hidden = !problem;
    if (problem) { errorBox.textContent = problem; rows = []; next = null; render(); return; }
    exportLinks();
    try {
      const res = await api.calls(Object.assign(apiParams(), cursor ? { cursor } : {}));
      rows = res.items; next = res.next;
    } catch (e) { rows = []; next = null; errorBox.textContent = e.message; errorBox.hidden = false; }
    render();
  }

  /* The first page follows the calls as they happen: a call that starts or ends reloads it
     (at most once a second), unless the reader is on a later page. */
  let refreshTimer = null;
  window.addEventListener("pbx:event", (e) => {
    const ev = e.detail;
    if (!ev.type.startsWith("call.") || cursors.length > 1) return;
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => { refreshTimer = null; if (cursors.length === 1) load(); }, 1000);
  });

  let playing = null;
  function play(id, btn) {
    if (playing === id && !player.paused) { player.pause(); btn.textContent = "▶"; return; }
    document.querySelectorAll("button.play").forEach(b => { b.textContent = "▶"; });
    player.src = api.recordingUrl(id);
    playing = id;
    player.play().then(() => { btn.textContent = "❚❚"; }).catch(() => UI.toast(T("call.no_recording"), "error"));
  }
  player.addEventListener("ended", () => document.querySelectorAll("button.play").forEach(b => { b.textContent = "▶"; }));

  function saveUrl() {
    const q = new URLSearchParams();
    for (const f of FIELDS) if (form.elements[f].value) q.set(f, form.elements[f].value);
    if (sortKey !== "started_at" || sortDir !== -1) q.set("sort", (sortDir < 0 ? "-" : "") + sortKey);
    history.replaceState(null, "", "?" + q.toString());
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    saveUrl();
    cursors = [null]; load();
  });
  form.addEventListener("reset", () => { setTimeout(() => { history.replaceState(null, "", location.pathname); sortKey = "started_at"; sortDir = -1; cursors = [null]; load(); }, 0); });
  document.getElementById("next-page").addEventListener("click", () => { if (next) { cursors.push(next); load(); } });
  document.getElementById("prev-page").addEventListener("click", () => { if (cursors.length > 1) { cursors.pop(); load(); } });
  document.getElementById("page-size").addEventListener("change", () => { cursors = [null]; load(); });
  /* A new order is a new first page: the API sorts the whole journal. */
  document.querySelectorAll("#journal th.sort").forEach(th => th.addEventListener("click", () => {
    if (sortKey === th.dataset.sort) sortDir = -sortDir; else { sortKey = th.dataset.sort; sortDir = -1; }
    saveUrl();
    cursors = [null]; load();
  }));

  filtersFromUrl();
  load();
})();
