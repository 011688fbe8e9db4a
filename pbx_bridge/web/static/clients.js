/* Client cards: every card, most recently active first, filtered by responsible operator and
   source, searched by name, company, a number or any 4+ of its digits; "more" pages. */
"use strict";

(() => {
  const { h, T, api, fmt } = UI;
  const form = document.getElementById("client-search");
  const tbody = document.querySelector("#clients tbody");
  const FIELDS = ["q", "responsible", "source"];
  let next = null;

  function row(c) {
    return h("tr", { dataset: { clientId: c.id } },
      h("td", {}, h("a", { href: "/ui/clients/" + c.id }, c.name || T("client.unnamed"))),
      h("td", {}, ...c.phones.map(p => UI.phone(p.number, c.id))),
      h("td", {}, c.responsible ? String(c.responsible) : "—"),
      h("td", {}, c.company || ""),
      h("td", {}, c.source || ""),
      h("td", {}, fmt.dateTime(c.lastActivity)));
  }

  function params() {
    const p = { limit: 50 };
    for (const f of FIELDS) { const v = form.elements[f].value.trim(); if (v) p[f] = v; }
    return p;
  }

  function problem(p) {
    const q = p.q || "";
    const digits = q.replace(/\D/g, "");
    if (q && /^[\d\s()+\-.]+$/.test(q) && digits.length < 4) return T("error.code.number_too_short");
    if (p.responsible && !/^\d{1,16}$/.test(p.responsible)) return T("error.invalid_parameter.responsible");
    return null;
  }

  async function load(more) {
    const p = params();
    const errorBox = document.getElementById("clients-error");
    const wrong = problem(p);
    errorBox.hidden = !wrong;
    if (wrong) { errorBox.textContent = wrong; tbody.replaceChildren(); next = null; document.getElementById("more").hidden = true; return; }
    try {
      const res = await api.clients(Object.assign(p, more && next ? { cursor: next } : {}));
      if (!more) tbody.replaceChildren();
      tbody.append(...res.items.map(row));
      next = res.next;
    } catch (e) {
      tbody.replaceChildren(); next = null;
      errorBox.textContent = e.status === 403 ? T("error.not_for_role") : e.message;
      errorBox.hidden = false;
    }
    document.getElementById("clients-empty").hidden = tbody.children.length > 0;
    document.getElementById("more").hidden = !next;
  }

  function toUrl() {
    const q = new URLSearchParams();
    for (const f of FIELDS) if (form.elements[f].value.trim()) q.set(f, form.elements[f].value.trim());
    history.replaceState(null, "", q.toString() ? "?" + q.toString() : location.pathname);
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); toUrl(); load(false); });
  form.addEventListener("reset", () => setTimeout(() => { toUrl(); load(false); }, 0));
  document.getElementById("more").addEventListener("click", () => load(true));
  const fromUrl = new URLSearchParams(location.search);
  for (const f of FIELDS) form.elements[f].value = fromUrl.get(f) || "";
  load(false);
})();
