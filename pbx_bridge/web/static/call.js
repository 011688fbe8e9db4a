/* Call page: facts, the recording (the browser seeks with Range requests), the transcript as a
   dialog whose words light up as the audio plays and seek the audio when clicked, tags, the card. */
"use strict";

(() => {
  const { h, T, api, fmt, showError } = UI;
  const id = PBX.data.call_id;
  const player = document.getElementById("player");
  let words = [];  // [{start, end, el}] in time order
  let current = [];

  function fact(label, value) { return [h("dt", {}, label), h("dd", {}, value)]; }

  async function loadCall() {
    const c = await api.call(id);
    document.getElementById("call-title").textContent = T("call.title_of", { time: fmt.dateTime(c.started_at) });
    document.getElementById("call-facts").replaceChildren(...[
      fact(T("col.direction"), UI.direction(c)),
      fact(T("col.customer"), h("span", {}, UI.customer(c), " ", UI.phone(c.customer_number, c.client_id))),
      c.did ? fact(T("filter.did"), c.did) : null,
      fact(T("col.operator"), c.operator || "—"),
      (c.operators_rung || []).length ? fact(T("call.rung"), c.operators_rung.join(", ")) : null,
      (c.transfers || []).length ? fact(T("call.transfers"), c.transfers.map(t => (t.from_operator || "?") + " → " + (t.to_operator || "?")).join("; ")) : null,
      fact(T("col.status"), UI.status(c)),
      fact(T("call.started"), fmt.dateTime(c.started_at)),
      fact(T("col.wait"), fmt.duration(c.wait_seconds)),
      fact(T("col.talk"), fmt.duration(c.talk_seconds)),
    ].filter(Boolean).flat());
    if (c.hasRecording) { player.src = api.recordingUrl(id); document.getElementById("download").href = api.recordingUrl(id); }
    else noRecording();
    player.addEventListener("error", noRecording);
    renderTags(c.tags);
    loadClient(c).catch((e) => {
      if (e.status === 403) document.getElementById("client-summary").replaceChildren(h("p", { class: "muted" }, T("error.not_for_role")));
      else showError(e);
    });
    return c;
  }

  function noRecording() {
    player.hidden = true; document.getElementById("player-tools").hidden = true;
    document.getElementById("no-recording").hidden = false;
  }

  /* Player: 1x / 1.5x / 2x, download, and keys: space plays or pauses, arrows seek 5 s. */
  document.querySelectorAll("button.speed").forEach(b => b.addEventListener("click", () => {
    player.playbackRate = Number(b.dataset.rate);
    document.querySelectorAll("button.speed").forEach(x => x.classList.toggle("active", x === b));
  }));
  document.addEventListener("keydown", (ev) => {
    if (player.hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target.closest && ev.target.closest("input, textarea, select, button, a")) return;
    if (ev.key === " ") { ev.preventDefault(); if (player.paused) { const p = player.play(); if (p && p.catch) p.catch(() => {}); } else player.pause(); }
    else if (ev.key === "ArrowRight") { ev.preventDefault(); player.currentTime = Math.min(player.duration || 1e9, player.currentTime + 5); highlight(); }
    else if (ev.key === "ArrowLeft") { ev.preventDefault(); player.currentTime = Math.max(0, player.currentTime - 5); highlight(); }
  });

  /* Which model and language made the transcript; a model not of the installation's language is
     a warning (the Korean demo model on a Russian installation). */
  function langName(code) { const key = "language." + code; const text = T(key); return text === key ? String(code) : text; }
  function renderModel(tr) {
    const configured = PBX.data.transcription || {};
    const model = (tr && tr.model) || configured.model;
    const language = (tr && tr.language) || configured.language;
    const el = document.getElementById("transcript-model");
    el.textContent = model ? T("transcript.model", { model, language: langName(language) }) : T("transcript.no_model");
    const expected = configured.region_languages || [];
    const warn = document.getElementById("model-warning");
    const mismatch = language && expected.length && !expected.includes(String(language).split("-")[0]);
    warn.hidden = !mismatch;
    if (mismatch) warn.textContent = T("transcript.language_warning", { language: langName(language), expected: expected.map(langName).join(", ") });
  }

  function renderTags(tags) {
    const box = document.getElementById("tags");
    const seen = new Set([...box.querySelectorAll(".tag")].map(e => e.dataset.label));
    for (const t of tags) {
      if (!t.label || seen.has(t.label)) continue;  // one chip per word, the first kind given
      seen.add(t.label);
      const el = h(t.start !== null ? "button" : "span", { type: t.start !== null ? "button" : null, class: "tag " + (t.kind ? "tag-" + t.kind : ""),
        dataset: { label: t.label }, title: t.kind ? T("tag." + t.kind) : null }, t.label, t.start !== null ? " · " + fmt.duration(Math.floor(t.start)) : "");
      if (t.start !== null) el.addEventListener("click", () => seek(Number(t.start)));
      box.append(el);
    }
    document.getElementById("no-tags").hidden = box.children.length > 0;
  }

  async function loadClient(c) {
    const box = document.getElementById("client-summary");
    if (!c.client_id) {
      box.replaceChildren(h("p", { class: "muted" }, T("pop.new_contact")),
        c.customer_number ? h("a", { class: "button secondary", href: "/ui/clients/new?phone=" + encodeURIComponent(c.customer_number) }, T("pop.create_card")) : "");
      return;
    }
    const card = await api.client(c.client_id);
    box.replaceChildren(h("h3", {}, h("a", { href: "/ui/clients/" + card.id }, card.name || T("client.unnamed"))),
      h("dl", { class: "facts" },
        card.company ? fact(T("client.company"), card.company) : null,
        fact(T("client.phones"), h("span", {}, ...card.phones.flatMap((p, i) => [i ? ", " : "", UI.phone(p.number, card.id)]))),
        fact(T("client.responsible"), card.responsible ? String(card.responsible) : "—"),
        card.notes ? fact(T("client.notes"), card.notes) : null));
  }

  function renderJob(job) {
    const el = document.getElementById("job-state");
    if (!job || !job.state || job.state === "done") { el.hidden = true; return; }
    el.textContent = T("job." + job.state, { error: job.error || "" });
    el.className = job.state === "failed" ? "error" : "muted";
    el.hidden = false;
  }

  /* Per-side figures from the transcription's analytics: talk, words per minute, interruptions. */
  function renderAnalytics(a) {
    const dl = document.getElementById("analytics");
    if (!a) { dl.hidden = true; return; }
    const sides = ["operator", "customer"];
    const perSide = (obj, f) => sides.filter(s => obj && obj[s] !== undefined).map(s => T("speaker." + s) + " " + f(obj[s])).join(" · ");
    const rows = [];
    if (a.talk_seconds) rows.push([T("analytics.talk"), perSide(a.talk_seconds, fmt.duration)]);
    if (a.silence_seconds !== undefined) rows.push([T("analytics.silence"), fmt.duration(a.silence_seconds)]);
    if (a.words_per_minute) rows.push([T("analytics.wpm"), perSide(a.words_per_minute, fmt.number)]);
    if (a.interruptions) rows.push([T("analytics.interruptions"), perSide(a.interruptions, fmt.number)]);
    dl.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    dl.hidden = rows.length === 0;
  }

  async function loadTranscript() {
    const tr = await api.transcript(id);
    const box = document.getElementById("transcript");
    renderModel(tr);
    renderJob(tr && tr.job);
    renderAnalytics(tr && tr.analytics);
    if (!tr || !tr.turns.length) { document.getElementById("no-transcript").hidden = false; if (tr) renderTags(tr.tags); return; }
    document.getElementById("no-transcript").hidden = true;
    words = [];
    box.replaceChildren(...tr.turns.map(turn => {
      const speaker = turn.speaker === "operator" ? "operator" : "customer";
      const text = h("p", { class: "turn-text" });
      if (turn.words.length) {
        turn.words.forEach((w, i) => {
          const el = h("span", { class: "word", dataset: { start: w.start, end: w.end }, title: fmt.duration(w.start) + (w.conf !== null ? " · " + Math.round(w.conf * 100) + "%" : "") }, w.word);
          if (w.conf !== null && w.conf < 0.6) el.classList.add("unsure");
          words.push({ start: w.start, end: w.end, el });
          text.append(el, i < turn.words.length - 1 ? " " : "");
        });
      } else {
        text.append(turn.text);
      }
      return h("div", { class: "turn " + speaker, dataset: { start: turn.start } },
        h("div", { class: "turn-meta" }, h("button", { type: "button", class: "link", onclick: () => seek(turn.start) }, fmt.duration(turn.start)), " · ", T("speaker." + speaker)),
        text);
    }));
    words.sort((a, b) => a.start - b.start);
    renderTags(tr.tags);
    // A link from a search hit (#t=12.3) starts there.
    const m = /^#t=([0-9.]+)$/.exec(location.hash);
    if (m) { player.currentTime = Number(m[1]); highlight(); }
  }

  function seek(t) {
    if (!Number.isFinite(t)) return;
    player.currentTime = t;
    highlight();
    const p = player.play();
    if (p && p.catch) p.catch(() => {});
  }

  document.getElementById("transcript").addEventListener("click", (ev) => {
    const w = ev.target.closest && ev.target.closest(".word");
    if (w) seek(Number(w.dataset.start));
  });

  /* Highlight the words being spoken (binary search; a frame loop while playing). */
  function highlight() {
    const t = player.currentTime;
    let lo = 0, hi = words.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (words[mid].start <= t) lo = mid + 1; else hi = mid; }
    const now = [];
    for (let i = lo - 1; i >= 0 && i >= lo - 8; i--) if (words[i].start <= t && t < words[i].end) now.push(words[i].el);
    if (now.length === current.length && now.every((e, i) => e === current[i])) return;
    current.forEach(e => { e.classList.remove("current"); e.closest(".turn").classList.remove("speaking"); });
    now.forEach(e => { e.classList.add("current"); e.closest(".turn").classList.add("speaking"); });
    if (now.length && !player.paused) now[0].scrollIntoView({ block: "nearest" });
    current = now;
  }
  function loop() { highlight(); if (!player.paused) requestAnimationFrame(loop); }
  player.addEventListener("play", () => requestAnimationFrame(loop));
  player.addEventListener("seeked", highlight);
  player.addEventListener("timeupdate", highlight);

  window.addEventListener("pbx:event", (e) => {
    const ev = e.detail;
    const about = ev.raw && String(ev.raw.call_id ?? (ev.call && ev.call.id)) === String(id);
    if (ev.type === "transcript.ready" && about) loadTranscript().catch(transcriptRefused);
    if (ev.type === "recording.ready" && about) {
      player.hidden = false; document.getElementById("no-recording").hidden = true;
      player.src = api.recordingUrl(id) + "?v=" + Date.now();
    }
  });

  /* The API decides who may read a transcript (operators: the calls they took); a refusal is
     said in the transcript's place, not as an error. */
  function transcriptRefused(e) {
    if (e.status !== 403) { showError(e); return; }
    document.getElementById("no-transcript").hidden = true;
    document.getElementById("transcript").replaceChildren(h("p", { class: "muted" }, T("error.not_for_role")));
  }

  /* A call that is not there (or not the reader's to see): said in place of the empty page. */
  function callMissing(e) {
    if (e.status !== 404 && e.status !== 403) { showError(e); return; }
    document.getElementById("call-layout").hidden = true;
    const box = document.getElementById("call-error");
    box.textContent = T("call.not_found");
    box.hidden = false;
  }
  loadCall().then(() => loadTranscript().catch(transcriptRefused)).catch(callMissing);
})();
