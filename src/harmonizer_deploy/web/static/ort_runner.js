// Headless runner for the bench's onnxruntime-web rows: the same model.onnx and inputs as the TVM rows, in the
// same Chromium, with the execution provider and thread count the job asks for. Posts outputs and timings back.
import { log, post, runJob } from "/static/job_page.js";

async function main() {
  const job = await (await fetch("/job.json")).json();
  const ort = globalThis.ort;
  if (!ort) throw new Error("onnxruntime-web bundle not loaded");
  ort.env.wasm.wasmPaths = "/artifacts/ort-web/";
  ort.env.wasm.numThreads = job.threads;  // 1: single-threaded; >1 needs crossOriginIsolated
  ort.env.logLevel = "error";
  const t0 = performance.now();
  let adapter = null;
  if (job.ep === "webgpu") {
    const a = await navigator.gpu?.requestAdapter();
    if (!a) throw new Error("no WebGPU adapter in this browser");
    adapter = a.info ? { vendor: a.info.vendor, architecture: a.info.architecture, description: a.info.description }
      : null;
  }
  const session = await ort.InferenceSession.create(job.artifact, { executionProviders: [job.ep],
    graphOptimizationLevel: "all" });
  const loadMs = performance.now() - t0;
  log(`onnxruntime-web ${ort.env.versions?.web || ""} ${job.ep} loaded in ${loadMs.toFixed(0)} ms`);
  const runs = [];
  for (let i = 0; i < job.inputs.length; i++) {
    const spec = job.inputs[i];
    const x = new Float32Array(await (await fetch(spec.url)).arrayBuffer());
    const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", x, spec.shape) };
    const samples = [];
    let out;
    for (let r = 0; r < 1 + job.warmup + job.repeats; r++) {
      const t = performance.now();
      const result = await session.run(feeds);
      out = result[session.outputNames[0]];
      const data = out.location === "gpu-buffer" ? await out.getData() : out.data;
      samples.push(performance.now() - t);
      if (r === 1 + job.warmup + job.repeats - 1) out = { data, dims: out.dims };
    }
    await post(`/output/${i}`, new Float32Array(out.data).buffer, "application/octet-stream");
    runs.push({ shape: Array.from(out.dims), first_ms: samples[0], samples_ms: samples.slice(1 + job.warmup) });
  }
  await post("/done", JSON.stringify({ ok: true, device: job.ep, adapter, timings: { load_ms: loadMs }, runs,
    userAgent: navigator.userAgent, crossOriginIsolated: globalThis.crossOriginIsolated === true,
    threads: ort.env.wasm.numThreads, version: ort.env.versions?.web || null }), "application/json");
}

runJob(main);
