// Headless runner for verify and bench: fetch the job, run every input, POST outputs and timings back.
import { openModel } from "/static/tvm_session.js";

const logEl = document.getElementById("log");
const lines = [];
function log(msg) {
  lines.push(msg);
  logEl.textContent = lines.slice(-40).join("\n");
  fetch("/log", { method: "POST", headers: { "Content-Type": "text/plain" }, body: String(msg) }).catch(() => {});
}
window.addEventListener("error", (e) => log(`page error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => log(`unhandled: ${e.reason && e.reason.stack || e.reason}`));
log("runner page started");

async function post(url, body, type) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": type }, body });
  if (!r.ok) throw new Error(`POST ${url}: HTTP ${r.status}`);
}

async function main() {
  const job = await (await fetch("/job.json")).json();
  const model = await openModel(job.artifact, log);
  log(`loaded on ${model.device} in ${model.timings.load_ms.toFixed(0)} ms`);
  const runs = [];
  for (let i = 0; i < job.inputs.length; i++) {
    const spec = job.inputs[i];
    const x = new Float32Array(await (await fetch(spec.url)).arrayBuffer());
    const samples = [];
    let out;
    for (let r = 0; r < 1 + job.warmup + job.repeats; r++) {
      const t = performance.now();
      out = await model.run(x, spec.shape);
      samples.push(performance.now() - t);
      if (r === 0) log(`input ${i}: first run ${samples[0].toFixed(0)} ms`);
    }
    await post(`/output/${i}`, out.data.buffer, "application/octet-stream");
    runs.push({ shape: out.shape, first_ms: samples[0], samples_ms: samples.slice(1 + job.warmup) });
    log(`input ${i}: first ${samples[0].toFixed(1)} ms`);
  }
  await post("/done", JSON.stringify({ ok: true, device: model.device, adapter: model.adapterInfo,
    timings: model.timings, runs, userAgent: navigator.userAgent }), "application/json");
}

main().catch((e) => {
  log(String(e && e.stack || e));
  post("/done", JSON.stringify({ ok: false, error: String(e && e.message || e), log: lines.slice(-20) }),
    "application/json").catch(() => {});
});
