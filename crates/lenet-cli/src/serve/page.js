"use strict";
// The page of `lenet serve`: draw on #pad, send it as a PNG to /api/predict?explain=true
// (debounced), and draw what comes back: the 28×28 input with its saliency map over it, the
// probabilities and every layer's output. The "Fool it" panel sends that input to
// /api/fool and shows the original, the change and the result. Pointing at a unit of a
// feature map shows its receptive field on the input. The "Watch it learn" panel starts a
// training run (/api/train) and draws its events (/api/train/events): the loss and accuracy
// curves, the confusion matrix and the filters as they change.

const DEBOUNCE_MS = 150;
const INK_WIDTH = 20; // pixels of the 280×280 pad

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
let model = null; // the /api/model answer
let hasInk = false;
let timer = null;
let inFlight = false;
let pending = null; // a Blob waiting for the request in flight
let lastAnswer = null; // the last /api/predict answer
const FOOL_STEPS = 100; // gradient steps of an adversarial search at most

// ---------- colour maps ----------

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
const DIVERGING = [[33, 102, 172], [247, 247, 247], [178, 24, 43]];

function interpolate(stops, t) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  return stops[i].map((a, k) => Math.round(a + f * (stops[i + 1][k] - a)));
}

// A function value -> [r, g, b] for a set of values: viridis from 0 to the maximum when no
// value is negative, else blue–white–red around 0, symmetric.
function colourScale(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo >= 0) {
    const top = hi > 0 ? hi : 1;
    return { signed: false, colour: (v) => interpolate(VIRIDIS, v / top) };
  }
  const m = Math.max(-lo, hi) || 1;
  return { signed: true, colour: (v) => interpolate(DIVERGING, 0.5 + v / (2 * m)) };
}

// Paints rows×cols values (row-major array) onto a new canvas of that many pixels.
function heatCanvas(rows, cols, values, colour) {
  const c = document.createElement("canvas");
  c.width = cols; c.height = rows;
  const g = c.getContext("2d");
  const img = g.createImageData(cols, rows);
  values.forEach((v, i) => {
    const [r, gg, b] = colour(v);
    img.data.set([r, gg, b, 255], 4 * i);
  });
  g.putImageData(img, 0, 0);
  return c;
}

const flat = (a) => a.flat(Infinity);

// Paints rows of values in [0, 1] as grey levels (0 black, 1 white) onto a 28×28 canvas.
function paintGrey(canvas, rows) {
  const g = canvas.getContext("2d");
  const img = g.createImageData(canvas.width, canvas.height);
  flat(rows).forEach((v, i) => {
    const u = Math.round(255 * v);
    img.data.set([u, u, u, 255], 4 * i);
  });
  g.putImageData(img, 0, 0);
}

// The saliency map as a see-through overlay: transparent where it is 0, rising steeply to
// opaque orange-yellow at its maximum, so that the input shows through all but the most salient
// pixels.
function paintSaliency(canvas, rows) {
  const values = flat(rows);
  const top = Math.max(...values) || 1;
  const g = canvas.getContext("2d");
  const img = g.createImageData(canvas.width, canvas.height);
  values.forEach((v, i) => {
    const t = v / top;
    const [r, gg, b] = interpolate([[230, 60, 20], [255, 230, 60]], t);
    img.data.set([r, gg, b, Math.round(235 * t ** 1.5)], 4 * i);
  });
  g.putImageData(img, 0, 0);
}

// ---------- layer pictures ----------

// A titled block: <div class="layer"><h3>caption</h3>…</div>, replacing one with the same key.
function layerBlock(parent, key, caption) {
  let block = parent.querySelector(`[data-layer="${key}"]`);
  if (!block) {
    block = document.createElement("div");
    block.className = "layer";
    block.dataset.layer = key;
    parent.appendChild(block);
  }
  block.innerHTML = "";
  const h = document.createElement("h3");
  h.textContent = caption;
  block.appendChild(h);
  return block;
}

