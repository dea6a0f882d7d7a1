/*
 * The 5 Hz LM on the page (the planning stage, docs/planner.md):
 *   - "Describe it" mode: a one-line description goes to POST /sample (SampleInput: query, instrumental,
 *     duration, seed, thinking, generate: true); the LM writes caption, lyrics and metadata, then the song
 *     is made. The "Write it" mode is the usual POST /generate (app.js), with the thinking switch.
 *   - Each result shows what the LM's `result` (LmResult) says the job used: bpm, key, time signature,
 *     language, and the caption and lyrics the LM wrote; the values the LM chose (`decided_by_lm`) are marked.
 *
 * Loaded before app.js, so its submit listener runs first and takes the form over in "Describe it" mode.
 * It uses app.js's helpers from `window.acefarm` (there by the time anyone submits).
 */
"use strict";

(() => {
  const form = document.querySelector("#generate-form");
  const META = [
    ["bpm", "BPM", (v) => String(v)],
    ["key", "Key", (v) => String(v)],
    ["time_signature", "Time signature", (v) => `${v}/4`],
    ["vocal_language", "Language", (v) => String(v)],
  ];

  const mode = () => form.dataset.mode || "generate";

  function setMode(value) {
    form.dataset.mode = value;
    const button = document.querySelector("#generate-button");
    button.textContent = value === "sample" ? "Describe and generate" : "Generate";
  }

  for (const radio of form.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => { if (radio.checked) setMode(radio.value); });
    if (radio.checked) setMode(radio.value);
  }

  /** The POST /sample body from the form; empty optional fields are left out. */
  function sampleBody() {
    const data = new FormData(form);
    const text = (name) => String(data.get(name) || "").trim();
    const body = { query: text("query"), generate: true, thinking: Boolean(data.get("thinking")) };
    if (data.get("instrumental")) body.instrumental = true;
    for (const name of ["duration", "seed"]) {
      if (text(name) === "") continue;
      const value = Number(text(name));
      body[name] = Number.isFinite(value) ? value : text(name); // let the API explain what is wrong
    }
    return body;
  }

  form.addEventListener("submit", async (event) => {
    if (mode() !== "sample") return; // app.js posts /generate
    event.preventDefault();
    event.stopImmediatePropagation();
    const page = window.acefarm;
    const button = document.querySelector("#generate-button");
    const formError = document.querySelector("#generate-form-error");
    page.clearErrors(form);
    const body = sampleBody();
    button.disabled = true;
    try {
      const response = await page.api("/sample", {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
      });
      if (!response.ok) { page.showErrors(form, formError, await page.readError(response)); return; }
      const accepted = await response.json();
      const detail = ["Described", body.duration ? `${body.duration} s` : "LM picks the length"];
      if (body.thinking) detail.push("thinking");
      const job = page.addJob({
        id: accepted.task_id, kind: "generation", title: page.shorten(body.query || "Untitled"),
        detail: detail.join(" · "),
      });
      page.revealJob(job);
    } catch (err) {
      page.showErrors(form, formError, { fields: {}, message: `Could not reach the server: ${err.message}` });
    } finally {
      button.disabled = false;
    }
  });

  /** What the LM wrote and decided, under a finished job's players. */
  function results(job, box, state) {
    const result = state.result;
    if (job.info.kind === "training" || !result || typeof result !== "object") return;
    const chosen = new Set(Array.isArray(result.decided_by_lm) ? result.decided_by_lm : []);
    const section = document.createElement("section");
    section.className = "lm-result";
    section.setAttribute("aria-label", "What the 5 Hz LM used");

    const list = document.createElement("dl");
    list.className = "lm-meta";
    for (const [name, title, show] of META) {
      if (result[name] == null || result[name] === "") continue;
      const item = document.createElement("div");
      item.dataset.field = name;
      const term = document.createElement("dt");
      term.textContent = title;
      const value = document.createElement("dd");
      value.textContent = show(result[name]);
      if (chosen.has(name)) {
        item.classList.add("by-lm");
        item.title = "Chosen by the 5 Hz LM";
        const mark = document.createElement("span");
        mark.className = "lm-mark";
        mark.textContent = "LM";
        mark.setAttribute("aria-label", "chosen by the LM");
        value.append(" ", mark);
      }
      item.append(term, value);
      list.append(item);
    }
    if (list.childElementCount) section.append(list);

    for (const [name, title] of [["caption", "Caption"], ["lyrics", "Lyrics"]]) {
      if (!result[name] || !chosen.has(name)) continue;
      const details = document.createElement("details");
      details.className = "lm-text";
      details.dataset.field = name;
      const summary = document.createElement("summary");
      summary.textContent = `${title} the LM wrote`;
      const text = document.createElement("p");
      text.textContent = result[name];
      details.append(summary, text);
      section.append(details);
    }
    if (section.childElementCount) box.append(section);
  }

  (window.acefarmHooks ||= []).push({ results });
})();
