// Coconet's harmonization loop in the page, step for step the CLI's (harmonizer_deploy.music.harmonize and
// music.sampling.gibbs): the melody's voice (auto: the voice whose range in the chorales fits it best), the WHOLE
// melody transposed into that voice's range (by octaves where possible), rests kept as rests, the other voices
// infilled by annealed block Gibbs sampling (Yao schedule) with the same counter-based random numbers
// (random.js = music/random.py), the same first-step rule, the same inverse-CDF draw on p^(1/T) * allowed in
// float64 and the same range mask. Same melody + seed + backend → the same chorale as `harmonize`.
// Encoding (music/encoding.py): 46 pitches (MIDI 36-81), 4 voices SATB; input [B,T,46,8] = pianoroll with masked
// cells zeroed ++ mask (1 = to predict); output [B,T,46,4].
import { STREAM_DRAW, STREAM_MASK, stepUniforms } from "./random.js";

export const MIN_PITCH = 36;
export const NUM_PITCHES = 46;
export const MAX_PITCH = MIN_PITCH + NUM_PITCHES - 1;
export const NUM_VOICES = 4;
export const VOICES = ["soprano", "alto", "tenor", "bass"];
export const VOICE_CHOICES = ["auto", ...VOICES];
// encoding.VOICE_RANGES (sampling ranges), DATA_VOICE_RANGES and TYPICAL_VOICE_RANGES (for `auto`)
export const VOICE_RANGES = [[60, 81], [53, 74], [48, 69], [36, 64]];
export const DATA_VOICE_RANGES = [[60, 81], [52, 74], [46, 69], [36, 66]];
export const TYPICAL_VOICE_RANGES = [[62, 78], [57, 71], [52, 67], [39, 60]];
export const SCHEDULE = { steps: 96, pmin: 0.1, pmax: 0.9, alpha: 0.7, temperature: 0.99 };

/** Yao annealing, sampling.yao_probability: max(pmin, (pmax − (pmax − pmin)·i/n)/alpha), same operation order. */
export function maskProbability(i, n, s = SCHEDULE) {
  return Math.max(s.pmin, (s.pmax - ((s.pmax - s.pmin) * i) / n) / s.alpha);
}

const sounding = (line) => line.filter((p) => p !== null);

/** harmonize.voice_fit: shares of the line's sounding steps inside the voice's typical and full data ranges. */
export function voiceFit(line, v) {
  const notes = sounding(line);
  if (!notes.length) return [0, 0];
  const [lo, hi] = TYPICAL_VOICE_RANGES[v], [low, high] = DATA_VOICE_RANGES[v];
  return [notes.filter((p) => p >= lo && p <= hi).length / notes.length,
    notes.filter((p) => p >= low && p <= high).length / notes.length];
}

/** harmonize.choose_melody_voice: the best fit; on a tie the higher voice. */
export function chooseMelodyVoice(line) {
  let best = 0, bestFit = voiceFit(line, 0);
  for (let v = 1; v < NUM_VOICES; v++) {
    const fit = voiceFit(line, v);
    if (fit[0] > bestFit[0] || (fit[0] === bestFit[0] && fit[1] > bestFit[1])) { best = v; bestFit = fit; }
  }
  return best;
}

/** harmonize.voice_shift: semitones moving the whole line into voice v's range — 0 if it fits, else the nearest
 *  octave shift that fits, else the smallest shift that does (ties: the downward one, as Python's min). */
export function voiceShift(line, v) {
  const [low, high] = VOICE_RANGES[v];
  const notes = sounding(line);
  const lo = Math.min(...notes), hi = Math.max(...notes);
  if (hi - lo > high - low) {
    throw new Error(`the melody spans ${hi - lo} semitones (MIDI ${lo}-${hi}); the ${VOICES[v]} range is `
      + `${high - low} (${low}-${high}) — pass a melody with a narrower range, or another voice`);
  }
  const fits = [];
  for (let s = -48; s <= 48; s++) if (lo + s >= low && hi + s <= high) fits.push(s);
  if (!fits.length) {
    throw new Error(`the melody (MIDI ${lo}-${hi}) is more than four octaves from the ${VOICES[v]} range ${low}-${high}`);
  }
  const octaves = fits.filter((s) => s % 12 === 0);
  let best = null;
  for (const s of octaves.length ? octaves : fits) if (best === null || Math.abs(s) < Math.abs(best)) best = s;
  return best;
}

/** sampling.range_mask: allowed[p][v] = 1 where pitch p is in voice v's range moved by `shift`. */
export function rangeMask(shift = 0) {
  const allowed = Array.from({ length: NUM_PITCHES }, () => new Float64Array(NUM_VOICES));
  VOICE_RANGES.forEach(([lo, hi], v) => {
    const low = Math.max(lo + shift, MIN_PITCH) - MIN_PITCH, high = Math.min(hi + shift, MAX_PITCH) - MIN_PITCH;
    for (let p = low; p <= high; p++) allowed[p][v] = 1;
  });
  return allowed;
}

