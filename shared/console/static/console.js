// Breach Responder console: progressive enhancement only. The pages are complete without this file
// (server-rendered HTML, real links and forms); it refreshes the incidents list and submits the state
// filter when it changes. Nothing here builds HTML from strings: rows come from the server's own
// escaped page, parsed with DOMParser and imported as nodes.
(function () {
  "use strict";
  var body = document.body;
  var select = document.getElementById("state");
  if (select && select.form) {
    select.addEventListener("change", function () { select.form.submit(); });
  }
  var every = parseInt(body.getAttribute("data-refresh") || "0", 10);
  if (!every || !window.fetch || !window.DOMParser) { return; }
  function refresh() {
    if (document.hidden) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html");
        ["incidents", "refresh-status"].forEach(function (id) {
          var now = document.getElementById(id), next = fresh.getElementById(id);
          if (now && next) { now.replaceWith(document.importNode(next, true)); }
        });
      })
      .catch(function () {
        var status = document.getElementById("refresh-status");
        if (status) { status.textContent = "Could not refresh (signed out?). Reload the page."; }
      });
  }
  window.setInterval(refresh, every * 1000);
}());
