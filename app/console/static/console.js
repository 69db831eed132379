// Conveyor console: confirmations, and the run page's live view (polling with ETag).
// Plain JavaScript, no build step and no third-party code.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  document.addEventListener("change", function (event) {
    if (event.target.id !== "select-all") { return; }
    document.querySelectorAll('input[name="ids"]').forEach(function (box) {
      box.checked = event.target.checked;
    });
  });

  var ICONS = { completed: "✓", failed: "✕", cancelled: "⊘", running: "▶", pending: "…" };

  function statusBadge(value) {
    var badge = document.createElement("span");
    badge.className = "status status-" + value.replace(/_/g, "-");
    badge.setAttribute("data-status", value);
    var icon = document.createElement("span");
    icon.className = "status-icon";
    icon.setAttribute("aria-hidden", "true");
    icon.textContent = ICONS[value] || "•";
    var text = document.createElement("span");
    text.className = "status-text";
    text.textContent = value;
    badge.append(icon, " ", text);
    return badge;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "—"; }
    if (seconds < 1) { return "< 1 s"; }
    if (seconds < 60) { return seconds.toFixed(1) + " s"; }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) { return minutes + " min " + Math.round(seconds % 60) + " s"; }
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function render(root, state) {
    var p = state.progress;
    var bar = document.getElementById("run-progress");
    bar.setAttribute("aria-valuemax", String(p.total));
    bar.setAttribute("aria-valuenow", String(state.finished));
    bar.setAttribute("aria-valuetext", state.finished + " of " + p.total + " entities finished");
    ["completed", "failed", "cancelled"].forEach(function (name) {
      var seg = bar.querySelector('[data-seg="' + name + '"]');
      seg.style.width = (p.total ? (100 * p[name] / p.total) : 0) + "%";
    });
    bar.classList.toggle("bar-running", !state.terminal);
    root.querySelectorAll("[data-count]").forEach(function (cell) {
      cell.textContent = String(p[cell.getAttribute("data-count")]);
    });
    document.getElementById("awaiting-stat").hidden = !p.awaitingApproval;
    var statusEl = document.getElementById("run-status");
    if (statusEl.getAttribute("data-status") !== state.status) {
      var badge = statusBadge(state.status);
      badge.id = "run-status";
      statusEl.replaceWith(badge);
    }
    document.getElementById("run-rate").textContent =
      state.rate ? state.rate.toFixed(1) + " /s" : "—";
    document.getElementById("run-started").textContent = state.startedAt;
    document.getElementById("run-completed").textContent = state.completedAt;
    document.getElementById("run-eta").textContent =
      state.terminal ? "—" : duration(state.etaSeconds);
    var error = document.getElementById("run-error");
    error.hidden = !state.error;
    error.textContent = state.error || "";

    var list = document.getElementById("reasons");
    list.replaceChildren();
    state.reasons.forEach(function (reason) {
      var link = document.createElement("a");
      link.className = "reason";
      link.href = reason.url;
      var count = document.createElement("span");
      count.className = "reason-count";
      count.textContent = String(reason.count);
      var message = document.createElement("span");
      message.className = "reason-message";
      message.textContent = reason.message;
      link.append(count, " ", message);
      var item = document.createElement("li");
      item.append(link);
      list.append(item);
    });
    document.getElementById("reasons-empty").hidden = state.reasons.length > 0;

    var retries = document.getElementById("retry-links");
    retries.replaceChildren();
    state.retries.forEach(function (retry) {
      var link = document.createElement("a");
      link.className = "retry-link";
      link.href = retry.url;
      link.append("Retry run ");
      var code = document.createElement("code");
      code.textContent = retry.id;
      link.append(code);
      var item = document.createElement("li");
      item.append(link, " ", statusBadge(retry.status));
      retries.append(item);
    });
    document.getElementById("retries").hidden = state.retries.length === 0;

    var cancel = document.getElementById("cancel-form");
    if (cancel) { cancel.hidden = state.terminal; }
    var retry = document.getElementById("retry-form");
    if (retry) { retry.hidden = !(state.terminal && (p.failed > 0 || p.cancelled > 0)); }
  }

  function refreshItems(root) {
    var url = root.getAttribute("data-items-url") + window.location.search;
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) { document.getElementById("items-body").innerHTML = html; }
      });
  }

  function startLive(root) {
    var etag = null;
    var state = JSON.parse(document.getElementById("run-state").textContent);
    render(root, state);
    if (state.terminal) { return; }
    function poll() {
      var headers = { Accept: "application/json" };
      if (etag) { headers["If-None-Match"] = etag; }
      fetch(root.getAttribute("data-live-url"), { credentials: "same-origin", headers: headers })
        .then(function (response) {
          if (response.status === 304) { return null; }
          if (!response.ok) { throw new Error("live update failed: " + response.status); }
          etag = response.headers.get("ETag");
          return response.json();
        })
        .then(function (next) {
          if (next) {
            state = next;
            render(root, state);
            return refreshItems(root);
          }
        })
        .catch(function () { /* a hiccup: try again on the next tick */ })
        .finally(function () {
          if (!state.terminal) { window.setTimeout(poll, 1000); }
        });
    }
    window.setTimeout(poll, 500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("run");
    if (root) { startLive(root); }
  });
})();
