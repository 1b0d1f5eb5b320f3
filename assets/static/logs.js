// The live log page: reads /stack/<name>/logs/stream?service=S (Server-Sent Events) into a <pre>.
// Lines are text only (textContent, never HTML). At most MAX_LINES stay on the page; while paused,
// new lines wait (up to MAX_LINES) and are shown on resume.
(function () {
  "use strict";

  var MAX_LINES = 5000;
  var viewer = document.getElementById("log-viewer");
  if (!viewer) {
    return;
  }
  var streamBase = viewer.getAttribute("data-stream");
  var serviceSelect = document.getElementById("log-service");
  var tailSelect = document.getElementById("log-tail");
  var pauseButton = document.getElementById("log-pause");
  var followBox = document.getElementById("log-follow");
  var downloadButton = document.getElementById("log-download");
  var statusLine = document.getElementById("log-status");
  var out = document.getElementById("log-lines");

  var source = null;
  var shown = []; // the lines on the page, oldest first
  var waiting = []; // lines that came while paused
  var paused = false;

  function setStatus(text) {
    statusLine.textContent = text;
  }

  function render(lines) {
    if (!lines.length) {
      return;
    }
    shown = shown.concat(lines);
    var dropped = shown.length - MAX_LINES;
    if (dropped > 0) {
      shown = shown.slice(dropped);
      out.textContent = shown.join("\n") + "\n";
    } else {
      out.appendChild(document.createTextNode(lines.join("\n") + "\n"));
    }
    if (followBox.checked) {
      out.scrollTop = out.scrollHeight;
    }
  }

  // Lines arriving in one burst are rendered together, once per frame.
  var pending = [];
  var scheduled = false;
  function receive(line) {
    if (paused) {
      waiting.push(line);
      if (waiting.length > MAX_LINES) {
        waiting.shift();
      }
      setStatus("Paused: " + waiting.length + " new line(s) waiting.");
      return;
    }
    pending.push(line);
    if (!scheduled) {
      scheduled = true;
      window.requestAnimationFrame(function () {
        scheduled = false;
        var batch = pending;
        pending = [];
        render(batch);
      });
    }
  }

  function close() {
    if (source) {
      source.close();
      source = null;
    }
  }

  function open() {
    close();
    shown = [];
    waiting = [];
    pending = [];
    out.textContent = "";
    var service = serviceSelect.value;
    if (!service) {
      setStatus("This stack has no services with containers.");
      return;
    }
    var url = streamBase + "?service=" + encodeURIComponent(service) + "&tail=" + encodeURIComponent(tailSelect.value);
    setStatus("Connecting to the log of " + service + "…");
    var es = new EventSource(url);
    source = es;
    var opened = false;
    es.onopen = function () {
      if (opened) {
        // Reconnected after a break: the stream starts again with the last lines, so start the page afresh.
        shown = [];
        waiting = [];
        pending = [];
        out.textContent = "";
      }
      opened = true;
      setStatus(paused ? "Paused." : "Following the log of " + service + ".");
    };
    es.onmessage = function (event) {
      receive(event.data);
    };
    // The dashboard lost the agent's stream (a fleet server's link dropped) and re-opens it itself.
    es.addEventListener("status", function (event) {
      setStatus(event.data);
    });
    es.addEventListener("end", function (event) {
      setStatus(event.data || "The log ended.");
      close();
    });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) {
        // Refused before it started (too many streams, session ended, unknown service) or the server went away.
        setStatus("The log stream could not be opened or was closed (too many open streams, or the session ended). Pick the service again to retry.");
        if (source === es) {
          source = null;
        }
      } else {
        setStatus("Connection lost; reconnecting…");
      }
    };
  }

  pauseButton.addEventListener("click", function () {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    pauseButton.setAttribute("aria-pressed", paused ? "true" : "false");
    if (!paused) {
      var batch = waiting;
      waiting = [];
      render(batch);
      setStatus(source ? "Following the log of " + serviceSelect.value + "." : "Not connected.");
    } else {
      setStatus("Paused: new lines wait until you resume.");
    }
  });

  downloadButton.addEventListener("click", function () {
    var blob = new Blob([shown.join("\n") + "\n"], { type: "text/plain" });
    var link = document.createElement("a");
    var stamp = new Date().toISOString().replace(/[:.]/g, "-");
    link.href = URL.createObjectURL(blob);
    link.download = (serviceSelect.value || "log") + "-" + stamp + ".log";
    document.body.appendChild(link);
    link.click();
    document.body.removeChild(link);
    window.setTimeout(function () {
      URL.revokeObjectURL(link.href);
    }, 1000);
  });

  serviceSelect.addEventListener("change", open);
  tailSelect.addEventListener("change", open);
  window.addEventListener("pagehide", close);
  open();
})();