// One small heat map per channel of maps[c][h][w], sized to fit a row when there is room.
function drawMaps(parent, key, caption, maps, preferred) {
  const block = layerBlock(parent, key, caption);
  const grid = document.createElement("div");
  grid.className = "grid";
  block.appendChild(grid);
  const scale = colourScale(flat(maps));
  const n = maps.length, gap = 4;
  const room = Math.floor((parent.clientWidth - gap * (n - 1)) / n);
  const size = Math.max(32, Math.min(preferred, room));
  for (const m of maps) {
    const c = heatCanvas(m.length, m[0].length, flat(m), scale.colour);
    c.style.width = c.style.height = `${size}px`;
    grid.appendChild(c);
    if (windowsUpTo(key)) watchUnits(c, key);
  }
}

// ---------- receptive fields ----------

// The windows (kernel, stride, padding) of the layers from the input up to `layer`, as
// /api/model describes them; null for a layer that has none (fc layers, filters).
function windowsUpTo(layer) {
  if (!model) return null;
  const i = model.windows.findIndex((w) => w.name === layer);
  return i < 0 ? null : model.windows.slice(0, i + 1);
}

// The input rows (or columns) [first, last] that unit `u` of `layer` sees: each window maps an
// output range [a, b] to the input range [a·stride − padding, b·stride − padding + kernel − 1],
// clipped to the 28 pixels of the image.
function receptiveField(layer, u) {
  let a = u, b = u;
  for (const w of windowsUpTo(layer).reverse()) {
    a = a * w.stride - w.padding;
    b = b * w.stride - w.padding + w.kernel - 1;
  }
  return [Math.max(a, 0), Math.min(b, 27)];
}

function watchUnits(canvas, layer) {
  canvas.addEventListener("pointermove", (e) => {
    const r = canvas.getBoundingClientRect();
    const col = Math.min(canvas.width - 1, Math.floor((e.clientX - r.left) * canvas.width / r.width));
    const row = Math.min(canvas.height - 1, Math.floor((e.clientY - r.top) * canvas.height / r.height));
    showField(layer, row, col);
  });
  canvas.addEventListener("pointerleave", () => showField(null));
}

function showField(layer, row, col) {
  const g = $("rf28").getContext("2d");
  g.clearRect(0, 0, 28, 28);
  if (!layer) { $("rf-line").textContent = ""; delete document.body.dataset.field; return; }
  const [r0, r1] = receptiveField(layer, row), [c0, c1] = receptiveField(layer, col);
  g.fillStyle = "rgba(40, 220, 90, 0.45)";
  g.fillRect(c0, r0, c1 - c0 + 1, r1 - r0 + 1);
  $("rf-line").textContent = `${layer} unit (${row}, ${col}) sees input rows ${r0}–${r1}, ` +
    `columns ${c0}–${c1}: ${r1 - r0 + 1} × ${c1 - c0 + 1} pixels`;
  document.body.dataset.field = `${layer} ${row},${col}: ${r0}-${r1},${c0}-${c1}`;
}

// A vector as one strip of cells.
function drawStrip(parent, key, caption, values) {
  const block = layerBlock(parent, key, caption);
  const c = heatCanvas(1, values.length, values, colourScale(values).colour);
  c.className = "strip";
  block.appendChild(c);
}

// conv2's weights [k][c][5][5] as one picture: column = output channel, row = input channel.
function drawFilterBank(parent, key, caption, w, cell) {
  const block = layerBlock(parent, key, caption);
  const k = w.length, c = w[0].length, s = w[0][0].length, pitch = s + 1;
  const canvas = document.createElement("canvas");
  canvas.width = k * pitch - 1; canvas.height = c * pitch - 1;
  canvas.className = "bank";
  const g = canvas.getContext("2d");
  g.fillStyle = "#aaa"; // between the kernels: a grey neither colour scale uses
  g.fillRect(0, 0, canvas.width, canvas.height);
  const scale = colourScale(flat(w));
  for (let o = 0; o < k; o++) {
    for (let i = 0; i < c; i++) {
      g.drawImage(heatCanvas(s, s, flat(w[o][i]), scale.colour), o * pitch, i * pitch);
    }
  }
  canvas.style.width = `${canvas.width * cell}px`;
  canvas.style.maxWidth = "100%";
  canvas.style.imageRendering = "pixelated";
  block.appendChild(canvas);
}

// ---------- the answer ----------

const classNames = (p) => (model ? model.classes : p.map((_, i) => String(i)));

