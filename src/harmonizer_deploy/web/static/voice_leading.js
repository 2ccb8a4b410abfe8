// Voice leading for the page's Gibbs sampler: the exact mirror of harmonizer_deploy.music.voice_leading
// (same loops, same float64 operations in the same order, so both give the same pitches for the same inputs;
// tests/music/test_voice_leading.py runs this file under node against the Python functions).
//
// Why: blocked Gibbs redraws many cells of different voices at once, each from the network's own conditional,
// and nothing in the network forbids two voices from moving together into a perfect interval. With strict
// voice leading each candidate pitch of a redrawn cell (t, v) is weighted against the other voices' CURRENT
// notes: x PARALLEL_FACTOR per parallel perfect fifth/octave (with the sonority at t-1 or t+1), x
// CROSSING_FACTOR for crossing an adjacent voice. Tiny, not zero: a cell where every candidate breaks a rule
// keeps the network's preferences among the least bad ones.
//
// Layouts are numpy's row-major ones: pitches, cells, u and the returned indices are [T, 4] (index t*4 + v;
// pitches in MIDI, NaN = rest or not drawn yet); p is [T, 46, 4] (index (t*46 + k)*4 + v), the tempered,
// range-limited network weights; voiceWeights returns [T, 46] (index t*46 + k).

export const MIN_PITCH = 36;
export const NUM_PITCHES = 46;
export const NUM_VOICES = 4;
export const PARALLEL_FACTOR = 1e-6;
export const CROSSING_FACTOR = 1e-6;
export const VOICE_LEADING_MODES = ["strict", "off"];

/** Weight [T*46] of each candidate pitch for voice v at every step, given the current pitches [T*4]. */
export function voiceWeights(pitches, T, v) {
  const P = NUM_PITCHES, V = NUM_VOICES;
  const weights = new Float64Array(T * P).fill(1);
  for (let o = 0; o < V; o++) {
    if (o === v) continue;
    for (let t = 0; t < T; t++) {
      const q = pitches[t * V + o]; // NaN compares false everywhere below: a rest constrains nothing
      if (Number.isNaN(q)) continue; // (so every weight at t stays as it is)
      // this voice (a) and the other voice (b) at the sonority before (0) and after (1); scalars, not arrays:
      // this loop runs 8 x 3 x T x 46 times per Gibbs step
      const a0 = t > 0 ? pitches[(t - 1) * V + v] : NaN, b0 = t > 0 ? pitches[(t - 1) * V + o] : NaN;
      const a1 = t < T - 1 ? pitches[(t + 1) * V + v] : NaN, b1 = t < T - 1 ? pitches[(t + 1) * V + o] : NaN;
      const class0 = Math.abs(a0 - b0) % 12, class1 = Math.abs(a1 - b1) % 12;
      for (let k = 0; k < P; k++) {
        const cand = MIN_PITCH + k;
        let w = weights[t * P + k];
        if (o === v - 1 && cand > q) w = w * CROSSING_FACTOR;
        else if (o === v + 1 && cand < q) w = w * CROSSING_FACTOR;
        const now = Math.abs(cand - q) % 12;
        if (now === 0 || now === 7) { // a perfect interval: parallel if both move the same way from/to the same class
          if ((cand - a0) * (q - b0) > 0 && class0 === now) w = w * PARALLEL_FACTOR;
          if ((cand - a1) * (q - b1) > 0 && class1 === now) w = w * PARALLEL_FACTOR;
        }
        weights[t * P + k] = w;
      }
    }
  }
  return weights;
}

/** Index drawn from unnormalised weights row[0..45] by uniform u: CDF entries below u*total, at most 45. */
export function inverseCdf(row, u) {
  const P = NUM_PITCHES;
  const cdf = new Float64Array(P);
  let acc = 0;
  for (let k = 0; k < P; k++) { acc += row[k]; cdf[k] = acc; }
  const threshold = u * cdf[P - 1];
  let count = 0;
  for (let k = 0; k < P; k++) if (cdf[k] < threshold) count++;
  return Math.min(count, P - 1);
}

/**
 * Pitch indices [T*4] (0..45) for the cells [T*4] (truthy = redrawn) of one Gibbs step: network weights p
 * times voiceWeights, in 8 passes (time parity, then voice), each seeing the notes drawn before it. Cells not
 * redrawn get 0 (keep their notes).
 */
export function drawWithVoiceLeading(p, pitches, cells, u, T) {
  const P = NUM_PITCHES, V = NUM_VOICES;
  const current = Float64Array.from(pitches);
  const idx = new Int32Array(T * V);
  for (const r of [0, 1]) {
    for (let v = 0; v < V; v++) {
      let any = false;
      for (let t = r; t < T; t += 2) if (cells[t * V + v]) { any = true; break; }
      if (!any) continue;
      const weights = voiceWeights(current, T, v);
      const drawn = [];
      for (let t = r; t < T; t += 2) {
        if (!cells[t * V + v]) continue;
        const weighted = new Float64Array(P);
        for (let k = 0; k < P; k++) weighted[k] = p[(t * P + k) * V + v] * weights[t * P + k];
        drawn.push([t, inverseCdf(weighted, u[t * V + v])]);
      }
      for (const [t, k] of drawn) { idx[t * V + v] = k; current[t * V + v] = MIN_PITCH + k; }
    }
  }
  return idx;
}
