// Baseliner console: the live page's updates (server-sent events from /live/events).
// Every page works without this script; here only the Live page adds new anomalies as they come.
"use strict";

(function () {
  const table = document.getElementById("live");
  const status = document.getElementById("live-status");
  if (!table || !status || !window.EventSource) {
    return;
  }
  const body = table.tBodies[0];
  const MAX_ROWS = 200;
  let seen = Number(status.dataset.seen || 0);
  let added = 0;

  function fmt(x) {  // as the server writes numbers (service/console/charts.py: fmt)
    if (x === null || x === undefined || !isFinite(x)) { return "-"; }
    if (x === 0) { return "0"; }
    const a = Math.abs(x);
    if (a >= 100) { return Math.round(x).toLocaleString("en-US"); }
    if (a >= 1) { return x.toFixed(1); }
    return String(Number(x.toPrecision(2)));
  }

  function when(t) {
    return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }

  function link(href, text) {
    const a = el("a", text);
    a.href = href;
    return a;
  }

  function severity(s) {
    return el("span", s, "sev sev-" + s);
  }

  function row(a) {
    const tr = document.createElement("tr");
    tr.dataset.event = a.event_id;
    tr.className = "new";
    const cells = [];
    for (let i = 0; i < 8; i++) { cells.push(document.createElement("td")); }
    cells[0].appendChild(link("/anomaly/" + encodeURIComponent(a.event_id), when(a.first_seen)));
    cells[0].className = "time";
    cells[1].appendChild(severity(a.severity));
    cells[2].appendChild(link("/image?key=" + encodeURIComponent(a.image), a.image));
    cells[3].appendChild(document.createTextNode(a.namespace + "/" + a.pod));
    cells[3].appendChild(document.createElement("br"));
    cells[3].appendChild(el("span", a.node, "muted"));
    cells[4].textContent = a.kinds.join(", ");
    cells[5].textContent = fmt(a.score) + " / " + fmt(a.threshold);
    cells[5].className = "num";
    cells[6].textContent = String(a.count);
    cells[6].className = "num";
    cells[7].textContent = a.novel.length ? a.novel.map(function (n) { return "new " + n.replace("_", " "); }).join(", ") : a.why;
    cells[7].className = "why";
    if (a.falco.length) { cells[7].appendChild(el("span", " Falco: " + a.falco.join(", "), "falco")); }
    cells.forEach(function (c) { tr.appendChild(c); });
    return tr;
  }

  function update(a) {
    const tr = body.querySelector('tr[data-event="' + CSS.escape(a.event_id) + '"]');
    if (!tr) { return; }
    tr.cells[1].replaceChildren(severity(a.severity));
    tr.cells[6].textContent = String(a.count);
  }

  function say() {
    status.textContent = seen.toLocaleString("en-US") + " anomalies since the service started; " + added +
      " new since this page opened.";
  }

  const source = new EventSource("/live/events");
  source.addEventListener("anomalies", function (e) {
    const items = JSON.parse(e.data);
    items.forEach(function (a) {
      if (a.lost) {
        status.textContent = "Some updates were missed (the page fell behind): reload for the full list.";
        return;
      }
      if (a.update) { update(a); return; }
      seen += 1;
      added += 1;
      body.insertBefore(row(a), body.firstChild);
    });
    while (body.rows.length > MAX_ROWS) { body.deleteRow(body.rows.length - 1); }
    say();
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      status.textContent = "Live updates stopped (logged out, or the service stopped): reload the page.";
    }
  });
}());
