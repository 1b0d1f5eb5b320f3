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

  // ---- Feedback where the operator clicked -------------------------------------------
  // An action button shows it is busy (and is disabled) until its job ends; then the page's
  // regions marked data-refresh (a stack's services and sites, a backup list, a restore
  // summary) are read again, so the row says "just now" instead of "no backup yet".
  var JOB_PANEL = /class="job-panel" id="job-([A-Za-z0-9_-]+)"/;
  var FINAL = { succeeded: true, failed: true, unknown: true };
  var pending = {}; // job id -> {key, label}
  var lastClicked = null;

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[type=submit]");
    if (button) {
      lastClicked = button;
    }
  }, true);

  // The URL a button posts to names it across a refresh of its region.
  function actionKey(button) {
    return button.getAttribute("hx-post") || (button.form && button.form.getAttribute("hx-post")) || "";
  }

  function findButton(key) {
    var found = null;
    document.querySelectorAll("button[type=submit]").forEach(function (button) {
      if (!found && actionKey(button) === key) {
        found = button;
      }
    });
    return found;
  }

  function statusAt(button) {
    var form = button.form || button.parentNode;
    var status = form.querySelector(".action-status");
    if (!status) {
      status = document.createElement("span");
      status.className = "action-status";
      status.setAttribute("role", "status");
      form.appendChild(status);
    }
    return status;
  }

  // Disabled and marked busy; ``phase`` ("sending…", "running…") is said beside it.
  function markBusy(button, phase) {
    if (!button) {
      return;
    }
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    if (phase) {
      var area = statusAt(button);
      area.textContent = button.textContent + ": " + phase;
      area.className = "action-status action-running";
    }
  }

  function release(button) {
    if (button) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  function showOutcome(button, label, jobId, status) {
    if (!button) {
      return;
    }
    var area = statusAt(button);
    area.textContent = label + ": " + status + " ";
    area.className = "action-status action-" + (status === "succeeded" ? "ok" : "failed");
    var link = document.createElement("a");
    // data-jobs carries the /s/<server> prefix of a page about another server.
    link.href = (document.body.getAttribute("data-jobs") || "/jobs/") + encodeURIComponent(jobId);
    link.textContent = "details";
    area.appendChild(link);
  }

  function buttonOf(elt) {
    if (elt.tagName === "BUTTON") {
      return elt;
    }
    if (elt.tagName === "FORM") {
      if (lastClicked && lastClicked.form === elt) {
        return lastClicked;
      }
      return elt.querySelector("button[type=submit]");
    }
    return null;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var config = event.detail.requestConfig;
    if (!config || config.verb !== "post") {
      return;
    }
    var button = buttonOf(event.detail.elt);
    if (button) {
      event.detail.elt.fmButton = button;
      // A form that answers in place (restore, import, schedule) needs no words beside it.
      markBusy(button, button.closest("[data-swap-errors]") ? "" : "sending…");
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    var button = elt.fmButton;
    if (!button) {
      return;
    }
    elt.fmButton = null;
    var label = button.textContent;
    var match = event.detail.successful && JOB_PANEL.exec(event.detail.xhr.responseText || "");
    if (!match) {
      release(button);
      var status = (button.form || button.parentNode).querySelector(".action-status");
      if (status) {
        status.remove();
      }
      return;
    }
    var jobId = match[1];
    var panel = document.getElementById("job-" + jobId);
    var state = panel ? panel.getAttribute("data-status") : "running";
    pending[jobId] = { key: actionKey(button), label: label };
    if (FINAL[state]) {
      jobEnded(jobId, state);
    } else if (document.contains(button)) {
      markBusy(button, "running…");
    }
  });

  // Every poll swaps in a new panel: the one that says the job ended releases its button.
  document.addEventListener("htmx:load", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.classList && elt.classList.contains("job-panel")) {
      var state = elt.getAttribute("data-status");
      var jobId = elt.getAttribute("data-job-id");
      if (pending[jobId] && FINAL[state]) {
        jobEnded(jobId, state);
      }
    }
  });

  function jobEnded(jobId, state) {
    var done = pending[jobId];
    delete pending[jobId];
    refreshRegions().then(function () {
      var button = findButton(done.key);
      release(button);
      showOutcome(button, done.label, jobId, state);
      // A refreshed region has fresh buttons: the jobs still running keep theirs busy.
      Object.keys(pending).forEach(function (id) {
        var other = findButton(pending[id].key);
        if (other && !other.disabled) {
          markBusy(other, "running…");
        }
      });
    });
  }

  // Read this page again and swap in its data-refresh regions (each has an id).
  function refreshRegions() {
    var regions = document.querySelectorAll("[data-refresh][id]");
    if (!regions.length) {
      return Promise.resolve();
    }
    return fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        return response.ok ? response.text() : "";
      })
      .then(function (text) {
        if (!text) {
          return;
        }
        var fresh = new DOMParser().parseFromString(text, "text/html");
        regions.forEach(function (region) {
          var replacement = fresh.getElementById(region.id);
          if (replacement) {
            var node = document.importNode(replacement, true);
            // A section the operator opened (a stack's services) stays open.
            var opened = region.querySelectorAll("details");
            node.querySelectorAll("details").forEach(function (details, i) {
              if (opened[i] && opened[i].open) {
                details.open = true;
              }
            });
            region.replaceWith(node);
            if (window.htmx) {
              window.htmx.process(node);
            }
          }
        });
      })
      .catch(function () {});
  }

  // ---- Step-up: the action that asked for it is sent again afterwards -------------------
  // The dashboard answers such a request with HX-Redirect to /account/verify; the action (its
  // URL and form fields, never the CSRF token) waits in this tab's sessionStorage and is sent
  // again, without a second confirmation dialog, once the page it came from is back.
  var RESUME_KEY = "fmappliance.resume";
  var RESUME_MAX_MS = 10 * 60 * 1000;

  document.addEventListener("htmx:beforeOnLoad", function (event) {
    var xhr = event.detail.xhr;
    var target = xhr.getResponseHeader("HX-Redirect") || "";
    var config = event.detail.requestConfig;
    if (target.indexOf("/account/verify") !== 0 || !config || config.verb !== "post") {
      return;
    }
    var elt = event.detail.elt;
    var form = elt.tagName === "FORM" ? elt : elt.form || elt.closest("form");
    var fields = [];
    if (form) {
      new FormData(form).forEach(function (value, name) {
        if (name !== "csrf_token" && typeof value === "string") {
          fields.push([name, value]);
        }
      });
    }
    try {
      window.sessionStorage.setItem(RESUME_KEY, JSON.stringify({
        page: window.location.pathname + window.location.search,
        post: elt.getAttribute("hx-post") || config.path,
        fields: fields,
        at: Date.now()
      }));
    } catch (e) {
      // No storage (private mode): the operator repeats the action, as before.
    }
  });

  // The operator already confirmed this action once: no second dialog for its resubmission.
  document.addEventListener("htmx:confirm", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-resuming")) {
      elt.removeAttribute("data-resuming");
      event.preventDefault();
      event.detail.issueRequest(true);
    }
  });

  function resume() {
    var saved = null;
    try {
      saved = JSON.parse(window.sessionStorage.getItem(RESUME_KEY) || "null");
      if (saved && saved.page === window.location.pathname + window.location.search) {
        window.sessionStorage.removeItem(RESUME_KEY);
      } else {
        saved = null;
      }
    } catch (e) {
      return;
    }
    if (!saved || Date.now() - saved.at > RESUME_MAX_MS) {
      return;
    }
    var elt = null;
    document.querySelectorAll("[hx-post]").forEach(function (candidate) {
      if (!elt && candidate.getAttribute("hx-post") === saved.post) {
        elt = candidate;
      }
    });
    if (!elt) {
      return;
    }
    var form = elt.tagName === "FORM" ? elt : elt.form || elt.closest("form");
    if (form) {
      saved.fields.forEach(function (pair) {
        var field = form.elements.namedItem(pair[0]);
        if (field && field.type === "checkbox") {
          field.checked = field.value === pair[1];
        } else if (field && field.type !== "hidden") {
          field.value = pair[1];
        }
      });
    }
    var area = document.getElementById("action-results");
    if (area) {
      var note = document.createElement("div");
      note.className = "notice notice-ok";
      note.setAttribute("role", "status");
      note.textContent = "Confirmed: the action you started goes on.";
      area.insertBefore(note, area.firstChild);
    }
    elt.setAttribute("data-resuming", "");
    if (elt.tagName === "FORM") {
      lastClicked = elt.querySelector("button[type=submit]");
      elt.requestSubmit();
    } else {
      lastClicked = elt;
      elt.click();
    }
  }

  // htmx (loaded first, also deferred) sets the page up on DOMContentLoaded before this runs.
  document.addEventListener("DOMContentLoaded", function () {
    window.setTimeout(resume, 0);
  });

  // ---- Recovery codes: "Copy them" ------------------------------------------------------
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) {
      return;
    }
    var source = document.getElementById(button.getAttribute("data-copy"));
    var status = button.parentNode.querySelector(".copy-status");
    if (!source) {
      return;
    }
    function say(text) {
      if (status) {
        status.textContent = text;
      }
    }
    function selectIt() {
      source.focus();
      source.select();
      say("Selected: press Ctrl+C (⌘C) to copy.");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(source.value).then(function () {
        say("Copied.");
      }, selectIt);
    } else {
      selectIt();
    }
  });

  // A GET form that only goes on (the recovery codes' "Continue") goes exactly to its
  // data-next; without this script it still works, with a trailing "?" in the address.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches && form.matches("form[data-next]") && form.checkValidity()) {
      event.preventDefault();
      window.location.assign(form.getAttribute("data-next"));
    }
  });
})();
