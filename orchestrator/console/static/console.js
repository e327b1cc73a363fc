// Live refresh: fetch this page's live part every few seconds and put it in place.
// The server renders it (escaped) as HTML; nothing here builds markup from data.
(() => {
  "use strict";
  // A shared link should say only what was chosen: leave empty fields out of it.
  for (const form of document.querySelectorAll("form.filters")) {
    form.addEventListener("submit", () => {
      for (const field of form.querySelectorAll("input, select")) {
        if (field.value === "") {
          field.disabled = true;
        }
      }
    });
  }

  const live = document.getElementById("live");
  const state = document.getElementById("live-state");
  const period = Number(document.body.dataset.refreshMs);
  if (!live || !state || !(period > 0)) {
    return;
  }
  let busy = false;
  let last = null;

  async function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    try {
      const answer = await fetch(window.location.href, {
        headers: { "X-Console-Partial": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!answer.ok) {
        throw new Error(`HTTP ${answer.status}`);
      }
      const html = await answer.text();
      if (html !== last) {
        live.innerHTML = html;
        last = html;
      }
      state.textContent = "live";
      state.className = "live-state";
    } catch (error) {
      state.textContent = "not updating";
      state.className = "live-state stale";
      state.title = String(error);
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, period);
  document.addEventListener("visibilitychange", refresh);
})();
