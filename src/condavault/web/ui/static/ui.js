// condavault web UI: copy buttons and live progress of mirror runs. No framework, no build step.
"use strict";
document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button[data-copy]");
  if (!btn) return;
  const src = document.getElementById(btn.dataset.copy);
  const note = btn.parentElement.querySelector(".copied");
  try {
    await navigator.clipboard.writeText(src.textContent);
    if (note) note.textContent = "Copied.";
  } catch (e) {
    const range = document.createRange();
    range.selectNodeContents(src);
    const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    if (note) note.textContent = "Selected: press Ctrl+C to copy.";
  }
});

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? v + " B" : v.toFixed(1) + " " + units[i];
}

function pollRun(box) {
  const url = box.dataset.poll;
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  const tick = async () => {
    let run;
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } });
      if (!r.ok) { setTimeout(tick, 3000); return; }
      run = await r.json();
    } catch (e) { setTimeout(tick, 3000); return; }
    const p = run.progress;
    set("run-status", run.status); set("run-phase", run.phase);
    set("run-done", p.done_items); set("run-total", p.total_items);
    set("run-bytes", fmtBytes(p.done_bytes)); set("run-total-bytes", fmtBytes(p.total_bytes));
    const bar = document.getElementById("run-progress");
    if (bar) { bar.max = Math.max(1, p.total_items); bar.value = p.done_items; }
    const err = document.getElementById("run-error");
    if (err) { err.textContent = run.error || ""; err.hidden = !run.error; }
    const counts = document.getElementById("run-counts");
    if (counts && run.counts) {
      const ul = document.createElement("ul");
      for (const [k, v] of Object.entries(run.counts)) {
        const li = document.createElement("li"); li.textContent = k + ": " + JSON.stringify(v); ul.appendChild(li);
      }
      counts.replaceChildren(ul);
    }
    box.dataset.status = run.status;
    if (!["completed", "failed", "cancelled"].includes(run.status)) setTimeout(tick, 1000);
  };
  tick();
}

// parts of a page that take longer to compute (a package's dependants) load after the page is shown
async function loadPart(box) {
  try {
    const r = await fetch(box.dataset.src, { credentials: "same-origin", headers: { "Accept": "text/html" } });
    if (r.ok) box.innerHTML = await r.text();  // server-rendered, escaped HTML from this server
  } catch (e) { /* the link to the full page stays */ }
  box.setAttribute("aria-busy", "false");
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("run-live");
  if (box) pollRun(box);
  for (const part of document.querySelectorAll("[data-src]")) loadPart(part);
});
