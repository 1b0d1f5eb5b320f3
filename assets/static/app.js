// fmappliance dashboard behaviour. No inline scripts anywhere (the CSP forbids them).
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Every htmx request carries the session's CSRF token in a header.
  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  // htmx does not swap error answers: show them, and send an ended session to the login page.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
      return;
    }
    var text = "The dashboard answered " + xhr.status + ".";
    // DOMParser builds an inert document: nothing in it runs.
    var parsed = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var inner = parsed.querySelector(".notice");
    if (inner && inner.textContent) {
      text = inner.textContent;
    }
    showError(text);
  });

  // A form marked data-swap-errors (the schedule, restore and import forms) shows its 400
  // answer in place: that answer is the form again, with a message under each wrong field
  // (409/502: the agent refused or is away, said on top of the form).
  document.addEventListener("htmx:beforeSwap", function (event) {
    var config = event.detail.requestConfig;
    var elt = config && config.elt;
    var status = event.detail.xhr.status;
    if ((status === 400 || status === 409 || status === 502) && elt && elt.closest && elt.closest("[data-swap-errors]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:sendError", function () {
    showError("The dashboard cannot be reached; check the connection.");
  });

  // An error notice on top of the page's action results (text only: never parsed as HTML).
  function showError(text) {
    var area = document.getElementById("action-results");
    if (!area) {
      return;
    }
    var notice = document.createElement("div");
    notice.className = "notice notice-error";
    notice.setAttribute("role", "alert");
    notice.textContent = text;
    area.insertBefore(notice, area.firstChild);
  }
})();
