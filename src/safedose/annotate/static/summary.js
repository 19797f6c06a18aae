// The summary page (admin). Names and numbers only ever go through textContent.
"use strict";
(() => {
  const KEY = "safedose-admin-token";
  const $ = (id) => document.getElementById(id);

  function readToken() {
    const match = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(KEY, match[1]);
      history.replaceState(null, "", location.pathname);
    }
    return sessionStorage.getItem(KEY) || "";
  }
  const token = readToken();

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error(data.error || response.statusText);
    }
    return response;
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function row(cells) {
    const tr = el("tr");
    for (const [text, className] of cells) tr.appendChild(el("td", text, className));
    return tr;
  }

  const fixed = (x, digits = 2) => (x === null || x === undefined ? "–" : (Math.abs(x) < 0.005 ? 0 : x).toFixed(digits));
  const interval = (value, ci) => fixed(value) + (ci ? " [" + fixed(ci[0]) + ", " + fixed(ci[1]) + "]" : "");

  function agreementBlock(title, data) {
    const box = el("div");
    box.appendChild(el("h3", title));
    const alpha = data.krippendorff;
    const line = el("p");
    line.appendChild(el("span", "Krippendorff's α " + interval(alpha.alpha, alpha.alpha_ci95), "big"));
    line.appendChild(el("span", "  over " + alpha.n_items + " items labelled by two or more of " +
      alpha.n_annotators + " annotators", "muted"));
    box.appendChild(line);
    if (!data.pairs.length) {
      box.appendChild(el("p", "No pair of annotators has labelled the same item yet.", "muted"));
      return box;
    }
    const table = el("table");
    const head = el("tr");
    for (const h of ["pair", "items both labelled", "raw agreement", "Cohen's κ [95% CI]"]) head.appendChild(el("th", h));
    table.appendChild(head);
    for (const p of data.pairs) {
      table.appendChild(row([[p.annotators.join(" · ")], [String(p.n), "num"], [fixed(p.agreement), "num"],
        [interval(p.kappa, p.kappa_ci95), "num"]]));
    }
    box.appendChild(table);
    return box;
  }

  function render(data) {
    $("totals").textContent = data.labels + " labels on " + data.labelled_items + " of " + data.items +
      " items (" + data.shared_items + " shared by everyone)";
    const people = document.querySelector("#people tbody");
    for (const p of data.annotators) {
      people.appendChild(row([[p.name], [String(p.labelled), "num"], [p.shared_labelled + " of " + data.shared_items, "num"],
        [p.invited ? "invite link" : "imported"]]));
    }
    $("agreement").appendChild(agreementBlock("Refusal class (full compliance / full refusal / partial refusal)",
      data.agreement.refusal));
    $("agreement").appendChild(agreementBlock("Harmful: yes / no (unsafe prompts)", data.agreement.harmful));
    const judges = document.querySelector("#judges tbody");
    if (!data.judges.length) judges.appendChild(row([["no human label yet"], [""], [""], [""], [""], [""]]));
    for (const j of data.judges) {
      if (j.error) {
        judges.appendChild(row([[j.judge], [j.error], [""], [""], [""], [""]]));
        continue;
      }
      const out = j.ties_left_out + " ties, " + j.unjudged_left_out + " unjudged";
      judges.appendChild(row([[j.judge], [j.target], [String(j.n), "num"],
        [j.n ? interval(j.kappa, j.kappa_ci95) : "–", "num"], [j.n ? fixed(j.accuracy) : "–", "num"], [out]]));
    }
    $("main").hidden = false;
  }

  async function download(format) {
    const response = await api("/api/admin/export?format=" + encodeURIComponent(format));
    const name = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") || "");
    const url = URL.createObjectURL(await response.blob());
    const link = el("a");
    link.href = url;
    link.download = name ? name[1] : "labels";
    link.click();
    URL.revokeObjectURL(url);
  }

  async function start() {
    try {
      render(await (await api("/api/admin/summary")).json());
    } catch (error) {
      $("message").textContent = error.message;
      $("message").hidden = false;
      return;
    }
    for (const button of document.querySelectorAll("[data-format]")) {
      button.addEventListener("click", () => download(button.getAttribute("data-format")).catch((e) => alert(e.message)));
    }
  }

  start();
})();
