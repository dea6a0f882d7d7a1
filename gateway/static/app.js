/*
 * acefarm web page: submit generation and LoRA training jobs, follow each one live over
 * server-sent events, play and download the results.
 *
 * It uses only the public API, so it doubles as the reference browser client:
 *   POST /generate              -> 202 {task_id, status}
 *   POST /train/lora (optional) -> 202 {task_id, lora_id}
 *   GET  /loras      (optional) -> trained styles for the LoRA picker
 *   GET  /models     (optional) -> the models the farm serves, for the model picker
 *   GET  /tasks/{id}/events     -> SSE: event name = status, id = version, data = status JSON;
 *                                  the server closes the stream after the final status
 *   GET  /status/{id}           -> the same status JSON, used to resume after a lost stream; its signed
 *                                  `events_url` is what the EventSource opens (it cannot send headers)
 *   GET  /tasks?status=pending,running&mine=true
 *                               -> {tasks: [status JSON]}: the key's unfinished jobs, added on load
 *                                  (so jobs submitted elsewhere, or before storage was cleared, show up)
 *   DELETE /tasks/{id}          -> cancel
 *
 * With keys on, every call carries `Authorization: Bearer <key>`; a 401 asks for the key, which is
 * kept in localStorage. The job list is remembered per key, so each user sees only their own jobs.
 * A pending job shows its place in the queue and when it should start (`queue_position`, `eta_s`);
 * the stream re-sends the pending status, with the same version, as that place moves.
 * Players and download links use the status's signed file URLs, which need no header.
 */
"use strict";