function render(r) {
  lastAnswer = r;
  paintGrey($("input28"), r.input);
  if (r.saliency) paintSaliency($("saliency28"), r.saliency);
  $("fool").disabled = false;
  $("fool-status").textContent = document.body.dataset.adversarial
    ? "The input has changed: press Fool it to search again."
    : "";

  const names = classNames(r.probabilities);
  $("prediction").textContent = names[r.prediction];
  $("confidence").textContent = `${(100 * r.probabilities[r.prediction]).toFixed(1)}% sure`;
  drawBars($("bars"), r.probabilities, r.prediction, names);

  const act = model ? model.config.activation.replace("relu", "ReLU") : "activation";
  const pool = model ? `${model.config.pooling} pool 2×2` : "pool 2×2";
  const shape = (m) => `${m.length} × ${m[0].length} × ${m[0][0].length}`;
  const maps = $("maps"), L = r.layers;
  drawMaps(maps, "conv1", `conv1 output after ${act} — ${shape(L.conv1)}`, L.conv1, 84);
  drawMaps(maps, "pool1", `pool1 output (${pool}) — ${shape(L.pool1)}`, L.pool1, 56);
  drawMaps(maps, "conv2", `conv2 output after ${act} — ${shape(L.conv2)}`, L.conv2, 48);
  drawMaps(maps, "pool2", `pool2 output (${pool}) — ${shape(L.pool2)}`, L.pool2, 36);
  drawStrip(maps, "fc1", `fc1 output after ${act} — ${L.fc1.length} values`, L.fc1);
  drawStrip(maps, "fc2", `fc2 output after ${act} — ${L.fc2.length} values`, L.fc2);
  drawStrip(maps, "logits", `fc3 output (logits) — ${L.logits.length} values, one per class`, L.logits);
}

function drawBars(bars, p, top, names) {
  bars.innerHTML = "";
  p.forEach((v, i) => {
    const bar = document.createElement("div");
    bar.className = i === top ? "bar top" : "bar";
    bar.innerHTML = `<div class="value">${Math.round(100 * v)}%</div>` +
      `<div class="fill" style="height:${(100 * v).toFixed(1)}%"></div>` +
      `<div class="label"></div>`;
    bar.querySelector(".label").textContent = names[i];
    bar.title = `${names[i]}: ${(100 * v).toFixed(2)}%`;
    bars.appendChild(bar);
  });
}

function showError(message) { $("error").textContent = message || ""; }

// ---------- talking to the server ----------

async function send(blob) {
  if (inFlight) { pending = blob; return; }
  inFlight = true;
  try {
    const res = await fetch(`/api/predict?explain=true&model=${whichModel()}`, {
      method: "POST",
      headers: { "Content-Type": blob.type || "application/octet-stream" },
      body: blob,
    });
    const body = await res.json();
    if (res.ok) {
      showError("");
      render(body);
      document.body.dataset.predictions = String(Number(document.body.dataset.predictions || 0) + 1);
    } else {
      showError(body.error || `error ${res.status}`);
    }
  } catch (e) {
    showError(`cannot reach the server: ${e}`);
  } finally {
    inFlight = false;
    if (pending) { const next = pending; pending = null; send(next); }
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => { if (hasInk) pad.toBlob(send, "image/png"); }, DEBOUNCE_MS);
}

// ---------- drawing ----------

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}

let last = null;
pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  last = point(e);
  stroke(last, last);
});
pad.addEventListener("pointermove", (e) => {
  if (!last) return;
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events.length ? events : [e]) {
    const p = point(ev);
    stroke(last, p);
    last = p;
  }
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => { last = null; });
}

function stroke(a, b) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = INK_WIDTH;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(a[0], a[1]);
  ctx.lineTo(b[0], b[1]);
  ctx.stroke();
  hasInk = true;
  schedule();
}

$("clear").addEventListener("click", () => {
  clearPad();
  showError("");
  $("prediction").textContent = "?";
  $("confidence").textContent = "draw something";
});

$("show-saliency").addEventListener("change", (e) => {
  $("saliency28").hidden = !e.target.checked;
});

// ---------- fooling the network ----------

function setupFoolPanel() {
  const select = $("target");
  for (let d = 0; d < 10; d++) select.add(new Option(String(d), String(d)));
  select.value = "3";
  const epsilon = $("epsilon");
  const show = () => { $("epsilon-value").textContent = Number(epsilon.value).toFixed(2); };
  epsilon.addEventListener("input", show);
  show();
  $("fool").addEventListener("click", fool);
}

