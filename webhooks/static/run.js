// Keeps a run's page current while the run goes on: fetch the same page every 2 s and swap
// its <main>; stop once the page says the run reached an end state.
(function () {
  "use strict";
  var PERIOD_MS = 2000;
  function live() {
    var main = document.querySelector("main");
    return main !== null && main.getAttribute("data-live") === "true";
  }
  function refresh() {
    fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.text() : Promise.reject(answer.status); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (fresh !== null) { document.querySelector("main").replaceWith(fresh); }
      })
      .catch(function () { /* a missed refresh is retried at the next tick */ })
      .finally(function () { if (live()) { window.setTimeout(refresh, PERIOD_MS); } });
  }
  if (live()) { window.setTimeout(refresh, PERIOD_MS); }
})();
