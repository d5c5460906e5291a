// mouthpiece console: live updates by server-sent events, drag and drop on the new-job form.
"use strict";
(function () {
  const FINAL = new Set(["done", "failed", "cancelled"]);
  const list = document.querySelector("[data-live=list]");
  const graph = document.querySelector("[data-live=graph]");
  let timer = null;

  function later(fn) {
    clearTimeout(timer);
    timer = setTimeout(fn, 250);
  }

  async function swap(element, url) {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
      if (response.ok) element.innerHTML = await response.text();
    } catch (e) { /* the next event tries again */ }
  }

  function onJob(summary) {
    if (graph) {
      const shown = document.body.dataset.state;
      if (shown === "pending" || (FINAL.has(summary.state) && shown !== summary.state)) {
        location.reload();  // the result, the player and the actions change with the state
        return;
      }
      const badge = document.getElementById("job-state");
      if (badge) { badge.textContent = summary.state; badge.className = "badge big state-" + summary.state; }
      later(() => swap(graph, location.pathname + "?partial=graph"));
    } else if (list) {
      later(() => swap(list, "/?partial=jobs&page=" + encodeURIComponent(list.dataset.page || "1")));
    }
  }

  function onProgress(note) {
    const pct = Math.round(note.fraction * 100) + "%";
    if (graph) {
      const box = graph.querySelector('.box[data-task="' + note.task + '"][data-stage="' + note.stage + '"]');
      if (!box || !box.classList.contains("state-running")) { onJob({ state: "running" }); return; }
      const label = box.querySelector(".pct");
      if (label) label.textContent = pct;
      const bar = box.querySelector("progress");
      if (bar) bar.value = note.fraction;
    } else if (list) {
      const row = list.querySelector('tr[data-job="' + note.job_id + '"] td.stage');
      if (row) row.textContent = note.stage + " " + pct;
    }
  }

  if (list || graph) {
    const job = graph ? graph.dataset.job : null;
    const source = new EventSource("/events" + (job ? "?job=" + encodeURIComponent(job) : ""));
    source.addEventListener("job", (e) => onJob(JSON.parse(e.data)));
    source.addEventListener("progress", (e) => onProgress(JSON.parse(e.data)));
    source.addEventListener("drops", () => { if (list && document.getElementById("drops")) location.reload(); });
    window.addEventListener("beforeunload", () => source.close());
  }

  // elapsed times of running jobs tick along without asking the server
  function duration(s) {
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  setInterval(() => {
    document.querySelectorAll("[data-since]").forEach((el) => {
      const since = Date.parse(el.dataset.since);
      if (!isNaN(since)) el.textContent = duration(Math.max(0, (Date.now() - since) / 1000));
    });
  }, 1000);

  // drag and drop onto the file fields
  document.querySelectorAll(".drop").forEach((zone) => {
    const input = zone.querySelector("input[type=file]");
    const chosen = zone.querySelector(".chosen");
    const show = () => {
      chosen.textContent = "";
      const files = Array.from(input.files || []);
      zone.classList.toggle("has-files", files.length > 0);
      files.forEach((file) => {
        if (chosen.classList.contains("thumbs") && file.type.startsWith("image/")) {
          const img = document.createElement("img");
          img.alt = file.name;
          img.title = file.name;
          const reader = new FileReader();
          reader.onload = () => { img.src = reader.result; };
          reader.readAsDataURL(file);
          chosen.appendChild(img);
        } else {
          const span = document.createElement("div");
          span.textContent = file.name;
          chosen.appendChild(span);
        }
      });
    };
    ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); }));
    ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, () => zone.classList.remove("over")));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      const dropped = Array.from(e.dataTransfer.files || []);
      const keep = new DataTransfer();
      (input.multiple ? dropped : dropped.slice(0, 1)).forEach((f) => keep.items.add(f));
      input.files = keep.files;
      show();
    });
    input.addEventListener("change", show);
  });

  const form = document.getElementById("new-job");
  if (form) {
    form.addEventListener("submit", () => {
      const button = document.getElementById("submit");
      button.disabled = true;
      button.textContent = "Uploading…";
    });
  }
})();
