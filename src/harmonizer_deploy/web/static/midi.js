// Standard MIDI files: read a melody (highest note per 16th step) and write the four voices (format 1).

const TICKS_PER_QUARTER = 480;

function readVarLen(bytes, pos) {
  let value = 0, b;
  do { b = bytes[pos++]; value = (value << 7) | (b & 0x7f); } while (b & 0x80);
  return [value, pos];
}

/** Parse a MIDI file into a melody: one MIDI pitch per 16th note, moved by octaves into 60-81. */
export function melodyFromMidi(buffer, maxSteps = 128) {
  const bytes = new Uint8Array(buffer);
  const text = (p, n) => String.fromCharCode(...bytes.slice(p, p + n));
  const u32 = (p) => (bytes[p] << 24 | bytes[p + 1] << 16 | bytes[p + 2] << 8 | bytes[p + 3]) >>> 0;
  if (text(0, 4) !== "MThd") throw new Error("not a MIDI file (no MThd header)");
  const division = bytes[12] << 8 | bytes[13];
  if (division & 0x8000) throw new Error("SMPTE-timed MIDI files are not supported");
  const notes = []; // [startTick, endTick, pitch]
  let pos = 8 + u32(4);
  while (pos + 8 <= bytes.length) {
    const len = u32(pos + 4);
    if (text(pos, 4) === "MTrk") {
      let p = pos + 8, tick = 0, status = 0;
      const open = new Map();
      const end = pos + 8 + len;
      while (p < end) {
        let delta; [delta, p] = readVarLen(bytes, p); tick += delta;
        let s = bytes[p];
        if (s & 0x80) { status = s; p++; } else { s = status; }
        const type = s & 0xf0;
        if (s === 0xff) { const metaLen = readVarLen(bytes, p + 1); p = metaLen[1] + metaLen[0]; }
        else if (s === 0xf0 || s === 0xf7) { const sx = readVarLen(bytes, p); p = sx[1] + sx[0]; }
        else if (type === 0x90 || type === 0x80) {
          const key = bytes[p], vel = bytes[p + 1]; p += 2;
          if (type === 0x90 && vel > 0) open.set(key, tick);
          else if (open.has(key)) { notes.push([open.get(key), tick, key]); open.delete(key); }
        } else if (type === 0xc0 || type === 0xd0) p += 1;
        else p += 2;
      }
    }
    pos += 8 + len;
  }
  if (!notes.length) throw new Error("the MIDI file has no notes");
  const step = division / 4;
  const last = Math.max(...notes.map((n) => n[1]));
  const steps = Math.min(maxSteps, Math.max(1, Math.round(last / step)));
  const melody = new Array(steps).fill(null);
  for (let s = 0; s < steps; s++) {
    const tick = s * step + step / 2;
    const sounding = notes.filter((n) => n[0] <= tick && tick < n[1]).map((n) => n[2]);
    if (sounding.length) melody[s] = Math.max(...sounding);
  }
  for (let s = 0; s < steps; s++) if (melody[s] === null) melody[s] = s > 0 ? melody[s - 1] : null;
  const first = melody.find((m) => m !== null);
  if (first === undefined) throw new Error("the MIDI file has no notes");
  for (let s = 0; s < steps; s++) {
    if (melody[s] === null) melody[s] = first;
    while (melody[s] < 60) melody[s] += 12;
    while (melody[s] > 81) melody[s] -= 12;
  }
  return melody;
}

/** Consecutive equal pitches of one voice merged into notes: [startStep, lengthInSteps, pitch]. */
export function voiceNotes(row) {
  const notes = [];
  for (let t = 0; t < row.length; t++) {
    if (t > 0 && row[t] === row[t - 1]) notes[notes.length - 1][1] += 1;
    else notes.push([t, 1, row[t]]);
  }
  return notes;
}

function varLen(value) {
  const out = [value & 0x7f];
  while ((value >>= 7)) out.unshift((value & 0x7f) | 0x80);
  return out;
}

/** Format-1 MIDI file, one track per voice (SATB), 16th note = 120 ticks. */
export function midiFromVoices(voices, names = ["Soprano", "Alto", "Tenor", "Bass"]) {
  const step = TICKS_PER_QUARTER / 4;
  const chunk = (id, data) => [...id].map((c) => c.charCodeAt(0))
    .concat([data.length >>> 24, (data.length >>> 16) & 255, (data.length >>> 8) & 255, data.length & 255], data);
  let bytes = chunk("MThd", [0, 1, 0, voices.length, TICKS_PER_QUARTER >> 8, TICKS_PER_QUARTER & 255]);
  voices.forEach((row, v) => {
    const name = [...names[v]].map((c) => c.charCodeAt(0));
    const ev = [0, 0xff, 0x03, name.length, ...name, 0, 0xc0 | v, 52];
    let now = 0;
    for (const [start, len, pitch] of voiceNotes(row)) {
      ev.push(...varLen(start * step - now), 0x90 | v, pitch, 80);
      ev.push(...varLen(len * step), 0x80 | v, pitch, 0);
      now = (start + len) * step;
    }
    ev.push(0, 0xff, 0x2f, 0);
    bytes = bytes.concat(chunk("MTrk", ev));
  });
  return new Uint8Array(bytes);
}
