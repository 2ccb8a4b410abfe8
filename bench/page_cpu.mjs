// CPU time of the page's harmonization, measured in Node instead of Chromium: the page's own modules
// (web/static/tvm_session.js + sampler.js) run a wasm artifact on Ode to Joy, and process.cpuUsage() splits each
// Gibbs step into the network and the rest (sampling, voice leading, copies). Why: on a shared machine the page's
// wall-clock seconds (bench/page_timing.py) depend on the other processes; one thread's CPU time far less.
// Node's V8 is older than Chromium's, so this estimates the page; it does not replace page_timing.py.
//
// Usage: TVMJS=<@mlc-ai/web-runtime>/lib/index.js node bench/page_cpu.mjs ARTIFACT_DIR [GIBBS_STEPS]
// (TVMJS: the path `python -c "from harmonizer_deploy.web.jsdeps import tvmjs_bundle; print(tvmjs_bundle())"`
// prints; ARTIFACT_DIR: a `compile --target wasm` output.)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";

const STATIC = new URL("../src/harmonizer_deploy/web/static/", import.meta.url);
const [artifact, stepsArg] = process.argv.slice(2);
if (!artifact || !process.env.TVMJS) {
  console.error("usage: TVMJS=<web-runtime>/lib/index.js node bench/page_cpu.mjs ARTIFACT_DIR [GIBBS_STEPS]");
  process.exit(2);
}
globalThis.tvmjs = createRequire(import.meta.url)(process.env.TVMJS);
// tvm_session.js fetches the artifact's files; here they come from the folder
globalThis.fetch = async (url) => {
  const bytes = readFileSync(new URL(url));
  return { ok: true, status: 200, json: async () => JSON.parse(bytes.toString()),
    arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) };
};
const { openModel } = await import(new URL("tvm_session.js", STATIC));
const { harmonizeNotes, SCHEDULE } = await import(new URL("sampler.js", STATIC));
const model = await openModel(`file://${resolve(artifact)}/`);
const ode = JSON.parse(readFileSync(new URL("melodies.json", STATIC))).melodies[0];
const notes = [];
let start = 0;
for (const [pitch, length] of ode.notes) {
  if (pitch !== null) notes.push({ pitch, start, end: start + length });
  start += length;
}
const steps = Number(stepsArg) || SCHEDULE.steps;
const ms = (usage) => (usage.user + usage.system) / 1000;
for (const run of [1, 2]) { // the first run includes V8's tiering up of the wasm code
  let network = 0;
  const runModel = async (x, shape) => {
    const before = process.cpuUsage();
    try { return await model.run(x, shape); } finally { network += ms(process.cpuUsage(before)); }
  };
  const before = process.cpuUsage(), wall = performance.now();
  await harmonizeNotes(runModel, notes, { seed: 0, schedule: { ...SCHEDULE, steps } });
  const total = ms(process.cpuUsage(before));
  console.log(JSON.stringify({ run, melody: ode.name, time_steps: start, gibbs_steps: steps,
    cpu_s: +(total / 1000).toFixed(3), network_cpu_s: +(network / 1000).toFixed(3),
    cpu_ms_per_step: +(total / steps).toFixed(1), network_cpu_ms_per_step: +(network / steps).toFixed(1),
    wall_s: +((performance.now() - wall) / 1000).toFixed(2) }));
}
