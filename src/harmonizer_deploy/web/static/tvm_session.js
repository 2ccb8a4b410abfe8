// Load a harmonizer-deploy web artifact (model.wasm + params + manifest) with TVM's JS runtime and run it.
// Shared by the verify/bench runner page and the harmonizer page. Needs the tvmjs bundle loaded first.

/** Ask for a WebGPU device granting the limits/features the artifact's kernels need (from manifest.webgpu). */
export async function requestWebGPUDevice(requirements, log = () => {}) {
  if (typeof navigator === "undefined" || !navigator.gpu) throw new Error("this browser has no WebGPU (navigator.gpu missing)");
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("no WebGPU adapter available");
  const requiredLimits = {};
  const needed = (requirements && requirements.limits_above_default) || {};
  for (const [name, value] of Object.entries(needed)) {
    if (adapter.limits[name] < value) throw new Error(`WebGPU device limit ${name}=${adapter.limits[name]} < ${value} needed`);
    requiredLimits[name] = value;
  }
  // room for large activations: as much as the adapter allows, capped at 1 GiB
  for (const name of ["maxStorageBufferBindingSize", "maxBufferSize"]) {
    requiredLimits[name] = Math.min(adapter.limits[name], 1 << 30);
  }
  const requiredFeatures = (requirements && requirements.features) || [];
  for (const f of requiredFeatures) {
    if (!adapter.features.has(f)) throw new Error(`WebGPU feature ${f} is not supported by this adapter`);
  }
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  // surface validation/shader errors (otherwise a failed kernel just never completes)
  device.addEventListener("uncapturederror", (e) => log(`WebGPU error: ${e.error && e.error.message}`));
  device.lost.then((info) => log(`WebGPU device lost: ${info.message}`));
  let info = {};
  try { info = adapter.info || (await adapter.requestAdapterInfo()); } catch (e) { info = {}; }
  return { device, adapterInfo: { vendor: info.vendor || "", architecture: info.architecture || "", description: info.description || "" } };
}

/** Whether the browser's WebGPU adapter is a software renderer (e.g. SwiftShader in headless Chromium without a
 *  GPU): there the harmonizer runs far faster as wasm on the CPU. */
export async function webgpuIsSoftware() {
  if (typeof navigator === "undefined" || !navigator.gpu) return false;
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return false;
  const info = adapter.info || {};
  return Boolean(adapter.isFallbackAdapter || info.isFallbackAdapter || /swiftshader/i.test(`${info.architecture} ${info.description}`));
}

