/*
 * The LoRA training loss curve, live: every training status that carries `step` and `loss` (the SSE
 * progress events) adds a point, and a line chart on a <canvas> in the job's card is redrawn.
 *
 * Points are kept per task id, outside the card: a reconnected stream (which re-sends the current status)
 * or a re-created card keeps the curve, and a repeated step replaces its point. The canvas carries the
 * number of points in `data-points`.
 */
"use strict";

(() => {
  const HEIGHT = 140; // CSS pixels
  const PAD = { left: 52, right: 12, top: 10, bottom: 22 }; // CSS pixels

  /** @type {Map<string, {points: Map<number, number>, total: number, canvas: HTMLCanvasElement | null}>} */
  const curves = new Map();

  function curveOf(taskId) {
    let curve = curves.get(taskId);
    if (!curve) {
      curve = { points: new Map(), total: 0, canvas: null };
      curves.set(taskId, curve);
    }
    return curve;
  }

  /** The chart's canvas inside the job's card (made, under the progress bar, when the card has none). */
  function canvasIn(job, curve) {
    if (curve.canvas && job.el.contains(curve.canvas)) return curve.canvas;
    const figure = document.createElement("figure");
    figure.className = "loss-chart";
    const canvas = document.createElement("canvas");
    canvas.style.height = `${HEIGHT}px`;
    canvas.setAttribute("role", "img");
    const caption = document.createElement("figcaption");
    caption.textContent = "Training loss";
    figure.append(canvas, caption);
    job.el.querySelector(".job-progress").after(figure);
    new ResizeObserver(() => draw(curve)).observe(canvas);
    curve.canvas = canvas;
    return canvas;
  }

  function label(value) {
    return Math.abs(value) >= 100 || value === 0 ? value.toFixed(0) : value.toPrecision(3);
  }

  function draw(curve) {
    const canvas = curve.canvas;
    if (!canvas || !canvas.isConnected) return;
    const points = [...curve.points].sort((a, b) => a[0] - b[0]);
    const [lastStep, lastLoss] = points.at(-1);
    canvas.dataset.points = String(points.length);
    canvas.setAttribute(
      "aria-label",
      `Training loss: ${points.length} points, ${lastLoss.toFixed(4)} at step ${lastStep}` +
        (curve.total ? ` of ${curve.total}` : ""),
    );
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.round(HEIGHT * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0); // draw in CSS pixels
    const w = width / ratio;
    const style = getComputedStyle(canvas);
    const line = style.getPropertyValue("--accent").trim() || "#4f46e5";
    const grid = style.getPropertyValue("--border").trim() || "#dfe2ea";
    const text = style.getPropertyValue("--muted").trim() || "#5f6473";
    ctx.clearRect(0, 0, w, HEIGHT);

    const losses = points.map(([, loss]) => loss);
    let low = Math.min(...losses);
    let high = Math.max(...losses);
    const room = high > low ? (high - low) * 0.08 : Math.abs(high) * 0.1 || 1;
    low -= room;
    high += room;
    const first = Math.min(points[0][0], 1);
    const last = Math.max(curve.total, lastStep, first + 1);
    const x = (step) => PAD.left + ((step - first) / (last - first)) * (w - PAD.left - PAD.right);
    const y = (loss) => PAD.top + ((high - loss) / (high - low)) * (HEIGHT - PAD.top - PAD.bottom);

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = grid;
    ctx.fillStyle = text;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const value of [high - room, (high + low) / 2, low + room]) {
      ctx.beginPath();
      ctx.moveTo(PAD.left, Math.round(y(value)) + 0.5);
      ctx.lineTo(w - PAD.right, Math.round(y(value)) + 0.5);
      ctx.stroke();
      ctx.fillText(label(value), PAD.left - 6, y(value));
    }
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    ctx.fillText(`step ${first}`, PAD.left, HEIGHT - 4);
    ctx.textAlign = "right";
    ctx.fillText(`${last}`, w - PAD.right, HEIGHT - 4);

    ctx.strokeStyle = line;
    ctx.fillStyle = line;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.beginPath();
    points.forEach(([step, loss], i) => (i ? ctx.lineTo(x(step), y(loss)) : ctx.moveTo(x(step), y(loss))));
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(x(lastStep), y(lastLoss), 3, 0, 2 * Math.PI);
    ctx.fill();
  }

  /** A training status: record its point (when it has one) and redraw. */
  function status(job, state) {
    if (job.info.kind !== "training") return;
    const curve = curves.get(job.id);
    const step = Number(state.step);
    const loss = Number(state.loss);
    if (state.step != null && state.loss != null && Number.isFinite(step) && Number.isFinite(loss)) {
      const known = curve || curveOf(job.id);
      known.points.set(step, loss);
      if (Number(state.total_steps) > 0) known.total = Number(state.total_steps);
      canvasIn(job, known);
      draw(known);
    } else if (curve && curve.points.size) {
      canvasIn(job, curve); // a card made again (after a reload of the list) gets the curve back
      draw(curve);
    }
  }

  (window.acefarmHooks ||= []).push({ status });
})();
