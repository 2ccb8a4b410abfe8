// The JS mirror of harmonizer_deploy.music.random: uniform(seed, step, time, voice, stream) in [0, 1), a
// counter-based hash computed with 32-bit integer arithmetic only (Math.imul, ^, >>>), so it gives exactly the
// numbers numpy gives on uint32 arrays. The page's sampler draws from it so the same melody, seed and backend
// give the same chorale here and in `harmonizer-deploy harmonize`.

const START = 0x2545f491;
const M1 = 0x7feb352d;
const M2 = 0x846ca68b;
export const STREAM_MASK = 0; // whether a cell is resampled at a step
export const STREAM_DRAW = 1; // the inverse-CDF draw of the cell's pitch

/** Wellons' lowbias32 finalizer on a uint32. */
export function mix32(x) {
  x = x >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, M1) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, M2) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** The seed (a safe integer, negative allowed) as two uint32 words, two's complement mod 2**64 as in Python. */
export function seedWords(seed) {
  if (!Number.isSafeInteger(seed)) throw new Error(`seed ${seed} is not an integer in ±2^53`);
  const TWO32 = 4294967296;
  const lo = ((seed % TWO32) + TWO32) % TWO32;
  const hi = ((Math.floor(seed / TWO32) % TWO32) + TWO32) % TWO32;
  return [lo >>> 0, hi >>> 0];
}

/** The uint32 hash of (seed, step, time, voice, stream). */
export function hash32(seed, step, time, voice, stream) {
  const [lo, hi] = seedWords(seed);
  let h = START;
  for (const w of [lo, hi, step, time, voice, stream]) h = mix32(h ^ (w >>> 0));
  return h;
}

/** Uniform in [0, 1): hash32 / 2**32 (exact in float64). */
export function uniform(seed, step, time, voice, stream) {
  return hash32(seed, step, time, voice, stream) / 4294967296;
}

/** A function (time, voice, stream) → uniform for one step, the seed words hashed once (the sampler's hot path). */
export function stepUniforms(seed, step) {
  const [lo, hi] = seedWords(seed);
  const base = mix32(mix32(mix32(START ^ lo) ^ hi) ^ (step >>> 0));
  return (time, voice, stream) => mix32(mix32(mix32(base ^ (time >>> 0)) ^ (voice >>> 0)) ^ (stream >>> 0)) / 4294967296;
}
