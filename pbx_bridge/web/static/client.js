/* Client card: facts with click-to-call, editing (PATCH; POST for a new card), the timeline of
   calls (with players), tasks and notes. */
"use strict";

(() => {
  const { h, T, api, fmt, showError } = UI;
  let id = PBX.data.client_id;
  const form = document.getElementById("client-form");
  let card = null;

  function fact(label, value) { return [h("dt", {}, label), h("dd", {}, value)]; }

  /* The API's rule (README, Roles): a manager closes no task; an operator closes their own and
     the shared call-back group's (an assignee that is not an extension). */
  const me = PBX.user || {};
  function mayClose(t) {
    if (me.role === "manager") return false;
    if (me.role !== "operator") return true;
    return t.assignees.includes(me.extension) || (t.assignee != null && !/^[0-9]+$/.test(String(t.assignee)));
  }

  function renderCard() {
    document.getElementById("client-title").textContent = card.name || T("client.unnamed");
    document.getElementById("client-facts").replaceChildren(...[
      fact(T("client.phones"), h("span", { class: "phones" }, ...card.phones.map(p => h("span", { class: "phone-line" }, UI.phone(p.number, card.id))))),
      fact(T("client.responsible"), card.responsible ? String(card.responsible) : "—"),
      card.company ? fact(T("client.company"), card.company) : null,
      card.source ? fact(T("client.source"), card.source) : null,
      card.email ? fact(T("client.email"), card.email) : null,
      card.notes ? fact(T("client.notes"), h("span", { class: "pre" }, card.notes)) : null,
      card.tags.length ? fact(T("call.tags"), h("span", { class: "tags" }, ...card.tags.map(t => h("span", { class: "tag" }, t)))) : null,
    ].filter(Boolean).flat());
  }

  function edit(on) {
    document.getElementById("client-view").hidden = on;
    form.hidden = !on;
    document.getElementById("form-error").hidden = true;
    if (on && card) {
      form.elements.name.value = card.name; form.elements.company.value = card.company; form.elements.email.value = card.email;
      form.elements.notes.value = card.notes; form.elements.responsible.value = card.responsible ?? "";
      form.elements.source.value = card.source || "";
      form.elements.phones.value = card.phones.map(p => p.number).join("\n");
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const values = {
      name: form.elements.name.value.trim(), company: form.elements.company.value.trim(), email: form.elements.email.value.trim(),
      notes: form.elements.notes.value, responsible: form.elements.responsible.value.trim(),
      source: form.elements.source.value.trim(),
      phones: form.elements.phones.value.split(/[\n,;]+/).map(s => s.trim()).filter(Boolean),
    };
    try {
      if (id) { card = await api.updateClient(id, api.clientChangesBody(values, card)); }
      else { card = await api.createClient(api.newClientBody(values)); id = card.id; history.replaceState(null, "", "/ui/clients/" + id); }
      renderCard(); edit(false); UI.toast(T("client.saved"), "ok");
      showConflicts(card.conflicts);
      document.getElementById("card-actions").hidden = false;
      loadTimeline().catch(() => {});
    } catch (e) {
      const el = document.getElementById("form-error"); el.textContent = e.message; el.hidden = false;
    }
  });
  document.getElementById("edit-client").addEventListener("click", () => edit(true));
  document.getElementById("cancel-edit").addEventListener("click", () => { if (id) edit(false); else location.href = "/ui/clients"; });

  /* A number of this card is on another card too: say so, and offer to merge that card here. */
  function showConflicts(conflicts) {
    const box = document.getElementById("conflicts");
    const others = new Map();
    for (const c of conflicts || []) if (!others.has(c.client_id)) others.set(c.client_id, c);
    box.hidden = others.size === 0;
    box.replaceChildren(...[...others.values()].map(c => h("div", { class: "conflict", dataset: { otherId: c.client_id } },
      T("client.conflict", { phone: c.phone }), " ", h("a", { href: "/ui/clients/" + c.client_id }, c.name), " ",
      h("button", { type: "button", class: "primary small merge", onclick: () => merge(c.client_id, c.name) }, T("client.merge", { name: c.name })))));
  }
  async function merge(otherId, name) {
    if (!window.confirm(T("client.merge_confirm", { name }))) return;
    try {
      card = await api.mergeClients(id, otherId);
      renderCard(); showConflicts([]); UI.toast(T("client.merged", { name }), "ok");
      loadTimeline().catch(() => {});
    } catch (e) { showError(e); }
  }

  function actionError(e) { const el = document.getElementById("action-error"); el.textContent = e.message; el.hidden = false; }
  document.getElementById("note-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = ev.target.elements.text.value.trim();
    if (!text) { actionError({ message: T("error.invalid_field.text") }); return; }
    try { await api.addNote(id, text); ev.target.reset(); document.getElementById("action-error").hidden = true;
          UI.toast(T("client.note_added"), "ok"); loadTimeline().catch(() => {}); } catch (e) { actionError(e); }
  });
  document.getElementById("task-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const title = ev.target.elements.title.value.trim(), due = ev.target.elements.due.value;
    if (!title) { actionError({ message: T("error.invalid_field.title") }); return; }
    try { await api.createTask(Object.assign({ client_id: Number(id), title }, due ? { due_at: new Date(due).toISOString() } : {}));
          ev.target.reset(); document.getElementById("action-error").hidden = true;
          UI.toast(T("client.task_added"), "ok"); loadTimeline().catch(() => {}); } catch (e) { actionError(e); }
  });

  function entry(e) {
    const when = h("time", { datetime: e.at || "" }, fmt.dateTime(e.at));
    if (e.kind === "call" && e.call) {
      const c = e.call;
      return h("li", { class: "tl tl-call" }, h("div", { class: "tl-head" }, when, " ", UI.direction(c.direction), " ", UI.status(c),
          " ", h("span", { class: "muted" }, T("col.operator") + ": " + (c.operator || "—") + " · " + T("col.talk") + " " + fmt.duration(c.talk_seconds)),
          " ", c.id ? h("a", { href: "/ui/calls/" + c.id }, T("action.open")) : ""),
        c.hasRecording && c.id ? h("audio", { controls: true, preload: "none", src: api.recordingUrl(c.id) }) : null);
    }
    if (e.kind === "task" && e.task) {
      const t = e.task;
      const raw = e.raw.payload || {};
      const title = raw.title || (raw.task === "task" ? T("task.task") : T("task.call_back"));
      return h("li", { class: "tl tl-task" }, h("div", { class: "tl-head" }, when, " ", h("span", { class: "badge" }, T("timeline.task")), " ",
        h("strong", {}, title), " ", h("span", { class: "muted" }, T("task.status." + t.status))),
        t.status !== "closed" && mayClose(t) ? h("button", { type: "button", class: "secondary small", onclick: async (ev) => {
          try { await api.closeTask(t.id); ev.target.remove(); UI.toast(T("task.closed"), "ok"); } catch (err) { showError(err); } } }, T("task.close")) : null);
    }
    if (e.kind === "merge") {
      const p = e.raw.payload || {};
      return h("li", { class: "tl tl-note" }, h("div", { class: "tl-head" }, when, " ", h("span", { class: "badge" }, T("timeline.merge"))),
        h("p", {}, T("timeline.merged", { name: p.merged_name || "", id: p.merged_id || "" })));
    }
    return h("li", { class: "tl tl-note" }, h("div", { class: "tl-head" }, when, " ", h("span", { class: "badge" }, T("timeline." + e.kind))),
      e.text ? h("p", { class: "pre" }, e.text) : null, e.author ? h("span", { class: "muted small" }, "— " + e.author) : null);
  }

  async function loadTimeline() {
    // recording / transcript entries repeat what their call's entry links to.
    const list = (await api.timeline(id)).filter(e => e.kind !== "recording" && e.kind !== "transcript");
    list.sort((a, b) => String(b.at).localeCompare(String(a.at)));
    document.getElementById("timeline").replaceChildren(...list.map(entry));
    document.getElementById("timeline-empty").hidden = list.length > 0;
  }

  function refused(e) {
    if (e.status === 404) {  // no such card (merged away, deleted): said instead of an empty page
      document.getElementById("client-layout").hidden = true;
      const box = document.getElementById("client-error"); box.textContent = T("client.not_found"); box.hidden = false;
      return;
    }
    if (e.status !== 403) { showError(e); return; }
    document.getElementById("client-facts").replaceChildren(h("p", { class: "muted" }, T("error.not_for_role")));
    document.getElementById("edit-client").hidden = true;
  }

  if (id) {
    api.client(id).then(c => { card = c; renderCard(); }).catch(refused);
    loadTimeline().catch((e) => { if (e.status !== 403 && e.status !== 404) showError(e); });
  } else {
    card = { name: PBX.data.name || "", company: "", email: "", notes: "", source: PBX.data.source || "",
             responsible: PBX.user.extension || "", phones: PBX.data.phone ? [{ number: PBX.data.phone }] : [] };
    document.getElementById("client-title").textContent = T("clients.new");
    document.getElementById("card-actions").hidden = true;
    edit(true);
    document.getElementById("timeline-empty").hidden = false;
  }
})();
