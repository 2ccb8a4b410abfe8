// The harmonizer page: pick or upload a melody, harmonize it in the page (WebGPU, else wasm on the CPU),
// see the four voices as a pianoroll, play them, download the MIDI.
import { openModel, webgpuIsSoftware } from "/static/tvm_session.js";
import { harmonize, SCHEDULE, VOICES, VOICE_RANGES } from "/static/sampler.js";
import { melodyFromMidi, midiFromVoices, voiceNotes } from "/static/midi.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
const SIXTEENTH_S = 0.15; // 100 bpm
let model = null, melodies = [], melody = null, voices = null;

function showError(msg) { $("error").hidden = false; $("error").textContent = msg; }

/** WebGPU when the browser has it and the artifact loads; otherwise wasm on the CPU, saying why. */
async function loadModel() {
  const available = await (await fetch("/artifacts.json")).json();
  const forced = params.get("backend");
  const order = forced ? [forced] : ["webgpu", "wasm"];
  let why = "";
  for (const name of order) {
    if (!available.includes(name)) { why = why || `no ${name} build on the server`; continue; }
    if (name === "webgpu" && !navigator.gpu) { why = "this browser has no WebGPU"; continue; }
    if (name === "webgpu" && !forced && available.includes("wasm") && (await webgpuIsSoftware())) {
      why = "the WebGPU adapter is a software renderer, slower than WebAssembly here";
      continue;
    }
    try {
      const m = await openModel(`/artifacts/${name}/`);
      const status = $("backend");
      if (name === "webgpu") {
        const a = m.adapterInfo || {};
        status.textContent = `Running on WebGPU (${[a.vendor, a.architecture, a.description].filter(Boolean).join(" ") || "adapter"}), loaded in ${(m.timings.load_ms / 1000).toFixed(1)} s.`;
      } else if (forced) {
        status.textContent = `Running on the CPU (WebAssembly), as requested (?backend=${forced}).`;
      } else {
        status.textContent = `WebGPU unavailable (${why}) — running on the CPU (WebAssembly) instead, which is slower.`;
        status.classList.add("warn");
      }
      const mb = (m.timings.download_bytes / 1e6).toFixed(1);
      status.textContent += ` Downloaded ${mb} MB (weights as ${m.timings.weights_encoding}).`;
      return { model: m, backend: name };
    } catch (e) {
      why = `${name} failed: ${e.message || e}`;
      console.warn(why);
    }
  }
  throw new Error(`could not load the harmonizer (${why})`);
}

function melodyFromNotes(notes) {
  const steps = [];
  for (const [pitch, dur] of notes) for (let i = 0; i < dur; i++) steps.push(pitch);
  return steps;
}

function draw(rows, highlightMelodyOnly = false) {
  const canvas = $("roll"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!rows || !rows[0].length) return;
  const T = rows[0].length, lo = 36, hi = 81;
  const w = canvas.width / T, h = canvas.height / (hi - lo + 1);
  ctx.strokeStyle = "#e4e4e4";
  for (let p = lo; p <= hi; p++) if (p % 12 === 0) { ctx.beginPath(); ctx.moveTo(0, (hi - p) * h); ctx.lineTo(canvas.width, (hi - p) * h); ctx.stroke(); }
  for (let t = 0; t < T; t += 16) { ctx.beginPath(); ctx.moveTo(t * w, 0); ctx.lineTo(t * w, canvas.height); ctx.stroke(); }
  rows.forEach((row, v) => {
    if (highlightMelodyOnly && v > 0) return;
    ctx.fillStyle = COLORS[v];
    for (const [start, len, pitch] of voiceNotes(row)) {
      if (pitch === null) continue;
      ctx.fillRect(start * w + 1, (hi - pitch) * h + 1, len * w - 2, h - 2);
    }
  });
}

