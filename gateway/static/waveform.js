/*
 * Waveforms on the job cards: each take's file (its signed URL, same origin) is decoded with the Web Audio
 * API and drawn as min/max peaks on a <canvas> above its <audio> player. A click or tap seeks the player;
 * the played part is coloured and a cursor marks the position. Decoding waits until the card is on screen.
 *
 * The canvas says how far it got in `data-waveform`: loading, drawn, or unavailable (a file too large, a
 * format this browser cannot decode, or storage on another origin without CORS: the player still works).
 */
"use strict";

(() => {
  const DECODE_RATE = 8000; // Hz: plenty for a picture, and ten minutes of audio stay small in memory
  const MAX_BYTES = 64 * 1024 * 1024;
  const BUCKETS = 2048; // peaks kept per take; drawing folds them into pixel columns
  const HEIGHT = 56; // CSS pixels

  /** @type {WeakMap<HTMLCanvasElement, Waveform>} */
  const waveforms = new WeakMap();
  const onScreen = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      onScreen.unobserve(entry.target);
      waveforms.get(entry.target)?.load();
    }
  }, { rootMargin: "200px" });
  const resized = new ResizeObserver((entries) => {
    for (const entry of entries) waveforms.get(entry.target)?.draw();
  });

  /** Min and max of every channel in each of `BUCKETS` equal slices, scaled so the loudest peak is 1. */
  function peaksOf(buffer) {
    const channels = Array.from({ length: buffer.numberOfChannels }, (_, i) => buffer.getChannelData(i));
    const length = buffer.length;
    const count = Math.max(1, Math.min(BUCKETS, length));
    const min = new Float32Array(count);
    const max = new Float32Array(count);
    let loudest = 0;
    for (let b = 0; b < count; b++) {
      const start = Math.floor((b * length) / count);
      const end = Math.max(start + 1, Math.floor(((b + 1) * length) / count));
      let lo = 0;
      let hi = 0;
      for (const data of channels) {
        for (let i = start; i < end; i++) {
          const v = data[i];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
      min[b] = lo;
      max[b] = hi;
      loudest = Math.max(loudest, hi, -lo);
    }
    if (loudest > 0) for (let b = 0; b < count; b++) { min[b] /= loudest; max[b] /= loudest; }
    return { min, max, seconds: buffer.duration };
  }

  class Waveform {
    constructor(canvas, audio, url) {
      this.canvas = canvas;
      this.audio = audio;
      this.url = url;
      this.peaks = null;
      this.frame = 0;
      canvas.addEventListener("click", (event) => this.seek(event));
      const redraw = () => this.draw();
      for (const name of ["timeupdate", "seeked", "pause", "ended", "loadedmetadata"]) {
        audio.addEventListener(name, redraw);
      }
      audio.addEventListener("play", () => this.follow());
    }

    async load() {
      try {
        const response = await fetch(this.url);
        const size = Number(response.headers.get("content-length") || 0);
        if (!response.ok || size > MAX_BYTES) throw new Error(`not drawn (${response.status}, ${size} bytes)`);
        const bytes = await response.arrayBuffer();
        if (bytes.byteLength > MAX_BYTES) throw new Error(`not drawn (${bytes.byteLength} bytes)`);
        // An offline context needs no user gesture, and decodes (resampling) at its own rate.
        const decoded = await new OfflineAudioContext(1, 1, DECODE_RATE).decodeAudioData(bytes);
        this.peaks = peaksOf(decoded);
        this.canvas.dataset.waveform = "drawn";
        this.draw();
      } catch {
        this.canvas.dataset.waveform = "unavailable";
        this.canvas.hidden = true;
      }
    }

    /** Seconds of the take: the player's once it knows, else the decoded file's. */
    get seconds() {
      const own = this.audio.duration;
      return Number.isFinite(own) && own > 0 ? own : this.peaks?.seconds || 0;
    }

    seek(event) {
      const box = this.canvas.getBoundingClientRect();
      if (!this.seconds || !box.width) return;
      const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
      this.audio.currentTime = fraction * this.seconds;
      this.draw();
    }

    /** Redraw every frame while playing, so the cursor moves smoothly. */
    follow() {
      cancelAnimationFrame(this.frame);
      const tick = () => {
        this.draw();
        if (!this.audio.paused && !this.audio.ended) this.frame = requestAnimationFrame(tick);
      };
      this.frame = requestAnimationFrame(tick);
    }

    draw() {
      const { canvas, peaks } = this;
      if (!peaks || !canvas.isConnected) return;
      const ratio = window.devicePixelRatio || 1;
      const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
      const height = Math.round(HEIGHT * ratio);
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
      const style = getComputedStyle(canvas);
      const played = style.getPropertyValue("--accent").trim() || "#4f46e5";
      const rest = style.getPropertyValue("--muted").trim() || "#5f6473";
      const ctx = canvas.getContext("2d");
      ctx.clearRect(0, 0, width, height);
      const count = peaks.min.length;
      const middle = height / 2;
      const position = this.seconds ? Math.min(1, this.audio.currentTime / this.seconds) : 0;
      const cursor = Math.round(position * width);
      for (let x = 0; x < width; x++) {
        const from = Math.floor((x * count) / width);
        const to = Math.max(from + 1, Math.floor(((x + 1) * count) / width));
        let lo = 0;
        let hi = 0;
        for (let b = from; b < to && b < count; b++) {
          if (peaks.min[b] < lo) lo = peaks.min[b];
          if (peaks.max[b] > hi) hi = peaks.max[b];
        }
        const top = middle - hi * middle * 0.95;
        const bottom = middle - lo * middle * 0.95;
        ctx.fillStyle = x < cursor ? played : rest;
        ctx.fillRect(x, top, 1, Math.max(ratio, bottom - top));
      }
      if (position > 0) {
        ctx.fillStyle = played;
        ctx.fillRect(Math.min(cursor, width - ratio), 0, Math.max(1, Math.round(ratio)), height);
      }
    }
  }

  /** Put a waveform for `url` above `audio` inside the take's box `take`. */
  function attach(take, audio, url) {
    const canvas = document.createElement("canvas");
    canvas.className = "waveform";
    canvas.dataset.waveform = "loading";
    canvas.style.height = `${HEIGHT}px`;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `Waveform of ${audio.getAttribute("aria-label") || "the take"}; click to seek`);
    take.insertBefore(canvas, audio);
    waveforms.set(canvas, new Waveform(canvas, audio, url));
    onScreen.observe(canvas);
    resized.observe(canvas);
  }

  (window.acefarmHooks ||= []).push({ take: attach });
})();
