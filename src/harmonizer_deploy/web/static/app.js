// The harmonizer page: pick or upload a melody, harmonize it in the page (WebGPU, else wasm on the CPU),
// see the four voices as a pianoroll, play them (and stop), download the MIDI.
// The melody is treated as `harmonizer-deploy harmonize` treats it (midi.js, sampler.js): same reading, same
// voice choice and whole-melody transposition, rests kept, same seed meaning (?seed=N, default 0) and the same
// random numbers, so the same melody + seed + backend give the same chorale as the CLI.
import { openModel, threadsUnavailableReason, webgpuIsSoftware } from "/static/tvm_session.js";
import {
  DEFAULT_VOICE_LEADING, harmonizeNotes, MIN_PITCH, NUM_PITCHES, NUM_VOICES, SCHEDULE, VOICE_CHOICES, VOICE_LEADING_MODES,
  VOICE_RANGES, VOICES,
} from "/static/sampler.js";
import { DEFAULT_BPM, midiFromVoices, notesFromPairs, readMidiMelody, rollToNotes, STEPS_PER_BAR } from "/static/midi.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"];
// The longest melody the page harmonizes (32 bars of 4/4): every Gibbs step runs the network over the whole
// piece, so a longer one would keep the page busy for many minutes. The CLI takes up to 4096 steps.
export const PAGE_MAX_STEPS = 512;
let model = null, melodies = [], melody = null, result = null, audio = null;

function showError(msg) { $("error").hidden = false; $("error").textContent = msg; }

function setWarnings(lines) {
  $("warnings").hidden = !lines.length;
  $("warnings").textContent = lines.map((l) => `warning: ${l}`).join("\n");
}

/** ?seed=N: an integer (negative allowed), default 0 as the CLI's --seed. */
function seedParam() {
  const raw = params.get("seed");
  if (raw === null || raw === "") return 0;
  if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(Number(raw))) {
    throw new Error(`?seed=${raw} is not an integer — pass e.g. ?seed=0 (the CLI's default)`);
  }
  return Number(raw);
}

function voiceParam() {
  const v = params.get("voice") || "auto";
  if (!VOICE_CHOICES.includes(v)) throw new Error(`?voice=${v} is not one of ${VOICE_CHOICES.join(", ")}`);
  return v;
}

/** ?voice_leading=strict|off, as the CLI's --voice-leading (same default). */
function voiceLeadingParam() {
  const mode = params.get("voice_leading") || DEFAULT_VOICE_LEADING;
  if (!VOICE_LEADING_MODES.includes(mode)) throw new Error(`?voice_leading=${mode} is not one of ${VOICE_LEADING_MODES.join(", ")}`);
  return mode;
}

/** The artifact must be a Coconet-style harmonizer: input [batch, time, 46, 8], output [batch, time, 46, 4]. */
function checkSignature(manifest) {
  const input = (manifest.inputs || [])[0], output = (manifest.outputs || [])[0];
  const ok = input && output && input.shape.length === 4 && output.shape.length === 4
    && input.shape[2] === NUM_PITCHES && input.shape[3] === 2 * NUM_VOICES
    && output.shape[2] === NUM_PITCHES && output.shape[3] === NUM_VOICES;
  if (!ok) {
    const shape = (x) => (x ? `${x.name}[${x.shape.join(", ")}]` : "none");
    throw new Error(`this model (input ${shape(input)}, output ${shape(output)}) is not a harmonizer: the page needs `
      + `input [batch, time, ${NUM_PITCHES}, ${2 * NUM_VOICES}] and output [batch, time, ${NUM_PITCHES}, ${NUM_VOICES}]`);
  }
  const fixed = manifest.static_shape;
  if (fixed && fixed[0] !== 1) throw new Error(`the model was compiled for batch ${fixed[0]}; the page runs batch 1`);
  return fixed ? Number(fixed[1]) : null; // a fixed time window, sampled in overlapping windows as the CLI does
}

