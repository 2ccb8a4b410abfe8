// Headless runner for verify and bench: fetch the job, run every input, POST outputs and timings back.
import { openModel } from "/static/tvm_session.js";
import { log, post, runJob } from "/static/job_page.js";

log("runner page started");

async function main() {
  const job = await (await fetch("/job.json")).json();
  const model = await openModel(job.artifact, log, Number.isInteger(job.threads) ? { threads: job.threads } : {});
  log(`loaded on ${model.device} in ${model.timings.load_ms.toFixed(0)} ms`);
  const runs = job.sets ? await runSets(job, model) : [];
  for (let i = 0; i < (job.sets ? 0 : job.inputs.length); i++) {
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
    timings: model.timings, runs, userAgent: navigator.userAgent, threads: model.threads,
    threadsReason: model.threadsReason, crossOriginIsolated: Boolean(globalThis.crossOriginIsolated) }),
  "application/json");
}

// Models of any signature: job.sets lists, per input set, which job inputs (in the model's input order) and their
// dtypes; every output of every set is POSTed as raw bytes, numbered in order across the sets.
async function runSets(job, model) {
  const runs = [];
  let posted = 0;
  for (let i = 0; i < job.sets.length; i++) {
    const tensors = [];
    for (const t of job.sets[i]) {
      const spec = job.inputs[t.input];
      tensors.push({ bytes: await (await fetch(spec.url)).arrayBuffer(), shape: spec.shape, dtype: t.dtype });
    }
    const samples = [];
    let outs;
    for (let r = 0; r < 1 + job.warmup + job.repeats; r++) {
      const t = performance.now();
      outs = await model.runFeeds(tensors);
      samples.push(performance.now() - t);
    }
    for (const o of outs) await post(`/output/${posted++}`, o.bytes.buffer, "application/octet-stream");
    runs.push({ shape: outs[0].shape, outputs: outs.map((o) => ({ shape: o.shape, dtype: o.dtype })),
      first_ms: samples[0], samples_ms: samples.slice(1 + job.warmup) });
    log(`input set ${i}: ${tensors.length} inputs, ${outs.length} outputs, first ${samples[0].toFixed(1)} ms`);
  }
  return runs;
}

runJob(main);