/** One weight tensor as float32: stored as float32, float16, or uint8 with a per-tensor scale and min. */
export function decodeParam(blob, p) {
  const count = p.shape.reduce((a, b) => a * b, 1);
  if (p.dtype === "float32") return new Float32Array(blob, p.offset, count);
  const out = new Float32Array(count);
  if (p.dtype === "uint8") {
    const q = new Uint8Array(blob, p.offset, count);
    for (let i = 0; i < count; i++) out[i] = q[i] * p.scale + p.min;
    return out;
  }
  if (p.dtype === "float16") {
    const h = new Uint16Array(blob, p.offset, count);
    for (let i = 0; i < count; i++) out[i] = halfToFloat(h[i]);
    return out;
  }
  throw new Error(`unknown weight dtype ${p.dtype}`);
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

async function fetchOk(url, kind) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: HTTP ${r.status}`);
  return kind === "json" ? r.json() : r.arrayBuffer();
}

/** Why a threaded (`wasm-mt`) artifact must run on the page's thread alone here, or null when workers can join:
 *  a worker gets the shared memory only by postMessage, which needs a cross-origin isolated page. */
export function threadsUnavailableReason() {
  if (typeof SharedArrayBuffer === "undefined" || !globalThis.crossOriginIsolated) {
    return "not cross-origin isolated: SharedArrayBuffer unavailable";
  }
  if (typeof Worker === "undefined") return "this browser has no Web Workers";
  return null;
}

/** Imports for a threaded artifact on the page's thread: tvmjs's own (WASI polyfill + its env functions), the
 *  shared memory, and a stub that names any import neither provides. The polyfill reads `exports.memory`,
 *  which an imported-memory module lacks, so its start hook gets the memory added. */
function threadedImports(tvmjs, module, memory) {
  const wasi = tvmjs.createPolyfillWASI();
  const imports = { ...wasi.imports, env: { ...wasi.imports.env, memory } };
  const provided = new Set(["TVMFFIWasmSafeCall", "TVMFFIWasmFunctionDeleter", "__console_log", "__cxa_thread_atexit",
    "emscripten_notify_memory_growth"]);  // tvmjs's Environment adds these
  // emscripten's JS glue for threads, absent here by design: its main-thread setup (handing libc the page
  // thread's pthread struct, through our hd_main_thread_init) and its check that a thread may block
  let exportsOfPage = null;  // set by the start hook, before _initialize runs the constructors that call back
  const noops = {
    __emscripten_init_main_thread_js: (thread) => exportsOfPage.hd_main_thread_init(thread),
    emscripten_check_blocking_allowed: () => {},
  };
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== "function" || provided.has(imp.name)) continue;
    imports[imp.module] = imports[imp.module] || {};
    if (imports[imp.module][imp.name] === undefined) {
      imports[imp.module][imp.name] = noops[imp.name] || (() => { throw new Error(`wasm import ${imp.module}.${imp.name} is not provided`); });
    }
  }
  return { imports, start: (inst) => {
    exportsOfPage = inst.exports;
    wasi.start({ exports: { ...inst.exports, memory } });
  } };
}

/** Start `wanted - 1` workers on the artifact's module and memory; resolves when they joined (or after a
 *  timeout) to {threads: page thread + workers that joined, reason: why fewer than wanted, or null}. */
async function startWorkers(tvm, module, memory, wanted, log) {
  if (wanted <= 1) return { threads: 1, reason: wanted < 1 ? "threads < 1 requested" : null };
  const unavailable = threadsUnavailableReason();
  if (unavailable) return { threads: 1, reason: unavailable };
  const errors = [];
  for (let id = 0; id < wanted - 1; id++) {
    const stackTop = tvm.exports.hd_worker_stack(id);
    if (!stackTop) { errors.push(`no memory for worker ${id}'s stack`); break; }
    const worker = new Worker("/static/hd_worker.js");
    worker.onmessage = (e) => { if (e.data.error) { errors.push(e.data.error); log(`worker ${id}: ${e.data.error}`); } };
    worker.onerror = (e) => { errors.push(e.message); log(`worker ${id} failed: ${e.message}`); };
    worker.postMessage({ module, memory, id, stackTop, pageTimeOrigin: performance.timeOrigin });
  }
  const t0 = performance.now();
  while (tvm.exports.hd_num_threads() < wanted && !errors.length && performance.now() - t0 < 20000) {
    await new Promise((r) => setTimeout(r, 5));
  }
  const threads = tvm.exports.hd_num_threads();
  const reason = threads < wanted ? (errors[0] || `only ${threads - 1} of ${wanted - 1} workers joined in 20 s`) : null;
  return { threads, reason };
}

/** Open the artifact under `baseUrl` (ending in "/"). Returns {run, manifest, device, timings, dispose}.
 *  `options.threads`: for a threaded (`wasm-mt`) artifact, the threads to run on (default: its manifest's);
 *  the result's `threads` is how many actually run (1 + workers that joined) and `threadsReason` why fewer. */