/**
 * The weights of voice v's pitches at time t, before the inverse-CDF draw: p^(1/T) * allowed, in float64.
 * THE one place the per-cell probability vector is formed (a voice-leading penalty belongs here, mirroring
 * gibbs() in music/sampling.py). `w`: a buffer to fill (every entry is written), so a step's hundreds of cells
 * need no allocation each.
 */
export function cellWeights(probs, t, v, invTemperature, allowed, w = new Float64Array(NUM_PITCHES)) {
  for (let p = 0; p < NUM_PITCHES; p++) {
    w[p] = Math.pow(Math.max(probs[(t * NUM_PITCHES + p) * NUM_VOICES + v], 0), invTemperature) * allowed[p][v];
  }
  return w;
}

/** Inverse CDF as gibbs(): the number of cumulative sums below u·total (sequential sums), at most 45. */
export function inverseCdf(w, u) {
  const cdf = new Float64Array(w.length);
  let acc = 0;
  for (let p = 0; p < w.length; p++) { acc += w[p]; cdf[p] = acc; }
  const target = u * cdf[w.length - 1];
  let count = 0;
  for (let p = 0; p < w.length; p++) if (cdf[p] < target) count += 1;
  return Math.min(count, NUM_PITCHES - 1);
}

// Voice leading (music/voice_leading.py and its mirror voice_leading.js): "strict" weighs each drawn note against
// parallels and crossings with the other voices' current notes, in 8 passes. The default is the CLI's
// (sampling.GibbsSettings.voice_leading), so the page and the CLI draw the same chorale; a test checks they match.
export const VOICE_LEADING_MODES = ["off", "strict"];
export const DEFAULT_VOICE_LEADING = "strict";

/** One Gibbs step's draw of every masked cell through voice_leading.js (gibbs()'s draw_with_voice_leading):
 *  the same per-cell weights, pitches in MIDI (NaN = silent), [T*4] layouts as numpy's. */
async function drawWithVoiceLeading(probs, cur, mask, u, invTemperature, allowed) {
  const vl = await import("./voice_leading.js");
  const T = cur[0].length, P = NUM_PITCHES, V = NUM_VOICES;
  const p = new Float64Array(T * P * V), pitches = new Float64Array(T * V), cells = new Uint8Array(T * V);
  const draws = new Float64Array(T * V), w = new Float64Array(P);
  for (let t = 0; t < T; t++) {
    for (let v = 0; v < V; v++) {
      pitches[t * V + v] = cur[v][t] < 0 ? NaN : cur[v][t] + MIN_PITCH;
      if (!mask[v][t]) continue;
      cells[t * V + v] = 1;
      draws[t * V + v] = u(t, v, STREAM_DRAW);
      cellWeights(probs, t, v, invTemperature, allowed, w);
      for (let k = 0; k < P; k++) p[(t * P + k) * V + v] = w[k];
    }
  }
  const idx = vl.drawWithVoiceLeading(p, pitches, cells, draws, T);
  for (let t = 0; t < T; t++) for (let v = 0; v < V; v++) if (mask[v][t]) cur[v][t] = idx[t * V + v];
}

/** sampling.windowed_probs: the whole piece in one call, or (fixed-window artifact) overlapping windows. */
async function windowedProbs(runModel, input, T, window) {
  const cell = NUM_PITCHES * 2 * NUM_VOICES, outCell = NUM_PITCHES * NUM_VOICES;
  if (window === null || window === T) return (await runModel(input, [1, T, NUM_PITCHES, 2 * NUM_VOICES])).data;
  if (T < window) throw new Error(`piece of ${T} steps is shorter than the model's fixed window of ${window}`);
  const hop = Math.max(1, Math.floor(window / 2));
  const starts = [];
  for (let s = 0; s <= T - window; s += hop) starts.push(s);
  if (starts[starts.length - 1] !== T - window) starts.push(T - window);
  const out = new Float32Array(T * outCell), best = new Float64Array(T).fill(-1);
  for (const s of starts) {
    const part = (await runModel(input.subarray(s * cell, (s + window) * cell), [1, window, NUM_PITCHES, 2 * NUM_VOICES])).data;
    const centre = s + (window - 1) / 2;
    for (let k = 0; k < window; k++) {
      const score = window / 2 - Math.abs(s + k - centre);
      if (score > best[s + k]) { out.set(part.subarray(k * outCell, (k + 1) * outCell), (s + k) * outCell); best[s + k] = score; }
    }
  }
  return out;
}

