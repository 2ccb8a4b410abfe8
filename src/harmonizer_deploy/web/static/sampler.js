// Coconet's harmonization loop: block Gibbs sampling with Yao et al.'s annealed masking schedule.
// Encoding as in harmonizer_deploy.music.encoding: 46 pitches (MIDI 36-81), 4 voices SATB, 16th-note steps;
// model input [B,T,46,8] = pianoroll with masked cells zeroed ++ mask (1 = to predict); output [B,T,46,4].

export const MIN_PITCH = 36;
export const NUM_PITCHES = 46;
export const NUM_VOICES = 4;
export const VOICES = ["soprano", "alto", "tenor", "bass"];
// Same SATB ranges as encoding.VOICE_RANGES: sampling is restricted to them so every voice stays singable.
export const VOICE_RANGES = [[60, 81], [53, 74], [48, 69], [36, 64]];
export const SCHEDULE = { steps: 96, pmin: 0.1, pmax: 0.9, alpha: 0.7, temperature: 0.99 };

/** Yao annealing, the same formula as the Python sampler (sampling.yao_probability on main):
 *  max(pmin, (pmax - (pmax - pmin) * i / n) / alpha); values above 1 mask every free cell. */
export function maskProbability(i, n, s = SCHEDULE) {
  return Math.max(s.pmin, (s.pmax - ((s.pmax - s.pmin) * i) / n) / s.alpha);
}

/** A small seeded PRNG (mulberry32) so a harmonization can be reproduced. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Harmonize `melody` (array of MIDI pitches per 16th step; null = let the model choose).
 * `runModel(Float32Array, shape)` resolves to {data, shape} with probs [1,T,46,4].
 * Returns voices[v][t] = MIDI pitch.
 */
export async function harmonize(runModel, melody, { seed = 1, onStep = () => {}, schedule = SCHEDULE } = {}) {
  const T = melody.length, P = NUM_PITCHES, V = NUM_VOICES;
  const random = rng(seed);
  const pitch = Array.from({ length: V }, () => new Array(T).fill(-1)); // pitch index per voice/step
  const free = Array.from({ length: V }, (_, v) => melody.map((m) => v !== 0 || m === null));
  for (let t = 0; t < T; t++) if (melody[t] !== null) pitch[0][t] = melody[t] - MIN_PITCH;
  const input = new Float32Array(T * P * 2 * V);
  for (let i = 0; i < schedule.steps; i++) {
    const pm = maskProbability(i, schedule.steps, schedule);
    // cells with no pitch yet (the first step) are always sampled, so every note of the result is a real pitch
    const mask = free.map((row, v) => row.map((f, t) => f && (pitch[v][t] < 0 || random() < pm)));
    if (!mask.some((row) => row.some(Boolean))) { onStep(i + 1, schedule.steps); continue; }
    input.fill(0);
    for (let t = 0; t < T; t++) {
      for (let v = 0; v < V; v++) {
        const base = t * P * 2 * V;
        if (mask[v][t]) {
          for (let p = 0; p < P; p++) input[base + p * 2 * V + V + v] = 1;
        } else if (pitch[v][t] >= 0) {
          input[base + pitch[v][t] * 2 * V + v] = 1;
        }
      }
    }
    const out = await runModel(input, [1, T, P, 2 * V]);
    const probs = out.data;
    for (let v = 0; v < V; v++) {
      const [lo, hi] = VOICE_RANGES[v];
      for (let t = 0; t < T; t++) {
        if (!mask[v][t]) continue;
        pitch[v][t] = samplePitch(probs, t, v, lo - MIN_PITCH, hi - MIN_PITCH, schedule.temperature, random);
      }
    }
    onStep(i + 1, schedule.steps);
  }
  return pitch.map((row) => row.map((p) => p + MIN_PITCH));
}

function samplePitch(probs, t, v, lo, hi, temperature, random) {
  const P = NUM_PITCHES, V = NUM_VOICES;
  const logits = [];
  let max = -Infinity;
  for (let p = lo; p <= hi; p++) {
    const l = Math.log(Math.max(probs[(t * P + p) * V + v], 1e-30)) / temperature;
    logits.push(l);
    if (l > max) max = l;
  }
  let total = 0;
  const w = logits.map((l) => { const e = Math.exp(l - max); total += e; return e; });
  let r = random() * total;
  for (let k = 0; k < w.length; k++) { r -= w[k]; if (r <= 0) return lo + k; }
  return hi;
}
