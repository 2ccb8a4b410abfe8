// Headless runner for verify and bench: fetch the job, run every input, POST outputs and timings back.
import { openModel } from "/static/tvm_session.js";
import { log, post, runJob } from "/static/job_page.js";

log("runner page started");

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

runJob(main);
