/* Client cards: search by name or phone, cursor "more" pagination. */
"use strict";

(() => {
  const { h, T, api, showError } = UI;
  const form = document.getElementById("client-search");
  const tbody = document.querySelector("#clients tbody");
  let next = null;

  function row(c) {
    return h("tr", { dataset: { clientId: c.id } },
      h("td", {}, h("a", { href: "/ui/clients/" + c.id }, c.name || T("client.unnamed"))),
      h("td", {}, ...c.phones.map(p => UI.phone(p.number, c.id))),
      h("td", {}, c.responsible ? String(c.responsible) : "—"),
      h("td", {}, c.company || ""));
  }

  async function load(more) {
    const q = form.elements.q.value.trim();
    document.getElementById("clients-hint").hidden = Boolean(q);
    if (!q) {  // the API searches; it does not list every card
      tbody.replaceChildren(); next = null;
      document.getElementById("clients-empty").hidden = true; document.getElementById("more").hidden = true;
      return;
    }
    try {
      const res = await api.clients(Object.assign({ q, limit: 50 }, more && next ? { cursor: next } : {}));
      if (!more) tbody.replaceChildren();
      tbody.append(...res.items.map(row));
      next = res.next;
    } catch (e) {
      if (e.status === 403) { document.getElementById("clients-empty").textContent = T("error.not_for_role"); tbody.replaceChildren(); }
      else showError(e);
    }
    document.getElementById("clients-empty").hidden = tbody.children.length > 0;
    document.getElementById("more").hidden = !next;
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    history.replaceState(null, "", "?q=" + encodeURIComponent(form.elements.q.value.trim()));
    load(false);
  });
  document.getElementById("more").addEventListener("click", () => load(true));
  form.elements.q.value = new URLSearchParams(location.search).get("q") || "";
  load(false);
})();