/**
 * sampling.gibbs: fill the unknown cells of `pitch` ([V][T] pitch index or -1 = silent) where known[v][t] is
 * false. Returns the new pitch indices. `runModel(Float32Array, shape)` resolves to {data} = probs [1,T,46,4].
 */
export async function gibbs(runModel, pitch, known, seed, { schedule = SCHEDULE, allowed = rangeMask(), window = null,
  onStep = () => {}, voiceLeading = DEFAULT_VOICE_LEADING } = {}) {
  if (!VOICE_LEADING_MODES.includes(voiceLeading)) throw new Error(`unknown voice leading ${voiceLeading}: use one of ${VOICE_LEADING_MODES.join(", ")}`);
  const T = pitch[0].length, P = NUM_PITCHES, V = NUM_VOICES, n = schedule.steps;
  const cur = pitch.map((row, v) => row.map((p, t) => (known[v][t] ? p : -1)));
  const input = new Float32Array(T * P * 2 * V);
  const invTemperature = 1.0 / schedule.temperature;
  for (let i = 0; i < n; i++) {
    const pm = maskProbability(i, n, schedule);
    const u = stepUniforms(seed, i);
    // the first step fills every unknown cell: nothing to condition on yet
    const mask = cur.map((row, v) => row.map((_, t) => !known[v][t] && (i === 0 || u(t, v, STREAM_MASK) < pm)));
    if (!mask.some((row) => row.some(Boolean))) { onStep(i + 1, n); continue; }
    input.fill(0);
    for (let t = 0; t < T; t++) {
      const base = t * P * 2 * V;
      for (let v = 0; v < V; v++) {
        if (mask[v][t]) { for (let p = 0; p < P; p++) input[base + p * 2 * V + V + v] = 1; }
        else if (cur[v][t] >= 0) input[base + cur[v][t] * 2 * V + v] = 1;
      }
    }
    const probs = await windowedProbs(runModel, input, T, window);
    if (voiceLeading === "strict") {
      await drawWithVoiceLeading(probs, cur, mask, u, invTemperature, allowed);
    } else {
      const w = new Float64Array(P);
      for (let t = 0; t < T; t++) {
        for (let v = 0; v < V; v++) {
          if (mask[v][t]) cur[v][t] = inverseCdf(cellWeights(probs, t, v, invTemperature, allowed, w), u(t, v, STREAM_DRAW));
        }
      }
    }
    onStep(i + 1, n);
  }
  return cur;
}

/**
 * harmonize.harmonize_notes: the melody (`notes` [{pitch, start, end}] in 16ths) sung by `melodyVoice` ("auto"
 * or a voice name), the other three infilled. Returns {chorale: [V][T] MIDI pitch or null (the melody's
 * register), melodyVoice (index), shift, melody: [T]}.
 */
export async function harmonizeNotes(runModel, notes, { seed = 0, melodyVoice = "auto", schedule = SCHEDULE,
  window = null, onStep = () => {}, voiceLeading = DEFAULT_VOICE_LEADING } = {}) {
  if (!VOICE_CHOICES.includes(melodyVoice)) throw new Error(`unknown melody voice ${melodyVoice}: use one of ${VOICE_CHOICES.join(", ")}`);
  if (!notes.length) throw new Error("the melody has no notes");
  const t = Math.max(...notes.map((n) => n.end));
  const line = new Array(t).fill(null);
  for (const n of notes) for (let s = n.start; s < n.end; s++) line[s] = n.pitch;
  const mv = melodyVoice === "auto" ? chooseMelodyVoice(line) : VOICES.indexOf(melodyVoice);
  const shift = voiceShift(line, mv);
  const allowed = rangeMask(shift);
  for (let v = 0; v < NUM_VOICES; v++) {
    if (v !== mv && !allowed.some((row) => row[v])) {
      throw new Error(`transposed by ${shift} for the model, the ${VOICES[v]} has no room left in the model's pitch range`);
    }
  }
  const length = Math.max(t, window || 0);
  const pitch = Array.from({ length: NUM_VOICES }, () => new Array(length).fill(-1));
  const known = Array.from({ length: NUM_VOICES }, (_, v) => new Array(length).fill(v === mv));
  for (let s = 0; s < length; s++) {
    const p = line[Math.min(s, t - 1)]; // a fixed window longer than the tune holds the last step, trimmed after
    pitch[mv][s] = p === null ? -1 : p + shift - MIN_PITCH;
  }
  const out = await gibbs(runModel, pitch, known, seed, { schedule, allowed, window, onStep, voiceLeading });
  const chorale = out.map((row, v) => row.slice(0, t).map((p, s) => {
    if (v === mv) return line[s];
    return p < 0 ? null : p + MIN_PITCH - shift;
  }));
  return { chorale, melodyVoice: mv, shift, melody: line };
}