/** WebGPU on a hardware adapter when the artifact loads; otherwise wasm on the CPU, threaded (`wasm-mt`) when
 *  the page is cross-origin isolated and the build has it, else one thread; saying which and why. */
async function loadModel() {
  const available = await (await fetch("/artifacts.json")).json();
  const forced = params.get("backend");
  const order = forced ? [forced] : ["webgpu", "wasm-mt", "wasm"];
  const hasWasm = available.includes("wasm") || available.includes("wasm-mt");
  let why = "", oneThreadWhy = "";
  for (const name of order) {
    if (!available.includes(name)) { why = why || `no ${name} build on the server`; continue; }
    if (name === "webgpu" && !navigator.gpu) { why = "this browser has no WebGPU"; continue; }
    if (name === "webgpu" && !forced && hasWasm && (await webgpuIsSoftware())) {
      why = "the WebGPU adapter is a software renderer, slower than WebAssembly here";
      continue;
    }
    if (name === "wasm-mt" && !forced && available.includes("wasm") && threadsUnavailableReason()) {
      oneThreadWhy = threadsUnavailableReason();  // the threaded build would run one thread: the plain one is leaner
      continue;
    }
    let m;
    try {
      m = await openModel(`/artifacts/${name}/`);
    } catch (e) {
      why = `${name} failed: ${e.message || e}`;
      console.warn(why);
      continue;
    }
    const window = checkSignature(m.manifest);
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
    if (name !== "webgpu") {
      status.textContent += m.threads > 1 ? ` WebAssembly threads: ${m.threads} (cross-origin isolated).`
        : ` One thread${m.threadsReason || oneThreadWhy ? ` (${m.threadsReason || oneThreadWhy})` : ""}.`;
    }
    const t = m.timings;
    status.textContent += ` Downloaded ${(t.download_bytes / 1e6).toFixed(2)} MB: code ${(t.code_bytes / 1e6).toFixed(2)} MB, `
      + `weights ${(t.weight_bytes / 1e6).toFixed(2)} MB as ${t.weights_encoding}.`;
    if (t.weights_encoding !== "float32") {
      // measured on bach-doodle: float32 weights give the CLI's chorale note for note, uint8 ones a different one
      status.textContent += ` ${t.weights_encoding} weights are close to, not equal to, the float32 model: the chorale `
        + "can differ from `harmonizer-deploy harmonize`'s for the same seed.";
    }
    return { model: m, backend: name, window };
  }
  throw new Error(`could not load the harmonizer (${why})`);
}

function pitchBounds(rows) {
  const all = rows.flat().filter((p) => p !== null);
  const lo = Math.min(MIN_PITCH, ...all), hi = Math.max(MIN_PITCH + NUM_PITCHES - 1, ...all);
  return [lo, hi];
}

