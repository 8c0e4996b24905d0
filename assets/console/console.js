// dcr-gateway admin console: a little progressive enhancement. Every page works without it.
// Served from the binary as a separate file (the Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  // Ask before a destructive form is sent.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      e.preventDefault();
      return;
    }
    // One submission per click: a double click must not send the write twice.
    if (form.dataset && form.dataset.sent === "1") {
      e.preventDefault();
      return;
    }
    if (form.dataset) {
      form.dataset.sent = "1";
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    // Put the keyboard on the first field the gateway refused.
    var bad = document.querySelector("[aria-invalid=\"true\"]");
    if (bad) {
      bad.focus();
    }
    // Filters apply as soon as a choice is made.
    var filter = document.querySelector("form.filters select");
    if (filter) {
      filter.addEventListener("change", function () {
        filter.form.submit();
      });
    }
  });
})();
