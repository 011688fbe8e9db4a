/* Operator's live panel: calls in progress (kept current by live events, with timers), my missed
   calls (marked once called back) and my tasks (due times, overdue ones stand out, live). */
"use strict";

(() => {
  const { h, T, api, fmt, showError } = UI;
  const user = PBX.user;
  const live = new Map();  // call id -> call

  function renderLive() {
    const tbody = document.querySelector("#live-calls tbody");
    const rows = [...live.values()].sort((a, b) => String(b.started_at).localeCompare(String(a.started_at)));
    tbody.replaceChildren(...rows.map(c => h("tr", { dataset: { callId: c.id } },
      h("td", {}, fmt.time(c.started_at)), h("td", {}, UI.direction(c)),
      h("td", {}, UI.customer(c), " ", UI.c2c(c.customer_number, c.client_id)),
      h("td", {}, c.operator || (c.operators_rung || []).join(", ") || "—"), h("td", {}, UI.status(c)))));
    document.getElementById("live-empty").hidden = rows.length > 0;
    document.getElementById("live-count").textContent = rows.length ? fmt.number(rows.length) : "";
  }

  /* status=live: calls the PBX still has channels for (an operator sees only their own). */
  async function loadLive() {
    const { items } = await api.calls({ status: "live", limit: 200 });
    for (const c of items) if (c.live && c.id !== null) live.set(c.id, c);
    renderLive();
  }

  async function loadMissed() {
    const since = new Date(Date.now() - 7 * 24 * 3600 * 1000).toISOString();
    // The API gives an operator only the calls they took part in; a manager with a phone sees
    // the ones that rang it.
    const params = { missed: "true", from: since, limit: 20 };
    if (user.role !== "operator" && user.extension) { params.operator = user.extension; params.operator_role = "rang"; }
    const { items } = await api.calls(params);
    const tbody = document.querySelector("#missed-calls tbody");
    tbody.replaceChildren(...items.map(c => h("tr", { class: c.called_back_at ? "called-back" : "", dataset: { callId: c.id } },
      h("td", {}, fmt.dateTime(c.started_at)), h("td", {}, UI.customer(c), " ", UI.c2c(c.customer_number, c.client_id)),
      h("td", {}, c.called_back_at ? h("span", { class: "badge st-answered called-back-mark", title: fmt.dateTime(c.called_back_at) }, "✓ " + T("live.called_back"))
                                  : UI.status(c)),
      h("td", {}, h("a", { href: "/ui/calls/" + c.id }, T("action.open"))))));
    document.getElementById("missed-empty").hidden = items.length > 0;
  }

  function taskItem(t) {
    const overdue = t.status !== "closed" && t.due && new Date(t.due) < new Date();
    const shared = t.assignee && !/^\d+$/.test(String(t.assignee));
    return h("li", { class: "task" + (overdue ? " overdue" : ""), dataset: { taskId: t.id, due: t.due || "" } },
      h("div", {},
        h("strong", {}, t.title || (t.kind === "task" ? T("task.task") : T("task.call_back"))),
        t.due ? h("span", { class: "due" }, " · " + (overdue ? T("task.overdue") : T("task.due")) + " " + fmt.dateTime(t.due)) : null,
        shared ? h("span", { class: "badge" }, " " + T("task.shared")) : null,
        h("div", {}, t.client_id ? h("a", { href: "/ui/clients/" + t.client_id }, t.client_name || T("task.client_card")) : null, " ",
          t.phone ? UI.phone(t.phone, t.client_id) : null)),
      // A manager closes no task (README, Roles): no button to refuse.
      (PBX.user || {}).role === "manager" ? null : h("button", { type: "button", class: "secondary small", onclick: async (ev) => {
        try { await api.closeTask(t.id); ev.target.closest("li").remove(); UI.toast(T("task.closed"), "ok"); tasksEmpty(); } catch (e) { showError(e); }
      } }, T("task.close")));
  }
  function tasksEmpty() { document.getElementById("tasks-empty").hidden = document.getElementById("tasks").children.length > 0; }

  async function loadTasks() {
    // Mine: assigned to my extension, the missed calls that rang me, and the shared group's.
    const tasks = await api.tasks({ status: "open", mine: "true", order: "due", limit: 100 });
    document.getElementById("tasks").replaceChildren(...tasks.filter(t => t.status !== "closed").map(taskItem));
    tasksEmpty();
  }
  // Overdue ones stand out as their due time passes, without a reload.
  setInterval(() => document.querySelectorAll("#tasks li.task[data-due]").forEach(li => {
    if (li.dataset.due && new Date(li.dataset.due) < new Date()) li.classList.add("overdue");
  }), 15000);

  let reloadTasks = null;
  window.addEventListener("pbx:event", (e) => {
    const ev = e.detail;
    if (ev.type === "task.updated") {
      clearTimeout(reloadTasks);
      reloadTasks = setTimeout(() => loadTasks().catch(() => {}), 100);
      if (ev.task && ev.task.status === "closed") loadMissed().catch(() => {});
      return;
    }
    if (!ev.call || ev.call.id === null) return;
    if (["call.ended", "call.missed"].includes(ev.type) || !ev.call.live) {
      live.delete(ev.call.id);
      if (ev.type === "call.missed" || (ev.type === "call.ended" && ev.call.status === "answered")) loadMissed().catch(() => {});
    } else if (ev.type.startsWith("call.")) {
      live.set(ev.call.id, ev.call);
    }
    renderLive();
  });

  loadLive().catch(showError);
  loadMissed().catch(showError);
  loadTasks().catch((e) => {
    const empty = document.getElementById("tasks-empty");
    if (e.status === 403) empty.textContent = T("error.not_for_role");  // the API's roles decide
    else showError(e);
    empty.hidden = false;
  });
})();
