"use strict";
// The drawing pad: pointer strokes (mouse, pen, touch) on a white canvas in black ink; after
// every stroke segment the picture goes to /api/predict as PNG (one request in flight, the
// newest drawing sent next), and both models' answers are shown.
const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const picker = document.getElementById("model");
const status = document.getElementById("status");
let drawing = false, last = null, inked = false, inflight = false, pending = false;

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  for (const side of ["int", "float"]) {
    const c = document.getElementById(side + "-class");
    c.textContent = "–";
    c.dataset.class = "";
    document.getElementById(side + "-latency").textContent = "";
    document.getElementById(side + "-bars").replaceChildren();
  }
  document.getElementById("seen").getContext("2d").clearRect(0, 0, 28, 28);
  status.textContent = "Draw a digit.";
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}

function line(a, b) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 20;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(a[0], a[1]);
  ctx.lineTo(b[0], b[1]);
  ctx.stroke();
  inked = true;
}

pad.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  drawing = true;
  pad.setPointerCapture(e.pointerId);
  last = point(e);
  line(last, last);
});
pad.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  e.preventDefault();
  const p = point(e);
  line(last, p);
  last = p;
  send();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    send();
  });
}
document.getElementById("clear").addEventListener("click", clearPad);
picker.addEventListener("change", () => { if (inked) send(); });

async function send() {
  if (!inked) return;
  if (inflight) { pending = true; return; }
  inflight = true;
  pending = false;
  document.body.dataset.busy = "1";
  try {
    const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const url = "/api/predict" + (picker.value ? "?model=" + encodeURIComponent(picker.value) : "");
    const res = await fetch(url, { method: "POST", headers: { "Content-Type": "image/png" }, body: blob });
    const answer = await res.json();
    if (res.ok) show(answer);
    else status.textContent = "Error " + res.status + ": " + answer.error;
  } catch (err) {
    status.textContent = "The server did not answer: " + err;
  }
  inflight = false;
  if (pending) send();
  else document.body.dataset.busy = "0";
}

function show(a) {
  for (const [side, r, err] of [["int", a.integer, a.integer_error], ["float", a.float, a.float_error]]) {
    const c = document.getElementById(side + "-class");
    const bars = document.getElementById(side + "-bars");
    const latency = document.getElementById(side + "-latency");
    if (!r) {
      c.textContent = "–";
      c.dataset.class = "";
      latency.textContent = err || "";
      bars.replaceChildren();
      continue;
    }
    c.textContent = r.name;
    c.dataset.class = String(r.class);
    latency.textContent = (side === "int" ? "integer engine: " : "Burn f32: ") + r.latency_us.toFixed(0) + " µs";
    bars.replaceChildren(...r.probabilities.map((p, i) => {
      const row = document.createElement("div");
      row.className = "bar" + (i === r.class ? " best" : "");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = a.classes[i];
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (100 * p).toFixed(1) + "%";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "p";
      value.textContent = p.toFixed(3);
      row.append(name, track, value);
      return row;
    }));
  }
  const seen = document.getElementById("seen").getContext("2d");
  const img = seen.createImageData(28, 28);
  a.image.forEach((v, i) => {
    img.data.set([v, v, v, 255], 4 * i);
  });
  seen.putImageData(img, 0, 0);
  status.textContent = a.model + ": " + a.description;
}

async function loadModels() {
  try {
    const res = await fetch("/api/models");
    const list = await res.json();
    for (const m of list.models) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = m.id + " — " + m.description;
      o.disabled = !m.integer && !m.float;
      o.selected = m.id === list.default;
      picker.append(o);
    }
    if (!list.models.length) status.textContent = "No models found: run cargo xtask train && cargo xtask quantize.";
  } catch (err) {
    status.textContent = "Cannot list the models: " + err;
  }
}

document.body.dataset.busy = "0";
clearPad();
loadModels();