async function fool() {
  if (!lastAnswer) return;
  const original = lastAnswer.input;
  const request = {
    input: original,
    target: Number($("target").value),
    epsilon: Number($("epsilon").value),
    steps: FOOL_STEPS,
  };
  $("fool").disabled = true;
  $("fool-status").textContent = "Searching…";
  try {
    const res = await fetch("/api/fool", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || `error ${res.status}`);
    showAdversarial(original, request, body);
    document.body.dataset.adversarial = String(Number(document.body.dataset.adversarial || 0) + 1);
  } catch (e) {
    $("fool-status").textContent = `The search failed: ${e.message}`;
  } finally {
    $("fool").disabled = false;
  }
}

function showAdversarial(original, request, a) {
  paintGrey($("adv-original"), original);
  const change = heatCanvas(28, 28, flat(a.perturbation),
    (v) => interpolate(DIVERGING, 0.5 + v / (2 * request.epsilon)));
  $("adv-change").getContext("2d").drawImage(change, 0, 0);
  paintGrey($("adv-result"), a.input);
  const names = classNames(a.probabilities);
  $("adv-label").textContent = names[a.prediction];
  drawBars($("adv-bars"), a.probabilities, a.prediction, names);
  const eps = request.epsilon.toFixed(2);
  const sure = `${(100 * a.probabilities[a.prediction]).toFixed(0)}%`;
  $("fool-status").textContent = a.steps === 0 && a.fooled
    ? `It already reads ${names[a.prediction]}: pick another class.`
    : a.fooled
    ? `Now read as ${names[a.prediction]} (${sure}) after ${a.steps} steps, no pixel changed by more than ${eps}.`
    : `Not reached in ${a.steps} steps with ε = ${eps}: still read as ${names[a.prediction]} (${sure}). Allow a larger ε.`;
}

// ---------- images from files ----------

function useFile(file) {
  if (!file) return;
  send(file);
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    clearPad();
    const s = Math.min(pad.width / img.width, pad.height / img.height);
    const w = img.width * s, h = img.height * s;
    ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    hasInk = true;
    URL.revokeObjectURL(url);
  };
  img.onerror = () => URL.revokeObjectURL(url);
  img.src = url;
}

$("file").addEventListener("change", (e) => useFile(e.target.files[0]));
pad.addEventListener("dragover", (e) => { e.preventDefault(); pad.classList.add("dragover"); });
pad.addEventListener("dragleave", () => pad.classList.remove("dragover"));
pad.addEventListener("drop", (e) => {
  e.preventDefault();
  pad.classList.remove("dragover");
  useFile(e.dataTransfer.files[0]);
});

// ---------- the model ----------

function describeModel(m) {
  const acc = m.accuracy == null ? "accuracy not recorded" : `test accuracy ${(100 * m.accuracy).toFixed(2)}%`;
  const data = m.dataset || "unknown dataset";
  $("model-line").textContent =
    `${m.source} — trained on ${data}, ${acc}; ${m.total_params.toLocaleString("en")} parameters, ` +
    `${m.total_flops.toLocaleString("en")} FLOPs per image`;
  const f = $("filters");
  const w1 = m.filters.conv1, w2 = m.filters.conv2;
  drawMaps(f, "w1", `conv1 filters — ${w1.length} × ${w1[0].length} × 5 × 5 (red positive, blue negative)`,
    w1.map((x) => x[0]), 56);
  drawFilterBank(f, "w2", `conv2 filters — ${w2.length} × ${w2[0].length} × 5 × 5: one column per output ` +
    `channel, one row per input channel`, w2, 6);
  layerTable(m);
}

function layerTable(m) {
  const t = $("layers");
  const num = (v) => v.toLocaleString("en");
  let html = `<tr><th>Layer</th><th>Type</th><th>Output shape</th><th class="num">Parameters</th>` +
    `<th class="num">FLOPs</th></tr>`;
  for (const r of m.layers) {
    html += `<tr><td>${r.name}</td><td>${r.kind}</td><td>${r.output_shape.join(" × ")}</td>` +
      `<td class="num">${num(r.params)}</td><td class="num">${num(r.flops)}</td></tr>`;
  }
  html += `<tr class="total"><td>Total</td><td></td><td></td><td class="num">${num(m.total_params)}</td>` +
    `<td class="num">${num(m.total_flops)}</td></tr>`;
  t.innerHTML = html;
  $("flops-note").textContent = m.flops_note;
}