function play(rows) {
  const ctx = new AudioContext();
  const t0 = ctx.currentTime + 0.1;
  rows.forEach((row, v) => {
    for (const [start, len, pitch] of voiceNotes(row)) {
      const osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.type = "triangle";
      osc.frequency.value = 440 * Math.pow(2, (pitch - 69) / 12);
      const a = t0 + start * SIXTEENTH_S, b = a + len * SIXTEENTH_S;
      gain.gain.setValueAtTime(0, a);
      gain.gain.linearRampToValueAtTime(v === 0 ? 0.16 : 0.1, a + 0.02);
      gain.gain.setValueAtTime(v === 0 ? 0.16 : 0.1, b - 0.04);
      gain.gain.linearRampToValueAtTime(0, b);
      osc.connect(gain).connect(ctx.destination);
      osc.start(a); osc.stop(b);
    }
  });
}

function download(rows) {
  const blob = new Blob([midiFromVoices(rows)], { type: "audio/midi" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "harmonization.mid";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function setMelody(m) {
  melody = m; voices = null;
  $("play").disabled = $("download").disabled = true;
  draw([m, [], [], []].map((r) => (r.length ? r : new Array(m.length).fill(null))), true);
}

async function runHarmonize() {
  $("harmonize").disabled = true;
  $("error").hidden = true;
  const steps = Number(params.get("steps")) || SCHEDULE.steps;
  $("progress").max = steps;
  const t0 = performance.now();
  try {
    voices = await harmonize((x, shape) => model.model.run(x, shape), melody, {
      seed: Number(params.get("seed")) || 1,
      schedule: { ...SCHEDULE, steps },
      onStep: (i, n) => {
        $("progress").value = i;
        const perStep = (performance.now() - t0) / Math.max(i, 1);
        $("progress-text").textContent = `step ${i} / ${n} (${perStep.toFixed(0)} ms per step)`;
        if (i % 8 === 0 || i === n) draw(voices || [melody, melody, melody, melody].map((r, v) => (v ? r.map(() => null) : r)), true);
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    $("progress-text").textContent = `done: ${steps} Gibbs steps in ${seconds.toFixed(1)} s on ${model.backend} `
      + `(${(seconds * 1000 / steps).toFixed(0)} ms per step)`;
    draw(voices);
    $("play").disabled = $("download").disabled = false;
    return { seconds, steps };
  } finally {
    $("harmonize").disabled = false;
  }
}

async function main() {
  melodies = (await (await fetch("/static/melodies.json")).json()).melodies;
  melodies.forEach((m, i) => $("melody").add(new Option(m.name, String(i))));
  const pick = Number(params.get("melody") || 0);
  $("melody").value = String(pick);
  setMelody(melodyFromNotes(melodies[pick].notes));
  $("melody").onchange = () => setMelody(melodyFromNotes(melodies[Number($("melody").value)].notes));
  $("midi-file").onchange = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try { setMelody(melodyFromMidi(await file.arrayBuffer())); } catch (err) { showError(`cannot use ${file.name}: ${err.message}`); }
  };
  $("play").onclick = () => voices && play(voices);
  $("download").onclick = () => voices && download(voices);
  $("harmonize").onclick = () => runHarmonize().catch((e) => showError(String(e.message || e)));
  model = await loadModel();
  $("harmonize").disabled = false;
  if (params.get("auto")) {
    // Browser test hook: harmonize once and report the voices back to the server that served this page.
    const input = melody.slice();
    const result = await runHarmonize();
    await fetch("/report/page", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ok: true, backend: model.backend, status: $("backend").textContent, melody: input,
        voices, ranges: VOICE_RANGES,
        voice_names: VOICES, ...result }) });
  }
}

main().catch((e) => {
  showError(String(e.message || e));
  $("backend").textContent = "The harmonizer could not start.";
  if (params.get("auto")) fetch("/report/page", { method: "POST", body: JSON.stringify({ ok: false, error: String(e.message || e) }) });
});