(() => {
  const FINAL = new Set(["success", "failed", "cancelled"]);
  const STATUSES = ["pending", "running", "success", "failed", "cancelled"];
  const STORE_KEY = "acefarm.jobs.v1";
  const KEY_STORE = "acefarm.key.v1";
  const MAX_STORED = 30;
  const STAGE_LABELS = {
    queued: "Queued",
    planning: "Planning (5 Hz LM)",
    loading: "Loading the model",
    encoding: "Encoding the prompt",
    diffusion: "Generating",
    decoding: "Decoding audio",
    uploading: "Saving",
    preparing: "Preparing tracks",
    training: "Training",
    checkpointing: "Saving a checkpoint",
  };
  const STATUS_LABELS = {
    pending: "Waiting for a GPU",
    running: "Running",
    success: "Done",
    failed: "Failed",
    cancelled: "Cancelled",
  };
  /** How a result names where each metadata value came from. */
  const SOURCE_LABELS = { user: "yours", lm: "by the LM", default: "default" };
  /** Fields that the API may name differently from the form control that holds them. */
  const FIELD_ALIASES = { style_id: "lora_id", zip: "file", tracks: "file" };

  const $ = (selector, root = document) => root.querySelector(selector);
  const jobsList = $("#jobs");
  const announcer = $("#announcer");
  /** @type {Map<string, Job>} */
  const jobs = new Map();

  // ---------------------------------------------------------------- API key

  let apiKey = "";
  try { apiKey = localStorage.getItem(KEY_STORE) || ""; } catch { /* private mode: ask each time */ }
  /** The key id inside a secret `af_<key id>_<random>` (not secret itself); "" without a key. */
  const keyId = (secret) => (/^af_([a-z0-9]{12})_/.exec(secret) || [])[1] || "";
  /** Whose job list this page shows: fixed at load, so a different key reloads the page. */
  const listOwner = keyId(apiKey);
  let keyRequest = null; // the pending answer of the key dialog

  /**
   * Show the key dialog (saying why) and resolve to true once a key was entered and stored, or to
   * false when a `cancellable` dialog (changing the key) was dismissed. A key the API asked for
   * cannot be dismissed: nothing works without one.
   */
  function askForKey(reason, cancellable = false) {
    if (keyRequest) return keyRequest;
    const dialog = $("#key-dialog");
    const form = $("#key-form");
    const input = $("#api-key");
    $("#key-reason").textContent = reason || "";
    $("#key-reason").hidden = !reason;
    $("#key-cancel").hidden = !cancellable;
    input.value = "";
    keyRequest = new Promise((resolve) => {
      const finish = (entered) => {
        form.removeEventListener("submit", submit);
        dialog.removeEventListener("cancel", dismiss);
        $("#key-cancel").removeEventListener("click", dismiss);
        if (dialog.open) dialog.close();
        keyRequest = null;
        resolve(entered);
      };
      const submit = (event) => {
        event.preventDefault();
        const entered = String(input.value || "").trim();
        if (!entered) { input.focus(); return; }
        apiKey = entered;
        try { localStorage.setItem(KEY_STORE, entered); } catch { /* kept for this page only */ }
        $("#change-key").hidden = false;
        finish(true);
      };
      const dismiss = (event) => {
        event.preventDefault(); // Escape must not close a dialog the API needs an answer from
        if (cancellable) finish(false);
      };
      form.addEventListener("submit", submit);
      dialog.addEventListener("cancel", dismiss);
      $("#key-cancel").addEventListener("click", dismiss);
    });
    if (!dialog.open) dialog.showModal();
    input.focus();
    return keyRequest;
  }

  /**
   * fetch() with the API key; a 401 asks for a key and tries again. A key of another owner than the
   * job list's reloads the page, which then shows that owner's list.
   */
  async function api(path, init = {}) {
    for (;;) {
      const headers = new Headers(init.headers || {});
      if (apiKey) headers.set("authorization", `Bearer ${apiKey}`);
      const response = await fetch(path, { ...init, headers });
      if (response.status !== 401) return response;
      const { message } = await readError(response);
      await askForKey(apiKey ? message : "This farm needs an API key.");
      if (listOwner && keyId(apiKey) !== listOwner) {
        window.location.reload();
        return new Promise(() => {}); // the page is going away
      }
    }
  }

  /** Say something to screen-reader users once (status changes, not every progress tick). */
  function announce(text) {
    announcer.textContent = "";
    // A fresh text node after a tick makes repeated identical messages be read again.
    setTimeout(() => { announcer.textContent = text; }, 50);
  }

  /**
   * Run one hook of the page's add-ons (waveform.js, charts.js, lm.js push theirs onto `window.acefarmHooks`).
   * A failing add-on is rethrown as an uncaught error (the console shows it) without breaking the job card.
   */
  function hook(name, ...args) {
    for (const addOn of window.acefarmHooks || []) {
      if (typeof addOn[name] !== "function") continue;
      try { addOn[name](...args); } catch (err) { setTimeout(() => { throw err; }); }
    }
  }

  function shorten(text, max = 80) {
    const clean = text.replace(/\s+/g, " ").trim();
    return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
  }

  function formatSeconds(seconds) {
    if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
    const minutes = Math.round(seconds / 60);
    return minutes < 60 ? `${minutes} min` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
  }

  // ---------------------------------------------------------------- API errors next to fields

  /**
   * Turn an error answer into {fields: {name: message}, message}.
   * The API answers `{status_code, detail: "<field>: <message>", extra: [...]}`; `extra` items may
   * carry the field as `key` (Litestar), `field`, or a pydantic `loc` path.
   */
  async function readError(response) {
    let body = null;
    try { body = await response.json(); } catch { /* not JSON: fall back to the status line */ }
    const fields = {};
    const general = [];
    const add = (field, message) => {
      message = String(message).replace(/^(Value error|Assertion failed), /, "");
      // "data"/"body" mean the whole request; "complete_track_classes.0" means that field.
      let name = field && !["data", "body"].includes(field) ? String(field).split(".")[0] : null;
      if (name) name = FIELD_ALIASES[name] || name;
      if (name && !fields[name]) fields[name] = message;
      else if (!name) general.push(message);
    };
    const extra = body && Array.isArray(body.extra) ? body.extra : [];
    for (const item of extra) {
      if (!item || typeof item !== "object") continue;
      let field = item.field || item.key || null;
      if (!field && Array.isArray(item.loc)) {
        field = [...item.loc].reverse().find((part) => typeof part === "string" && part !== "body") || null;
      }
      add(field, item.message || item.msg || item.detail || "invalid value");
    }
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    if (!extra.length && detail) {
      // "duration: must be at most 600" (several may be joined with "; ").
      for (const part of detail.split(/;\s+(?=[a-z_]+:)/)) {
        const match = /^([a-z_][a-z0-9_]*):\s*(.+)$/s.exec(part);
        if (match) add(match[1], match[2]);
        else add(null, part);
      }
    }
    if (!Object.keys(fields).length && !general.length) {
      general.push(detail || `The server answered ${response.status} ${response.statusText}`.trim());
    }
    return { fields, message: general.join(" ") };
  }

  function clearErrors(form) {
    for (const field of form.querySelectorAll(".field.invalid")) field.classList.remove("invalid");
    for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    for (const error of form.querySelectorAll(".error")) { error.hidden = true; error.textContent = ""; }
  }

  /** Show each message under its field; messages for fields not on the form go to `formError`. */
  function showErrors(form, formError, { fields, message }) {
    const leftovers = message ? [message] : [];
    let first = null;
    for (const [name, text] of Object.entries(fields)) {
      const field = form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
      if (!field || field.hidden) { leftovers.push(`${name}: ${text}`); continue; }
      const error = field.querySelector(".error");
      error.textContent = text;
      error.hidden = false;
      field.classList.add("invalid");
      const control = field.querySelector("input, select, textarea");
      control.setAttribute("aria-invalid", "true");
      // Open a collapsed "More options" so the message is visible.
      const details = field.closest("details");
      if (details) details.open = true;
      first = first || control;
    }
    if (leftovers.length) { formError.textContent = leftovers.join(" "); formError.hidden = false; }
    if (first) first.focus();
  }

  // ---------------------------------------------------------------- one job card

  class Job {
    /**
     * @param {{id: string, kind: "generation"|"training", title: string, detail?: string,
     *          loraId?: string, restored?: boolean}} info
     */
    constructor(info) {
      this.info = info;
      this.id = info.id;
      this.version = -1; // the newest status version applied (SSE event id)
      this.status = "pending";
      this.source = null; // the EventSource while one is open
      this.eventsUrl = null; // the signed events link of the newest status
      this.disposed = false;
      this.retryDelay = 1000;
      this.retryTimer = null;
      this.el = this.render();
    }

    get final() { return FINAL.has(this.status); }

    render() {
      const li = $("#job-template").content.firstElementChild.cloneNode(true);
      const part = (role) => $(`[data-role="${role}"]`, li);
      this.parts = {
        badge: part("badge"), bar: part("bar"), percent: part("percent"), stage: part("stage"),
        error: part("error"), results: part("results"), cancel: part("cancel"), dismiss: part("dismiss"),
      };
      li.dataset.taskId = this.id;
      li.dataset.kind = this.info.kind;
      $(".job-kind", li).textContent = this.info.kind === "training" ? "LoRA training" : this.info.detail || "Track";
      part("title").textContent = this.info.title;
      part("id").textContent = this.id;
      part("id").title = "Task id";
      this.parts.bar.removeAttribute("value"); // indeterminate until the first progress
      this.parts.bar.setAttribute("aria-label", `Progress of ${this.info.title}`);
      this.parts.cancel.addEventListener("click", () => this.cancel());
      this.parts.dismiss.addEventListener("click", () => removeJob(this));
      return li;
    }

    /** Apply one status snapshot; older or repeated versions are ignored. */
    apply(state) {
      if (typeof state.version === "number") {
        if (state.version === this.version && state.status === "pending" && this.status === "pending") {
          this.showStage(state); // the same version again: only the queue position moved
          return;
        }
        if (state.version <= this.version) return;
        this.version = state.version;
      }
      if (state.events_url) this.eventsUrl = state.events_url;
      const previous = this.status;
      this.status = state.status;
      const { badge, bar, percent, error, cancel, dismiss } = this.parts;
      this.el.dataset.status = state.status;
      badge.textContent = state.status;

      const progress = state.status === "success" ? 1 : Math.min(1, Math.max(0, Number(state.progress) || 0));
      if (state.status === "pending" && progress === 0) {
        bar.removeAttribute("value");
        percent.textContent = "";
      } else {
        bar.value = progress;
        percent.textContent = `${Math.round(progress * 100)}%`;
      }
      this.showStage(state);

      if (state.status === "failed") {
        error.textContent = state.error || "The job failed without a reason.";
        error.hidden = false;
      }
      if (state.status === "success") this.showResults(state);
      cancel.hidden = this.final;
      dismiss.hidden = !this.final;
      hook("status", this, state);
      if (previous !== state.status) {
        announce(`${this.info.title}: ${STATUS_LABELS[state.status] || state.status}`);
        updateChrome();
        saveJobs();
      }
    }

    showStage(state) {
      const { stage } = this.parts;
      stage.textContent = this.describe(state);
      stage.hidden = !stage.textContent;
    }

    /** The line under the progress bar: place in the queue, or stage, step, loss, time left. */
    describe(state) {
      if (state.status === "pending") {
        const place = state.queue_position;
        if (place == null) return STATUS_LABELS.pending;
        const ahead = place === 0 ? "next in line" : `${place} ${place === 1 ? "job" : "jobs"} ahead`;
        const parts = [STATUS_LABELS.pending, ahead];
        if (state.eta_s != null && state.eta_s > 0) parts.push(`starts in about ${formatSeconds(state.eta_s)}`);
        return parts.join(" · ");
      }
      if (FINAL.has(state.status)) return ""; // the badge, the error or the player says it
      const parts = [STAGE_LABELS[state.stage] || state.message || "Running"];
      if (state.step != null && state.total_steps) parts.push(`step ${state.step} / ${state.total_steps}`);
      if (state.loss != null) parts.push(`loss ${Number(state.loss).toFixed(4)}`);
      if (state.eta_s != null && state.eta_s > 0) parts.push(`about ${formatSeconds(state.eta_s)} left`);
      return parts.join(" · ");
    }

    showResults(state) {
      const box = this.parts.results;
      box.replaceChildren();
      if (this.info.kind === "training") {
        const loraId = state.lora_id || this.info.loraId;
        const text = document.createElement("p");
        text.textContent = `Style “${this.info.title}” is ready`;
        box.append(text);
        if (loraId) {
          const use = document.createElement("button");
          use.type = "button";
          use.className = "ghost";
          use.textContent = "Use this style";
          use.addEventListener("click", () => useLora(loraId));
          box.append(use);
        }
        loadLoras();
      } else {
        const urls = state.file_urls && state.file_urls.length ? state.file_urls : [state.file_url].filter(Boolean);
        urls.forEach((url, index) => {
          const take = document.createElement("div");
          take.className = "take";
          const audio = document.createElement("audio");
          audio.controls = true;
          audio.preload = "metadata";
          audio.src = url;
          audio.setAttribute("aria-label", `${this.info.title}, take ${index + 1}`);
          const link = document.createElement("a");
          link.href = url;
          link.download = "";
          link.className = "download";
          const ext = (url.split("?")[0].split(".").pop() || "").toUpperCase();
          link.textContent = urls.length > 1 ? `Download take ${index + 1}` : `Download ${ext}`.trim();
          take.append(audio, link);
          box.append(take);
          hook("take", take, audio, url);
        });
        if (state.used) box.append(usedDetails(state.used));
      }
      hook("results", this, box, state);
      box.hidden = false;
    }

    // ---- live status over SSE

    /**
     * Open the event stream at the status's signed `events_url` (read the status first when there is
     * none yet). The server sends the current state at once, then every change. A stream we re-open
     * ourselves cannot send Last-Event-ID (only the browser's own reconnect does), so it starts with
     * the current state again; `apply` drops versions already shown. An expired link fails like any
     * lost stream: `resume` reads the status again, with a fresh link.
     */
    connect() {
      this.closeSource();
      if (this.disposed) return;
      if (!this.eventsUrl) { this.resume(); return; }
      const source = new EventSource(this.eventsUrl);
      this.source = source;
      const onEvent = (event) => {
        let state;
        try { state = JSON.parse(event.data); } catch { return; }
        this.retryDelay = 1000;
        this.apply(state);
        if (this.final) this.closeSource(); // the server is closing the stream anyway
      };
      for (const name of STATUSES) source.addEventListener(name, onEvent);
      source.onmessage = onEvent; // unnamed events, should a server send them
      source.onerror = () => {
        if (source !== this.source) return;
        if (this.final) {
          // The server closed the stream after the final status; don't let the browser reconnect.
          this.closeSource();
        } else if (source.readyState === EventSource.CLOSED) {
          // The browser gave up (an HTTP error such as 404 or 503): resume by hand.
          this.closeSource();
          this.scheduleResume();
        }
        // Otherwise readyState is CONNECTING: the browser reconnects by itself and sends
        // Last-Event-ID, so the server replays only what we missed.
      };
    }

    closeSource() {
      if (this.source) { this.source.close(); this.source = null; }
    }

    scheduleResume() {
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.resume(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 30000);
    }

    /** After a lost stream: read the current status (it may already be final), then stream again. */
    async resume() {
      if (this.disposed) return;
      let response;
      try {
        response = await api(`/status/${encodeURIComponent(this.id)}`, { headers: { accept: "application/json" } });
      } catch {
        this.scheduleResume(); // the server is unreachable: try again later
        return;
      }
      if (this.disposed) return;
      if (response.status === 404) {
        // A gateway that just started answers 404 until it has read all statuses back from Kafka;
        // only a ready one means it.
        if (!(await serverReady())) { this.scheduleResume(); return; }
        if (this.info.restored && this.version < 0) { removeJob(this); return; } // from an old session
        this.apply({ status: "failed", error: "The server no longer knows this job.", version: this.version + 1 });
        return;
      }
      if (!response.ok) { this.scheduleResume(); return; }
      const state = await response.json();
      this.eventsUrl = state.events_url || null;
      this.apply(state);
      if (!this.final && this.eventsUrl) this.connect();
      else if (!this.final) this.scheduleResume(); // a server without signed event links: poll
    }

    async cancel() {
      const button = this.parts.cancel;
      button.disabled = true;
      button.textContent = "Cancelling…";
      try {
        const response = await api(`/tasks/${encodeURIComponent(this.id)}`, { method: "DELETE" });
        if (!response.ok && response.status !== 409) {
          const { message, fields } = await readError(response);
          throw new Error(message || Object.values(fields).join(" "));
        }
        // The cancelled status arrives over the event stream.
      } catch (err) {
        button.disabled = false;
        button.textContent = "Cancel";
        this.parts.error.textContent = `Could not cancel: ${err.message}`;
        this.parts.error.hidden = false;
      }
    }

    dispose() {
      this.disposed = true;
      clearTimeout(this.retryTimer);
      this.closeSource();
      this.el.remove();
    }
  }

  async function serverReady() {
    try { return (await fetch("/readyz")).ok; } catch { return false; }
  }

  // ---------------------------------------------------------------- the job list

  /** Add a card and follow the job; `state` is its status when already known (its events link included). */
  function addJob(info, state = null) {
    const job = new Job(info);
    jobs.set(job.id, job);
    jobsList.prepend(job.el);
    if (state) job.apply(state);
    job.connect();
    updateChrome();
    saveJobs();
    return job;
  }

  /** On a phone the list sits below the form: bring a new card into view. */
  function revealJob(job) {
    const box = job.el.getBoundingClientRect();
    if (box.top > window.innerHeight || box.bottom < 0) {
      const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      job.el.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "center" });
    }
  }

  function removeJob(job) {
    job.dispose();
    jobs.delete(job.id);
    updateChrome();
    saveJobs();
  }

  function updateChrome() {
    $("#jobs-empty").hidden = jobs.size > 0;
    $("#clear-finished").hidden = ![...jobs.values()].some((job) => job.final);
  }

  /** Where the job list of the current key is remembered (one list per key id; the plain name without a key). */
  function jobsStore() {
    const owner = keyId(apiKey);
    return owner ? `${STORE_KEY}.${owner}` : STORE_KEY;
  }

  /** Remember jobs across reloads, so a refreshed page picks up where it was. */
  function saveJobs() {
    // Oldest first, so that restoring (which prepends) rebuilds the same order.
    const list = [...jobs.values()].slice(-MAX_STORED).map((job) => ({ ...job.info, restored: undefined }));
    try { localStorage.setItem(jobsStore(), JSON.stringify(list)); } catch { /* private mode: no memory */ }
  }

  function restoreJobs() {
    let list = [];
    try { list = JSON.parse(localStorage.getItem(jobsStore()) || "[]"); } catch { list = []; }
    for (const info of Array.isArray(list) ? list : []) {
      if (info && typeof info.id === "string" && !jobs.has(info.id)) addJob({ ...info, restored: true });
    }
  }

  /**
   * Add the key's unfinished jobs that the list lacks (submitted from elsewhere, or before this browser's
   * storage was cleared). Only with a key: without one every caller is the same anonymous owner.
   */
  async function loadUnfinished() {
    if (!keyId(apiKey)) return;
    let body;
    try {
      const response = await api(`/tasks?status=pending,running&mine=true&limit=${MAX_STORED}`, {
        headers: { accept: "application/json" },
      });
      if (!response.ok) return;
      body = await response.json();
    } catch { return; }
    const tasks = Array.isArray(body.tasks) ? body.tasks : [];
    for (const state of tasks.reverse()) { // oldest first: each new card goes on top
      if (jobs.has(state.task_id)) continue;
      const training = state.kind === "training";
      addJob({ id: state.task_id, kind: training ? "training" : "generation", title: training ? "LoRA training" : "Track",
        loraId: state.lora_id || undefined }, state);
    }
  }

  /** A term/description list of what a generation used: seeds, metadata (with sources), model, LoRAs, time. */
  function usedDetails(used) {
    const list = document.createElement("dl");
    list.className = "result-meta";
    const add = (term, value) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value;
      list.append(dt, dd);
    };
    const meta = used.metadata || {};
    const source = meta.source || {};
    const sourced = (name, value) => {
      const label = SOURCE_LABELS[source[name]] || source[name] || "";
      const shown = value == null || value === "" ? "model's choice" : String(value);
      return label ? `${shown} (${label})` : shown;
    };
    if (Array.isArray(used.seeds) && used.seeds.length) add(used.seeds.length > 1 ? "Seeds" : "Seed", used.seeds.join(", "));
    add("BPM", sourced("bpm", meta.bpm));
    add("Key", sourced("key", meta.key));
    add("Time signature", sourced("time_signature", meta.time_signature));
    add("Language", sourced("language", meta.language));
    add("Duration", sourced("duration", meta.duration != null ? `${meta.duration} s` : null));
    if (used.model) {
      const model = used.model;
      add("Model", `${model.name} · ${model.id}${model.revision ? `@${model.revision}` : ""}`);
    }
    if (Array.isArray(used.loras) && used.loras.length) {
      add("LoRAs", used.loras.map((lora) => `${lora.lora_id} × ${lora.scale}`).join(", "));
    }
    const timings = used.timings || {};
    const times = [["queue_s", "queue"], ["encode_s", "encode"], ["diffusion_s", "diffusion"], ["decode_s", "decode"],
      ["upload_s", "upload"]].filter(([name]) => timings[name] != null)
      .map(([name, label]) => `${label} ${Number(timings[name]).toFixed(2)} s`);
    if (times.length) add("Time", times.join(" · "));
    return list;
  }

  // ---------------------------------------------------------------- generate form

  const generateForm = $("#generate-form");

  /** The JSON body from the form; empty optional fields are left out so the API's defaults apply. */
  function generateBody() {
    const data = new FormData(generateForm);
    const body = { prompt: String(data.get("prompt") || "") };
    const text = (name) => String(data.get(name) || "").trim();
    const number = (name) => {
      const raw = text(name);
      if (raw === "") return undefined;
      const value = Number(raw);
      return Number.isFinite(value) ? value : raw; // let the API explain what is wrong
    };
    if (text("lyrics")) body.lyrics = String(data.get("lyrics"));
    if (data.get("instrumental")) body.instrumental = true;
    if (data.get("thinking")) body.thinking = true;
    for (const name of ["duration", "seed", "bpm", "inference_steps"]) {
      const value = number(name);
      if (value !== undefined) body[name] = value;
    }
    for (const name of ["style", "key", "lora_id", "model"]) if (text(name)) body[name] = text(name);
    body.audio_format = text("audio_format") || "wav";
    return body;
  }

  generateForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#generate-button");
    const formError = $("#generate-form-error");
    clearErrors(generateForm);
    const body = generateBody();
    button.disabled = true;
    try {
      const response = await api("/generate", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) { showErrors(generateForm, formError, await readError(response)); return; }
      const accepted = await response.json();
      const detail = [`${body.duration ?? "?"} s`, (body.audio_format || "").toUpperCase()];
      if (body.model) detail.push(body.model);
      if (body.lora_id) detail.push($("#lora_id").selectedOptions[0]?.textContent || body.lora_id);
      const job = addJob({
        id: accepted.task_id, kind: "generation", title: shorten(body.prompt || "Untitled"), detail: detail.join(" · "),
      });
      revealJob(job);
    } catch (err) {
      showErrors(generateForm, formError, { fields: {}, message: `Could not reach the server: ${err.message}` });
    } finally {
      button.disabled = false;
    }
  });

  // ---------------------------------------------------------------- models

  /**
   * Fill the model picker from GET /models; shown only when the farm serves more than one model.
   * The default model's option sends no `model`, so a task it cannot do may still reach a model that can.
   */
  async function loadModels() {
    let response;
    try { response = await api("/models", { headers: { accept: "application/json" } }); } catch { return; }
    if (!response.ok) return;
    let body;
    try { body = await response.json(); } catch { return; }
    const models = Array.isArray(body.models) ? body.models : [];
    const select = $("#model");
    select.replaceChildren();
    for (const model of models) {
      const tasks = Array.isArray(model.task_types) ? model.task_types.join(", ") : "";
      const option = new Option(model.default ? `${model.name} (default)` : model.name, model.default ? "" : model.name);
      option.title = tasks;
      select.append(option);
    }
    $("#model-field").hidden = models.length < 2;
  }

  // ---------------------------------------------------------------- LoRA styles and training

  let lorasAvailable = false;

  /** Fill the LoRA picker from GET /loras; without that endpoint, LoRA controls stay hidden. */
  async function loadLoras() {
    let response;
    try { response = await api("/loras", { headers: { accept: "application/json" } }); } catch { return; }
    if (!response.ok) return; // 404: this server has no LoRA support
    let body;
    try { body = await response.json(); } catch { return; }
    const list = Array.isArray(body) ? body : body.loras || body.items || [];
    lorasAvailable = true;
    $("#lora-field").hidden = false;
    $("#train-section").hidden = false;
    const select = $("#lora_id");
    const chosen = select.value;
    select.replaceChildren(new Option("Base model", ""));
    for (const lora of list) {
      const id = lora.lora_id || lora.id;
      const state = lora.status || lora.state;
      if (!id || (state && !["ready", "success", "trained"].includes(state))) continue;
      select.append(new Option(lora.style_name || lora.name || id, id));
    }
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
  }

  async function useLora(loraId) {
    await loadLoras();
    const select = $("#lora_id");
    if ([...select.options].some((o) => o.value === loraId)) {
      select.value = loraId;
      select.focus();
    }
  }

  const trainForm = $("#train-form");

  trainForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("#train-button");
    const formError = $("#train-form-error");
    clearErrors(trainForm);
    const data = new FormData(trainForm);
    // Leave out empty options so the trainer's defaults apply.
    for (const [name, value] of [...data.entries()]) if (value === "") data.delete(name);
    const file = data.get("file");
    if (!(file instanceof File) || !file.name) {
      showErrors(trainForm, formError, { fields: { file: "Choose a .zip of your tracks." }, message: "" });
      return;
    }
    button.disabled = true;
    try {
      const response = await api("/train/lora", { method: "POST", body: data, headers: { accept: "application/json" } });
      if (response.status === 404 || response.status === 405) {
        $("#train-section").hidden = true;
        return;
      }
      if (!response.ok) { showErrors(trainForm, formError, await readError(response)); return; }
      const accepted = await response.json();
      const name = String(data.get("style_name") || accepted.lora_id || "LoRA");
      revealJob(addJob({ id: accepted.task_id, kind: "training", title: name, loraId: accepted.lora_id }));
    } catch (err) {
      showErrors(trainForm, formError, { fields: {}, message: `Could not reach the server: ${err.message}` });
    } finally {
      button.disabled = false;
    }
  });

  // ---------------------------------------------------------------- start

  $("#clear-finished").addEventListener("click", () => {
    for (const job of [...jobs.values()]) if (job.final) removeJob(job);
  });

  $("#change-key").hidden = !apiKey;
  $("#change-key").addEventListener("click", async () => {
    if ((await askForKey("", true)) && keyId(apiKey) !== listOwner) window.location.reload();
  });

  updateChrome();
  // The LoRA list comes first: with keys on it asks for the key, and the job list is the key's own.
  loadLoras().finally(() => { restoreJobs(); updateChrome(); loadUnfinished(); loadModels(); });
  // Exposed for tests and debugging in the console.
  // lm.js submits sample jobs with these.
  window.acefarm = {
    jobs, get lorasAvailable() { return lorasAvailable; },
    api, addJob, revealJob, readError, showErrors, clearErrors, shorten,
  };
})();