export async function openModel(baseUrl, log = () => {}, options = {}) {
  const tvmjs = globalThis.tvmjs;
  if (!tvmjs) throw new Error("tvmjs bundle not loaded");
  const timings = {};
  const t0 = performance.now();
  const manifest = await fetchOk(baseUrl + "manifest.json", "json");
  const [wasm, index, blob] = await Promise.all([
    fetchOk(baseUrl + manifest.library), fetchOk(baseUrl + manifest.web_params.index, "json"),
    fetchOk(baseUrl + manifest.web_params.data)]);
  timings.fetch_ms = performance.now() - t0;
  log(`fetched ${manifest.library} (${wasm.byteLength} bytes) and ${index.params.length} parameters`);
  const t1 = performance.now();
  const threaded = manifest.threads || null;
  let tvm, threadInfo = { threads: 1, reason: null };
  if (threaded) {
    // shared memory, imported by the page's instance and by every worker's instance of the same module
    const module = await WebAssembly.compile(wasm);
    const memory = new WebAssembly.Memory({ initial: threaded.memory_initial_pages,
      maximum: threaded.memory_maximum_pages, shared: true });
    tvm = await tvmjs.instantiate(wasm, threadedImports(tvmjs, module, memory), (msg) => log(String(msg)));
    const wanted = Number.isInteger(options.threads) ? options.threads : threaded.default;
    threadInfo = await startWorkers(tvm, module, memory, wanted, log);
    log(`threads: ${threadInfo.threads}${threadInfo.reason ? ` (${threadInfo.reason})` : ""}`);
  } else {
    tvm = await tvmjs.instantiate(wasm, tvmjs.createPolyfillWASI(), (msg) => log(String(msg)));
  }
  let dev, adapterInfo = null;
  log("wasm instantiated");
  if (manifest.device === "webgpu") {
    const gpu = await requestWebGPUDevice(manifest.webgpu, log);
    adapterInfo = gpu.adapterInfo;
    tvm.initWebGPU(gpu.device);
    dev = tvm.webgpu();
  } else {
    dev = tvm.cpu();
  }
  timings.instantiate_ms = performance.now() - t1;
  log(`device ready: ${manifest.device}`);
  tvm.beginScope();
  const vm = tvm.detachFromCurrentScope(tvm.createVirtualMachine(dev));
  const t2 = performance.now();
  // compile every WGSL pipeline up front (measured apart from the first run)
  if (manifest.device === "webgpu") await tvm.asyncLoadWebGPUPipelines(vm.getInternalModule());
  timings.shader_compile_ms = performance.now() - t2;
  log(`pipelines ready in ${timings.shader_compile_ms.toFixed(0)} ms`);
  const main = tvm.detachFromCurrentScope(vm.getFunction("main"));
  let params = index.params.map((p) => {
    if (p.raw) {  // an integer parameter (index bounds, folded shapes): its own dtype, bytes as stored
      const t = tvm.detachFromCurrentScope(tvm.empty(p.shape, p.dtype, dev));
      return t.copyFromRawBytes(new Uint8Array(blob, p.offset, p.bytes));
    }
    const t = tvm.detachFromCurrentScope(tvm.empty(p.shape, "float32", dev));
    t.copyFrom(decodeParam(blob, p));
    return t;
  });
  timings.download_bytes = wasm.byteLength + blob.byteLength;
  timings.code_bytes = wasm.byteLength;
  timings.weight_bytes = blob.byteLength;
  timings.weights_encoding = index.encoding || "float32";
  if (manifest.param_transform) {
    // the lifted weight transforms (NHWC/HWIO re-layout, Winograd): once here instead of on every call
    const t3 = performance.now();
    const transform = vm.getFunction(manifest.param_transform);
    const lifted = transform(tvm.makeTVMArray(params));
    const size = lifted.size();
    const transformed = [];
    for (let i = 0; i < size; i++) transformed.push(tvm.detachFromCurrentScope(lifted.get(i)));
    params.forEach((p) => p.dispose());
    params = transformed;
    timings.param_transform_ms = performance.now() - t3;
    log(`weights transformed once in ${timings.param_transform_ms.toFixed(0)} ms`);
  }
  tvm.endScope();
  await dev.sync();
  timings.load_ms = performance.now() - t0;

  /** Run on one input (Float32Array, shape [B,T,46,8]); resolves to {data: Float32Array, shape}. */
  async function run(data, shape) {
    tvm.beginScope();
    try {
      const x = tvm.empty(shape, "float32", dev);
      x.copyFrom(data);
      let out = main(x, ...params);
      if (out && out.shape === undefined && typeof out.get === "function") out = out.get(0);
      const host = tvm.empty(out.shape, "float32", tvm.cpu());
      host.copyFrom(out);
      await dev.sync();
      return { data: new Float32Array(host.toArray()), shape: Array.from(out.shape) };
    } finally {
      tvm.endScope();
    }
  }
  /** Any signature: [{bytes: ArrayBuffer, shape, dtype}] in the manifest's input order; resolves to every output
   *  as {bytes: Uint8Array, shape, dtype} (verify's path for models with several inputs or outputs). */
  async function runFeeds(tensors) {
    tvm.beginScope();
    try {
      const args = tensors.map((t) => tvm.empty(t.shape, t.dtype, dev).copyFromRawBytes(new Uint8Array(t.bytes)));
      const out = main(...args, ...params);
      const outs = [];
      if (out && out.shape === undefined && typeof out.get === "function") {
        for (let i = 0; i < out.size(); i++) outs.push(out.get(i));
      } else {
        outs.push(out);
      }
      const hosts = outs.map((o) => tvm.empty(o.shape, o.dtype, tvm.cpu()).copyFrom(o));
      await dev.sync();
      return hosts.map((h) => ({ bytes: h.toRawBytes().slice(), shape: Array.from(h.shape), dtype: h.dtype }));
    } finally {
      tvm.endScope();
    }
  }
  return { run, runFeeds, manifest, device: manifest.device, adapterInfo, timings, threads: threadInfo.threads,
    threadsReason: threadInfo.reason, dispose: () => tvm.dispose() };
}