// ---------- training in the page ----------

const train = { loss: [], smooth: null, acc: [], running: false, filtersAt: 0, predictAt: 0 };
const SMOOTHING = 0.8; // exponential moving average of the batch losses
const whichModel = () => document.querySelector("input[name=which]:checked").value;

function trainStatus(text) { $("t-status").textContent = text; }

// The curve of points [x, y] on `canvas`, x from 0 to xMax, y from 0 to yMax.
function drawCurve(canvas, points, xMax, yMax, label) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height, m = 30;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#dde1e8"; g.fillStyle = "#5c6577"; g.font = "11px sans-serif";
  g.strokeRect(m, 6, w - m - 6, h - m - 6 + 6);
  g.fillText(yMax.toPrecision(2), 2, 14);
  g.fillText("0", 2, h - m + 4);
  g.fillText(label, w / 2 - 20, h - 8);
  if (!points.length) return;
  g.strokeStyle = "#2f6fde"; g.lineWidth = 2;
  g.beginPath();
  points.forEach(([x, y], i) => {
    const px = m + (w - m - 6) * x / xMax, py = h - m - (h - m - 6) * Math.min(y, yMax) / yMax;
    if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
    if (points.length === 1) { g.fillStyle = "#2f6fde"; g.fillRect(px - 2, py - 2, 4, 4); }
  });
  g.stroke();
}

function drawTraining() {
  const epochs = train.epochs || 1;
  const top = Math.max(2.5, ...train.loss.map((p) => p[1]));
  drawCurve($("loss-curve"), train.loss, epochs, top, "epochs");
  drawCurve($("acc-curve"), train.acc, epochs, 1, "epochs");
  document.body.dataset.curvePoints = String(train.loss.length);
}

function drawConfusion(matrix, names) {
  let html = "<table><tr><th></th>" + names.map((n, j) => `<th>${j}</th>`).join("") + "</tr>";
  const top = Math.max(...matrix.flat()) || 1;
  matrix.forEach((row, i) => {
    html += `<tr><th>${i}</th>` + row.map((v, j) => {
      const t = v / top, c = i === j ? `rgba(47,111,222,${t})` : `rgba(178,24,43,${Math.min(1, 4 * t)})`;
      return `<td style="background:${c};color:${t > 0.5 ? "#fff" : "inherit"}">${v}</td>`;
    }).join("") + "</tr>";
  });
  $("confusion").innerHTML = html + "</table>";
}

// The tensors of a safetensors file: name -> { shape, data (Float32Array) }.
function readSafetensors(buffer) {
  const n = Number(new DataView(buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, n)));
  const tensors = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [a, b] = t.data_offsets;
    tensors[name] = { shape: t.shape, data: new Float32Array(buffer.slice(8 + n + a, 8 + n + b)) };
  }
  return tensors;
}

// A flat array as nested arrays of `shape`.
function nest(data, shape) {
  if (shape.length === 1) return Array.from(data);
  const step = data.length / shape[0];
  return Array.from({ length: shape[0] }, (_, i) => nest(data.subarray(i * step, (i + 1) * step), shape.slice(1)));
}

// The filters of the weights being trained, fetched at most twice a second (and at the end).
async function refreshFilters(force) {
  const now = performance.now();
  if (!force && now - train.filtersAt < 500) return;
  train.filtersAt = now;
  const res = await fetch("/api/train/weights");
  if (!res.ok) return;
  const t = readSafetensors(await res.arrayBuffer());
  const w1 = nest(t["conv1.weight"].data, t["conv1.weight"].shape);
  const w2 = nest(t["conv2.weight"].data, t["conv2.weight"].shape);
  const f = $("train-filters");
  drawMaps(f, "tw1", "conv1 filters being trained (red positive, blue negative)", w1.map((x) => x[0]), 48);
  drawFilterBank(f, "tw2", "conv2 filters being trained: one column per output channel", w2, 5);
  document.body.dataset.filterUpdates = String(Number(document.body.dataset.filterUpdates || 0) + 1);
  $("t-weights").hidden = false;
  $("which-training").disabled = false;
  // Draw while it learns: the drawing is read again with the new weights.
  if (whichModel() === "training" && hasInk && now - train.predictAt > 1000) {
    train.predictAt = now;
    pad.toBlob(send, "image/png");
  }
}

