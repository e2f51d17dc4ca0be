// The run inspector: a run list and a run page, from the server's JSON API.
// Plain browser JavaScript: no build step, no external files. Data is written into the
// page with textContent only; the one exception is the graph SVG drawn by the server.
"use strict";

(function () {
  var base = new URL(".", location.href);
  var tokenKey = "riverbed-token";
  var $ = function (id) { return document.getElementById(id); };
  var state = {
    runId: null, timer: null, stream: null, workflows: {}, questionTypes: {}, loaded: null,
    graphAt: "", eventSchemas: {}, pending: null
  };

  // -- talking to the server ---------------------------------------------------------------
  function headers(extra) {
    var h = Object.assign({}, extra || {});
    var token = sessionStorage.getItem(tokenKey);
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  function api(path, options) {
    options = options || {};
    var init = { method: options.method || "GET", headers: headers(options.headers) };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
      init.headers["Content-Type"] = "application/json";
    }
    return fetch(new URL(path, base), init).then(function (response) {
      setConn(true);
      if (response.status === 401) { showLogin(); throw new Error("a token is needed"); }
      return response.json().then(function (body) {
        if (!response.ok) throw new Error(body.detail || body.title || response.statusText);
        return body;
      });
    }, function (err) { setConn(false); throw err; });
  }

  function setConn(ok) { $("conn").className = "conn " + (ok ? "ok" : "bad"); }

  function showLogin() {
    $("login").hidden = false;
    $("list-view").hidden = true;
    $("run-view").hidden = true;
  }

  $("login-form").addEventListener("submit", function (e) {
    e.preventDefault();
    sessionStorage.setItem(tokenKey, $("token").value);
    $("login").hidden = true;
    route();
  });

  // -- small helpers -----------------------------------------------------------------------
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function when(t) { return t ? new Date(t * 1000).toLocaleString() : ""; }
  function seconds(s) {
    if (s === null || s === undefined) return "";
    return s < 1 ? Math.round(s * 1000) + " ms" : s.toFixed(s < 10 ? 2 : 0) + " s";
  }
  function short(name) { var i = name.lastIndexOf("."); return i < 0 ? name : name.slice(i + 1); }
  function json(value) { return JSON.stringify(value); }

  // The served workflows, and which stream events are questions for a human (from their
  // graphs: InputRequiredEvent types), loaded once.
  function loadWorkflows() {
    if (state.loaded) return state.loaded;
    state.loaded = api("api/workflows").then(function (body) {
      return Promise.all(body.workflows.map(function (w) {
        state.workflows[w.name] = w;
        return api("api/workflows/" + encodeURIComponent(w.name) + "/graph").then(function (g) {
          g.graph.nodes.forEach(function (n) {
            if (n.role === "input_required") state.questionTypes[n.type_key] = true;
          });
        });
      })).then(function () { return body.workflows; });
    });
    state.loaded.catch(function () { state.loaded = null; });
    return state.loaded;
  }

  // -- the run list ------------------------------------------------------------------------
  function showList() {
    $("crumb").textContent = "runs";
    $("list-view").hidden = false;
    $("run-view").hidden = true;
    loadWorkflows().then(function (workflows) {
      var filter = $("filter-workflow"), start = $("start-workflow");
      if (filter.options.length === 1) {
        workflows.forEach(function (w) {
          filter.appendChild(el("option", short(w.name))).value = w.name;
          start.appendChild(el("option", short(w.name))).value = w.name;
        });
      }
    }).catch(function () {});
    refreshList();
    state.timer = setInterval(refreshList, 1000);
  }

  function refreshList() {
    var params = new URLSearchParams({ limit: "100" });
    if ($("filter-workflow").value) params.set("workflow", $("filter-workflow").value);
    if ($("filter-status").value) params.set("status", $("filter-status").value);
    api("api/runs?" + params).then(function (page) {
      var body = $("runs-body");
      clear(body);
      page.runs.forEach(function (run) {
        var row = el("tr");
        row.dataset.runId = run.run_id;
        row.appendChild(el("td")).appendChild(el("code", run.run_id));
        row.appendChild(el("td", short(run.workflow)));
        var shown = run.waiting ? "waiting" : run.status;
        row.appendChild(el("td")).appendChild(el("span", shown, "status " + shown));
        row.appendChild(el("td", when(run.started_at)));
        var end = run.finished_at || Date.now() / 1000;
        row.appendChild(el("td", seconds(end - run.started_at)));
        row.addEventListener("click", function () { location.hash = "#/runs/" + encodeURIComponent(run.run_id); });
        body.appendChild(row);
      });
      $("runs-empty").hidden = page.runs.length > 0;
    }).catch(function () {});
  }

  $("filter-workflow").addEventListener("change", refreshList);
  $("filter-status").addEventListener("change", refreshList);
  $("start-form").addEventListener("submit", function (e) {
    e.preventDefault();
    $("start-error").textContent = "";
    var input;
    try { input = JSON.parse($("start-input").value || "{}"); }
    catch (err) { $("start-error").textContent = "The input is not JSON: " + err.message; return; }
    api("api/workflows/" + encodeURIComponent($("start-workflow").value) + "/runs",
        { method: "POST", body: { input: input } })
      .then(function (run) { location.hash = "#/runs/" + encodeURIComponent(run.run_id); })
      .catch(function (err) { $("start-error").textContent = err.message; });
  });

  // -- one run -----------------------------------------------------------------------------
  function showRun(runId) {
    state.runId = runId;
    $("crumb").textContent = "run " + runId;
    $("list-view").hidden = true;
    $("run-view").hidden = false;
    $("run-title").textContent = runId;
    clear($("stream-list"));
    clear($("graph"));
    state.graphAt = "";
    loadWorkflows().catch(function () {}).then(function () {
      refreshRun();
      follow(runId, 0);
      state.timer = setInterval(refreshRun, 1000);
    });
  }

  function refreshRun() {
    var runId = state.runId;
    return api("api/runs/" + encodeURIComponent(runId) + "/details").then(function (d) {
      if (state.runId !== runId) return;
      renderRun(d);
      if (d.run.status !== "running" && state.timer) { clearInterval(state.timer); state.timer = null; }
    }).catch(function (err) { $("run-error").textContent = err.message; });
  }

  function renderRun(d) {
    var run = d.run, running = run.status === "running";
    var waiting = running && (d.waiting_for_input || waitingFor(d));
    var badge = $("run-status");
    badge.textContent = waiting ? "waiting for input" : run.status;
    badge.className = "status " + (waiting ? "waiting" : run.status);
    $("run-meta").textContent = short(run.workflow) + " · started " + when(run.started_at) +
      (run.finished_at ? " · took " + seconds(run.finished_at - run.started_at) : "");
    $("run-error").textContent = run.error || "";
    $("run-result-line").hidden = run.status !== "completed";
    $("run-result").textContent = json(run.result);
    $("cancel-run").hidden = !running;
    $("state").textContent = JSON.stringify(d.state, null, 2);
    renderTimeline(d);
    renderEvents(d.events);
    renderInput(d, waiting);
    var stamp = d.timeline.length + ":" + run.status;
    if (stamp !== state.graphAt) { state.graphAt = stamp; renderGraph(run.run_id); }
  }

  function renderTimeline(d) {
    var body = $("timeline-body");
    clear(body);
    d.attempts.forEach(function (a) {
      var row = el("tr", null, a.outcome);
      row.appendChild(el("td", a.event_seq));
      row.appendChild(el("td", a.step));
      row.appendChild(el("td", a.attempt));
      row.appendChild(el("td", a.outcome));
      row.appendChild(el("td", seconds(a.duration)));
      row.appendChild(el("td", a.error || ""));
      body.appendChild(row);
    });
    // Steps still to run or running: the last lines, so the page shows what is going on.
    (d.open_work || []).forEach(function (w) {
      var row = el("tr", null, "open " + w.status);
      row.appendChild(el("td", w.event_seq));
      row.appendChild(el("td", w.step));
      row.appendChild(el("td", w.status === "running" ? w.attempts : w.attempts + 1));
      row.appendChild(el("td", w.status));
      row.appendChild(el("td", ""));
      row.appendChild(el("td", w.status === "pending" && w.not_before * 1000 > Date.now()
        ? "retry at " + when(w.not_before) : ""));
      body.appendChild(row);
    });
  }

  function renderEvents(events) {
    var list = $("events-list");
    clear(list);
    events.forEach(function (e) {
      var item = el("li");
      item.appendChild(el("span", e.type, "type"));
      item.appendChild(document.createTextNode(e.source_step ? " from " + e.source_step + " " : " from outside "));
      item.appendChild(el("code", json(e.data)));
      list.appendChild(item);
    });
  }

  function renderGraph(runId) {
    api("api/runs/" + encodeURIComponent(runId) + "/graph").then(function (g) {
      if (state.runId === runId) $("graph").innerHTML = g.svg; // drawn and escaped by the server
    }).catch(function () {});
  }

  // -- human input -------------------------------------------------------------------------
  function waitingFor(d) {
    // Questions asked (InputRequiredEvent in the stream) outnumber answers from outside.
    var asked = d.stream.filter(function (e) { return state.questionTypes[e.type_key]; }).length;
    var answered = d.events.filter(function (e) {
      return e.source_step === null && e.seq > 1;
    }).length;
    return asked > answered;
  }

  function renderInput(d, waiting) {
    var box = $("input-box");
    box.hidden = !waiting;
    if (!waiting) { box.dataset.ready = ""; return; }
    var questions = d.stream.filter(function (e) { return state.questionTypes[e.type_key]; });
    var last = questions[questions.length - 1];
    $("input-question").textContent = last ? last.type + ": " + json(last.data) : "";
    if (box.dataset.ready === d.run.run_id) return;
    box.dataset.ready = d.run.run_id;
    api("api/workflows/" + encodeURIComponent(d.run.workflow) + "/schema").then(function (schema) {
      var select = $("input-type");
      clear(select);
      Object.keys(schema.events).forEach(function (name) { select.appendChild(el("option", name)).value = name; });
      state.eventSchemas = schema.events;
      var preferred = Object.keys(schema.events).filter(function (n) { return n !== "HumanResponseEvent"; });
      if (preferred.length) select.value = preferred[0];
      renderFields();
    });
  }

  function renderFields() {
    var holder = $("input-fields");
    clear(holder);
    var schema = state.eventSchemas[$("input-type").value] || {};
    var props = schema.properties || {};
    var required = schema.required || [];
    Object.keys(props).forEach(function (name) {
      var prop = props[name], kind = prop.type, label = el("label");
      var input = el("input");
      input.name = name;
      input.dataset.kind = kind || "json";
      if (kind === "boolean") { input.type = "checkbox"; input.checked = prop.default === true; }
      else if (kind === "integer" || kind === "number") { input.type = "number"; input.step = kind === "integer" ? "1" : "any"; }
      else { input.type = "text"; if (kind !== "string") input.placeholder = "JSON"; }
      if (prop.default !== undefined && kind !== "boolean") input.value = kind === "string" ? prop.default : json(prop.default);
      label.appendChild(document.createTextNode((prop.title || name) + (required.indexOf(name) >= 0 ? " *" : "") + " "));
      label.appendChild(input);
      holder.appendChild(label);
    });
    if (!Object.keys(props).length) holder.appendChild(el("p", "This event has no fields.", "muted"));
  }
  $("input-type").addEventListener("change", renderFields);

  $("input-form").addEventListener("submit", function (e) {
    e.preventDefault();
    $("input-error").textContent = "";
    var data = {};
    try {
      Array.prototype.forEach.call($("input-fields").querySelectorAll("input"), function (input) {
        var kind = input.dataset.kind;
        if (kind === "boolean") data[input.name] = input.checked;
        else if (input.value === "") return;
        else if (kind === "integer" || kind === "number") data[input.name] = Number(input.value);
        else if (kind === "string") data[input.name] = input.value;
        else data[input.name] = JSON.parse(input.value);
      });
    } catch (err) { $("input-error").textContent = "A field is not JSON: " + err.message; return; }
    var button = e.target.querySelector("button");
    button.disabled = true;
    var id = (crypto.randomUUID && crypto.randomUUID()) || String(Math.random()).slice(2);
    api("api/runs/" + encodeURIComponent(state.runId) + "/events", {
      method: "POST", body: { type: $("input-type").value, data: data, client_event_id: id }
    }).then(function () { $("input-box").hidden = true; refreshRun(); })
      .catch(function (err) { $("input-error").textContent = err.message; })
      .then(function () { button.disabled = false; });
  });

  $("cancel-run").addEventListener("click", function () {
    api("api/runs/" + encodeURIComponent(state.runId) + "/cancel", { method: "POST" })
      .then(refreshRun).catch(function (err) { $("run-error").textContent = err.message; });
  });

  // -- following the stream (Server-Sent Events over fetch, so the token can be sent) ------
  function follow(runId, after) {
    var controller = new AbortController();
    state.stream = controller;
    var last = after, buffer = "", decoder = new TextDecoder();
    var init = { headers: headers(last ? { "Last-Event-ID": String(last) } : {}), signal: controller.signal };
    fetch(new URL("api/runs/" + encodeURIComponent(runId) + "/stream", base), init).then(function (response) {
      if (!response.ok) throw new Error("stream: " + response.status);
      var reader = response.body.getReader();
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return "closed";
          buffer += decoder.decode(chunk.value, { stream: true });
          var parts = buffer.split("\n\n");
          buffer = parts.pop();
          for (var i = 0; i < parts.length; i++) {
            var message = parse(parts[i]);
            if (!message) continue;
            if (message.id) last = Number(message.id);
            onMessage(runId, message);
            if (message.event === "end") return "ended";
          }
          return pump();
        });
      }
      return pump();
    }).then(function (how) {
      if (how !== "ended" && state.stream === controller) setTimeout(function () { follow(runId, last); }, 500);
    }, function () {
      if (state.stream === controller && !controller.signal.aborted) setTimeout(function () { follow(runId, last); }, 1000);
    });
  }

  function parse(block) {
    var message = { event: "message", data: [] };
    block.split("\n").forEach(function (line) {
      if (!line || line[0] === ":") return;
      var at = line.indexOf(":"), name = line.slice(0, at), value = line.slice(at + 1).replace(/^ /, "");
      if (name === "data") message.data.push(value);
      else if (name === "event") message.event = value;
      else if (name === "id") message.id = value;
    });
    if (!message.data.length) return null;
    message.body = JSON.parse(message.data.join("\n"));
    return message;
  }

  function onMessage(runId, message) {
    if (state.runId !== runId) return;
    var body = message.body, item = el("li", null, message.event);
    item.dataset.seq = body.seq;
    item.appendChild(el("span", body.type, "type"));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(el("code", json(body.data)));
    $("stream-list").appendChild(item);
    // A burst of events (a token stream) costs one refresh, not one per event.
    if (!state.pending) {
      state.pending = setTimeout(function () { state.pending = null; refreshRun(); }, 150);
    }
  }

  // -- routing -----------------------------------------------------------------------------
  function stop() {
    if (state.timer) { clearInterval(state.timer); state.timer = null; }
    if (state.pending) { clearTimeout(state.pending); state.pending = null; }
    if (state.stream) { state.stream.abort(); state.stream = null; }
    state.runId = null;
  }

  function route() {
    stop();
    var match = /^#\/runs\/(.+)$/.exec(location.hash);
    if (match) showRun(decodeURIComponent(match[1]));
    else showList();
  }

  window.addEventListener("hashchange", route);
  route();
})();
