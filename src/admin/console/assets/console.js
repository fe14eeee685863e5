// hookrelay console: the only script, loaded from /ui/assets (the CSP
// allows no inline script). Pages work without it; it only
// - asks before a form marked data-confirm is sent (destructive actions),
// - refreshes the sections marked data-live every few seconds, by fetching
//   the same page and swapping those sections in (no JSON API, no token),
// - counts script errors and CSP violations on <html data-js-errors>, so a
//   browser test can tell the page ran clean.
"use strict";
(function () {
  var root = document.documentElement;
  var errors = 0;
  function report(what) {
    errors += 1;
    root.setAttribute("data-js-errors", String(errors));
    root.setAttribute("data-js-last-error", String(what).slice(0, 200));
  }
  window.addEventListener("error", function (e) { report(e.message || "error"); });
  window.addEventListener("unhandledrejection", function (e) { report(e.reason || "rejection"); });
  document.addEventListener("securitypolicyviolation", function (e) {
    report("CSP: " + e.violatedDirective);
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      e.preventDefault();
    }
  });

  var REFRESH_MS = 5000;
  function refresh() {
    if (document.visibilityState === "hidden") {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (resp) {
        // Logged out or gone: leave the page as it is.
        if (!resp.ok || resp.redirected) {
          return null;
        }
        return resp.text();
      })
      .then(function (text) {
        if (!text) {
          return;
        }
        var fresh = new DOMParser().parseFromString(text, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (old) {
          var next = fresh.getElementById(old.id);
          if (next) {
            old.replaceWith(document.importNode(next, true));
          }
        });
        root.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {
        // The relay restarting is not an error of the page; try again later.
      });
  }
  if (document.querySelector("[data-live]")) {
    window.setInterval(refresh, REFRESH_MS);
  }
  root.setAttribute("data-js", "ready");
})();