function setRunning(running) {
  train.running = running;
  $("t-start").disabled = running;
  $("t-stop").disabled = !running;
}

function onTrainEvent(e) {
  const ev = JSON.parse(e.data);
  const names = model ? model.classes : [...Array(10).keys()].map(String);
  switch (ev.type) {
    case "started":
      Object.assign(train, { loss: [], acc: [], smooth: null, epochs: ev.settings.epochs, startedAt: performance.now() });
      setRunning(true);
      trainStatus(`Training on ${ev.settings.dataset}…`);
      drawTraining();
      break;
    case "progress": {
      train.smooth = train.smooth == null ? ev.loss : SMOOTHING * train.smooth + (1 - SMOOTHING) * ev.loss;
      train.loss.push([ev.epoch - 1 + ev.batch / ev.batches, train.smooth]);
      trainStatus(`Epoch ${ev.epoch}, batch ${ev.batch} of ${ev.batches}: loss ${train.smooth.toFixed(3)}, ` +
        `${Math.round(ev.images_per_second).toLocaleString("en")} images/s`);
      drawTraining();
      refreshFilters(false);
      break;
    }
    case "epoch":
      train.acc.push([ev.epoch, ev.test_accuracy]);
      drawTraining();
      drawConfusion(ev.confusion, names);
      refreshFilters(true);
      break;
    case "done": case "stopped": case "error":
      setRunning(false);
      trainStatus(ev.type === "done"
        ? `Done: ${ev.epochs} epochs, test accuracy ${(100 * ev.test_accuracy).toFixed(2)}%.`
        : ev.type === "stopped" ? "Stopped." : `Failed: ${ev.message}`);
      refreshFilters(true);
      loadDataStatus();
      break;
    case "download":
      trainStatus(`Downloading ${ev.dataset}: file ${ev.index} of ${ev.files} (${ev.file})…`);
      break;
    case "downloaded":
      trainStatus(`${ev.dataset} is ready in ${ev.dir}.`);
      loadDataStatus();
      break;
  }
}

// Says when the chosen data set is missing, with a button to download it (never without it).
async function loadDataStatus() {
  const res = await fetch("/api/data");
  const status = await res.json();
  const chosen = status.datasets.find((d) => d.name === $("t-dataset").value);
  const missing = chosen && !chosen.present;
  $("t-data").hidden = !missing;
  if (missing) $("t-data-text").textContent = `${chosen.display} is not in ${chosen.dir}. `;
  $("t-start").disabled = missing || train.running;
}

function trainRequest() {
  const num = (id) => Number($(id).value);
  const body = { dataset: $("t-dataset").value, epochs: num("t-epochs"), batch_size: num("t-batch"),
    lr: num("t-lr"), augment: $("t-augment").checked, seed: num("t-seed") };
  body.limit = $("t-limit").value === "" ? null : num("t-limit");
  return body;
}

async function postJson(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}) });
  if (!res.ok) trainStatus((await res.json()).error || `error ${res.status}`);
}

function setupTraining() {
  $("train-form").addEventListener("submit", (e) => { e.preventDefault(); postJson("/api/train", trainRequest()); });
  $("t-stop").addEventListener("click", () => postJson("/api/train/stop"));
  $("t-download").addEventListener("click", () => postJson("/api/data/download", { dataset: $("t-dataset").value }));
  $("t-dataset").addEventListener("change", loadDataStatus);
  for (const r of document.querySelectorAll("input[name=which]")) {
    r.addEventListener("change", () => { if (hasInk) pad.toBlob(send, "image/png"); });
  }
  new EventSource("/api/train/events").onmessage = onTrainEvent;
  loadDataStatus();
  drawTraining();
}

clearPad();
setupFoolPanel();
setupTraining();
fetch("/api/model")
  .then((r) => r.json())
  .then((m) => { model = m; describeModel(m); })
  .catch((e) => showError(`cannot load the model description: ${e}`));
