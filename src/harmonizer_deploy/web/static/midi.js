// MIDI in and out through @tonejs/midi (the pinned npm package, served as /vendor/Midi.js, which defines
// globalThis.Midi). Reading mirrors harmonizer_deploy.music.midi.read_midi_score (one melody line): notes snapped
// to 16ths with Python's round-half-even (a warning counts the notes moved and the largest shift), drum channel
// left out, one line only (overlapping notes are refused), pitches 12-127, whole empty bars before the first
// note dropped, at most 4096 steps; rests stay rests.

export const STEPS_PER_QUARTER = 4;
export const STEPS_PER_BAR = 16;
export const MAX_STEPS = 4096; // the CLI's limit (music/midi.py MAX_STEPS)
export const LOWEST_PITCH = 12;
export const DEFAULT_BPM = 90; // the CLI's tempo when a file has none
const DRUM_CHANNEL = 9;

function midiClass() {
  const lib = globalThis.Midi;
  if (typeof lib !== "function") throw new Error("the MIDI library (@tonejs/midi, /vendor/Midi.js) is not loaded");
  return lib;
}

/** Python's round() on a float: halves go to the even neighbour (Math.round sends them up). */
export function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/** Steps per bar of a time signature, as music/midi.py _steps_per_bar. */
export function stepsPerBar(numerator, denominator) {
  return Math.max(1, pyRound((numerator * 4 * STEPS_PER_QUARTER) / Math.max(1, denominator)));
}

/** A melody line checked and trimmed like the CLI's _check_line + _trim: returns notes sorted by start. */
export function checkLine(notes, source, bar = STEPS_PER_BAR) {
  if (!notes.length) throw new Error(`${source} contains no notes`);
  for (const n of notes) {
    if (n.pitch < LOWEST_PITCH || n.pitch > 127) {
      throw new Error(`${source} has pitch ${n.pitch} at step ${n.start}, outside MIDI ${LOWEST_PITCH}-127 (C0-G9)`);
    }
  }
  const sorted = notes.slice().sort((a, b) => a.start - b.start || a.pitch - b.pitch);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1], b = sorted[i];
    if (b.start < a.end) {
      throw new Error(`${source} is polyphonic: pitch ${a.pitch} at step ${a.start} overlaps pitch ${b.pitch} at step `
        + `${b.start} (16th notes) — pass a single melody line`);
    }
  }
  const shift = Math.floor(sorted[0].start / bar) * bar;
  const line = sorted.map((n) => ({ pitch: n.pitch, start: n.start - shift, end: n.end - shift }));
  const length = Math.max(...line.map((n) => n.end));
  if (length > MAX_STEPS) throw new Error(`${source} is too long: ${length} 16th-note steps (at most ${MAX_STEPS})`);
  return line;
}

/**
 * Read a MIDI file (ArrayBuffer) as the CLI reads a melody: {notes: [{pitch, start, end}] in 16th steps, bpm,
 * stepsPerBar, warnings: [text]}. Throws an Error naming the problem for a file the CLI would refuse.
 */
export function readMidiMelody(buffer, source = "the MIDI file") {
  const Midi = midiClass();
  let midi;
  try {
    midi = new Midi(buffer);
  } catch (e) {
    throw new Error(`${source} is not a readable MIDI file (${e.message || e})`);
  }
  const ppq = midi.header.ppq;
  if (!Number.isInteger(ppq) || ppq <= 0) throw new Error(`${source} has ${ppq} ticks per beat (not metrical)`);
  const notes = [];
  let drums = 0, moved = 0, largest = 0;
  for (const track of midi.tracks) {
    if (track.channel === DRUM_CHANNEL) { drums += track.notes.length; continue; }
    for (const n of track.notes) {
      const a = (n.ticks * STEPS_PER_QUARTER) / ppq, b = ((n.ticks + n.durationTicks) * STEPS_PER_QUARTER) / ppq;
      const off = Math.max(Math.abs(a - pyRound(a)), Math.abs(b - pyRound(b)));
      if (off > 1e-6) { moved += 1; largest = Math.max(largest, off); }
      const start = pyRound(a);
      notes.push({ pitch: n.midi, start, end: Math.max(start + 1, pyRound(b)) });
    }
  }
  if (!notes.length && drums) {
    throw new Error(`${source} has only percussion: its ${drums} notes are on MIDI channel 10, which holds drum `
      + "sounds, not pitches");
  }
  const tempo = midi.header.tempos.find((t) => t.bpm > 0 && Number.isFinite(t.bpm));
  const sig = midi.header.timeSignatures[0];
  const bar = sig ? stepsPerBar(sig.timeSignature[0], sig.timeSignature[1]) : STEPS_PER_BAR;
  const warnings = [];
  if (moved) {
    warnings.push(`${moved} note(s) were off the 16th-note grid and moved to it (largest shift `
      + `${largest.toFixed(2)} of a 16th, ${(largest / 4).toFixed(3)} beats); triplets and swing are approximated`);
  }
  return { notes: checkLine(notes, source, bar), bpm: tempo ? tempo.bpm : DEFAULT_BPM, stepsPerBar: bar, warnings };
}

/** The bundled melodies.json form ([pitch or null, 16ths]...) as notes; a null pitch is a rest. */
export function notesFromPairs(pairs) {
  const notes = [];
  let t = 0;
  for (const [pitch, length] of pairs) {
    if (pitch !== null) notes.push({ pitch, start: t, end: t + length });
    t += length;
  }
  return notes;
}

/** [T] MIDI pitch per 16th step (null = rest), T = the last note's end unless `length` is given (melody_pitches). */
export function melodyPitches(notes, length = null) {
  const line = new Array(length ?? Math.max(...notes.map((n) => n.end))).fill(null);
  for (const n of notes) for (let t = n.start; t < Math.min(n.end, line.length); t++) line[t] = n.pitch;
  return line;
}

/** One voice's steps as notes, merging repeated steps but restarting at each bar line (roll_to_notes). */
export function rollToNotes(row, bar = STEPS_PER_BAR) {
  const notes = [];
  let t = 0;
  while (t < row.length) {
    if (row[t] === null) { t += 1; continue; }
    let end = t + 1;
    while (end < row.length && row[end] === row[t] && end % bar) end += 1;
    notes.push({ pitch: row[t], start: t, end });
    t = end;
  }
  return notes;
}

/** A format-1 MIDI file, one track per voice (`voices[v]` = notes), written by @tonejs/midi. */
export function midiFromVoices(voices, names = ["Soprano", "Alto", "Tenor", "Bass"], bpm = DEFAULT_BPM) {
  const Midi = midiClass();
  const midi = new Midi();
  midi.header.setTempo(bpm);
  const perStep = midi.header.ppq / STEPS_PER_QUARTER;
  voices.forEach((notes, v) => {
    const track = midi.addTrack();
    track.name = names[v];
    track.channel = v;
    for (const n of notes) {
      track.addNote({ midi: n.pitch, ticks: n.start * perStep, durationTicks: (n.end - n.start) * perStep,
        velocity: 80 / 127 });
    }
  });
  return midi.toArray();
}