/** rows[v] = [T] pitches (null = silent); melodyVoice is drawn alone before harmonizing. */
function draw(rows) {
  const canvas = $("roll"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const T = Math.max(...rows.map((r) => r.length));
  if (!T) return;
  const [lo, hi] = pitchBounds(rows);
  const w = canvas.width / T, h = canvas.height / (hi - lo + 1);
  ctx.strokeStyle = "#e4e4e4";
  for (let p = lo; p <= hi; p++) if (p % 12 === 0) { ctx.beginPath(); ctx.moveTo(0, (hi - p) * h); ctx.lineTo(canvas.width, (hi - p) * h); ctx.stroke(); }
  for (let t = 0; t < T; t += STEPS_PER_BAR) { ctx.beginPath(); ctx.moveTo(t * w, 0); ctx.lineTo(t * w, canvas.height); ctx.stroke(); }
  rows.forEach((row, v) => {
    ctx.fillStyle = COLORS[v];
    for (const n of rollToNotes(row, STEPS_PER_BAR)) ctx.fillRect(n.start * w + 1, (hi - n.pitch) * h + 1, (n.end - n.start) * w - 2, h - 2);
  });
}

/** The chorale's notes per voice: the melody exactly as given (repeated notes stay separate), the others merged
 *  per bar (Harmonization.voices). */
function voiceNotes(res) {
  return res.chorale.map((row, v) => (v === res.melodyVoice ? melody.notes : rollToNotes(row, melody.stepsPerBar)));
}

function stopPlayback() {
  if (audio) { audio.close(); audio = null; }
  $("stop").disabled = true;
}

function play(res) {
  stopPlayback();
  const ctx = new AudioContext();
  audio = ctx;
  const sixteenth = 60 / melody.bpm / 4;
  const t0 = ctx.currentTime + 0.1;
  let last = t0;
  voiceNotes(res).forEach((notes, v) => {
    const level = v === res.melodyVoice ? 0.16 : 0.1;
    for (const n of notes) {
      const osc = ctx.createOscillator(), gain = ctx.createGain();
      osc.type = "triangle";
      osc.frequency.value = 440 * Math.pow(2, (n.pitch - 69) / 12);
      const a = t0 + n.start * sixteenth, b = t0 + n.end * sixteenth;
      gain.gain.setValueAtTime(0, a);
      gain.gain.linearRampToValueAtTime(level, a + 0.02);
      gain.gain.setValueAtTime(level, Math.max(a + 0.02, b - 0.04));
      gain.gain.linearRampToValueAtTime(0, b);
      osc.connect(gain).connect(ctx.destination);
      osc.start(a); osc.stop(b);
      last = Math.max(last, b);
    }
  });
  $("stop").disabled = false;
  setTimeout(() => { if (audio === ctx) stopPlayback(); }, (last - ctx.currentTime) * 1000 + 200);
}

function download(res) {
  const names = VOICES.map((v) => v[0].toUpperCase() + v.slice(1));
  const blob = new Blob([midiFromVoices(voiceNotes(res), names, melody.bpm)], { type: "audio/midi" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "harmonization.mid";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

/** Use a melody ({notes, bpm, stepsPerBar, warnings}); one longer than PAGE_MAX_STEPS is cut there, with a warning. */
function setMelody(m) {
  const warnings = [...(m.warnings || [])];
  const length = Math.max(...m.notes.map((n) => n.end));
  let notes = m.notes;
  if (length > PAGE_MAX_STEPS) {
    notes = notes.filter((n) => n.start < PAGE_MAX_STEPS).map((n) => ({ ...n, end: Math.min(n.end, PAGE_MAX_STEPS) }));
    warnings.push(`the melody is ${length} 16th-note steps long; the page harmonizes the first ${PAGE_MAX_STEPS} `
      + `(harmonizer-deploy harmonize takes up to 4096)`);
  }
  melody = { ...m, notes, warnings, length: Math.max(...notes.map((n) => n.end)) };
  result = null;
  stopPlayback();
  setWarnings(warnings);
  $("play").disabled = $("download").disabled = true;
  const line = new Array(melody.length).fill(null);
  for (const n of notes) for (let t = n.start; t < n.end; t++) line[t] = n.pitch;
  draw([line]);
}

async function runHarmonize() {
  $("harmonize").disabled = true;
  $("error").hidden = true;
  const steps = Number(params.get("steps")) || SCHEDULE.steps;
  const seed = seedParam(), melodyVoice = voiceParam(), voiceLeading = voiceLeadingParam();
  $("progress").max = steps;
  const t0 = performance.now();
  let modelMs = 0; // time inside the network calls: the rest of a step is the page's own JS (sampling, copies)
  const runModel = async (x, shape) => {
    const start = performance.now();
    try { return await model.model.run(x, shape); } finally { modelMs += performance.now() - start; }
  };
  try {
    result = await harmonizeNotes(runModel, melody.notes, {
      seed, melodyVoice, voiceLeading, window: model.window, schedule: { ...SCHEDULE, steps },
      onStep: (i, n) => {
        $("progress").value = i;
        const perStep = (performance.now() - t0) / Math.max(i, 1);
        $("progress-text").textContent = `step ${i} / ${n} (${perStep.toFixed(0)} ms per step)`;
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    const moved = result.shift ? `, transposed ${result.shift > 0 ? "+" : ""}${result.shift} for the model` : "";
    $("progress-text").textContent = `done: ${steps} Gibbs steps in ${seconds.toFixed(1)} s on ${model.backend} `
      + `(${(seconds * 1000 / steps).toFixed(0)} ms per step, ${(modelMs / steps).toFixed(0)} ms of it in the network), `
      + `seed ${seed}, melody sung by the `
      + `${VOICES[result.melodyVoice]}${moved}`;
    draw(result.chorale);
    $("play").disabled = $("download").disabled = false;
    return { seconds, steps, seed, model_seconds: modelMs / 1000 };
  } finally {
    $("harmonize").disabled = false;
  }
}

async function loadMidi(buffer, name) {
  setMelody(readMidiMelody(buffer, name));
}

async function main() {
  melodies = (await (await fetch("/static/melodies.json")).json()).melodies;
  melodies.forEach((m, i) => $("melody").add(new Option(m.name, String(i))));
  const bundled = (i) => ({ notes: notesFromPairs(melodies[i].notes), bpm: DEFAULT_BPM, stepsPerBar: STEPS_PER_BAR, warnings: [] });
  const pick = Number(params.get("melody") || 0);
  if (!Number.isInteger(pick) || !melodies[pick]) {
    throw new Error(`?melody=${params.get("melody")} is not a bundled melody — pass 0 to ${melodies.length - 1}`);
  }
  $("melody").value = String(pick);
  $("melody").onchange = () => setMelody(bundled(Number($("melody").value)));
  $("midi-file").onchange = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try { await loadMidi(await file.arrayBuffer(), file.name); } catch (err) { showError(`cannot use ${file.name}: ${err.message}`); }
  };
  $("play").onclick = () => result && play(result);
  $("stop").onclick = stopPlayback;
  $("download").onclick = () => result && download(result);
  $("harmonize").onclick = () => runHarmonize().catch((e) => showError(String(e.message || e)));
  const midiUrl = params.get("midi"); // a MIDI file on this server (the page/CLI agreement test uses it)
  if (midiUrl) {
    const r = await fetch(new URL(midiUrl, location.origin).pathname);
    if (!r.ok) throw new Error(`GET ${midiUrl}: HTTP ${r.status}`);
    await loadMidi(await r.arrayBuffer(), midiUrl.split("/").pop());
  } else {
    setMelody(bundled(pick));
  }
  seedParam(); voiceParam(); voiceLeadingParam(); // a bad parameter is reported now, not after the model loads
  model = await loadModel();
  $("harmonize").disabled = false;
  if (params.get("auto")) {
    // Browser test hook: harmonize once and report the voices back to the server that served this page.
    const run = await runHarmonize();
    $("play").click(); // playback starts (the Stop button comes alive), then Stop ends it
    const playing = !$("stop").disabled && audio !== null;
    $("stop").click();
    const stop = { enabled_while_playing: playing, stopped: audio === null && $("stop").disabled };
    const t = model.model.timings;
    await fetch("/report/page", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ok: true, backend: model.backend, status: $("backend").textContent,
        melody: result.melody, voices: result.chorale, melody_voice: VOICES[result.melodyVoice], shift: result.shift,
        ranges: VOICE_RANGES, voice_names: VOICES,
        warnings: melody.warnings, download_bytes: t.download_bytes, weight_bytes: t.weight_bytes,
        weights_encoding: t.weights_encoding, stop_button: stop, ...run }) });
  }
}

main().catch((e) => {
  showError(String(e.message || e));
  if (!model) $("backend").textContent = "The harmonizer could not start.";
  if (params.get("auto")) fetch("/report/page", { method: "POST", body: JSON.stringify({ ok: false, error: String(e.message || e) }) });
});
