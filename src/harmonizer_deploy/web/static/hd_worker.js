// One thread of a `wasm-mt` artifact's pool: instantiates the page's compiled module on the page's shared memory,
// moves its stack pointer to the stack the page allocated for it, and enters hd_worker_main, which waits for
// parallel jobs (memory.atomic.wait32 is allowed in a worker) and never returns.
"use strict";

// Imports a worker may reach while running TVM's parallel tasks; every other import throws with its name.
const WORKER_NOOPS = {
  __cxa_thread_atexit: () => 0, // thread_local destructors: a worker lives as long as the page
  emscripten_notify_memory_growth: () => {}, // the page's views notice a grown buffer themselves
  emscripten_check_blocking_allowed: () => {}, // a worker may block
};

// WASI's clock: libc's futex and timed waits read it in workers too (a worker that met the throwing stub died
// holding a task, and the page spun on it). The same clocks as the page's (tvmjs's WASI polyfill): realtime is
// Date.now(), the others the page's performance.now(), so a deadline one thread computes holds in the other.
function clockTimeGet(memory, pageTimeOrigin) {
  return (clockId, precision, timePtr) => {
    const ms = clockId === 0 ? Date.now() : performance.timeOrigin + performance.now() - pageTimeOrigin;
    new DataView(memory.buffer).setBigUint64(timePtr, BigInt(Math.round(ms * 1e6)), true);
    return 0;
  };
}

function workerImports(module, memory, pageTimeOrigin) {
  const imports = { env: { memory },
    wasi_snapshot_preview1: { clock_time_get: clockTimeGet(memory, pageTimeOrigin) } };
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== "function") continue;
    imports[imp.module] = imports[imp.module] || {};
    if (imports[imp.module][imp.name]) continue;
    imports[imp.module][imp.name] = WORKER_NOOPS[imp.name] || (() => {
      throw new Error(`${imp.module}.${imp.name} is not available in a worker thread`);
    });
  }
  return imports;
}

self.onmessage = async (event) => {
  const { module, memory, id, stackTop, pageTimeOrigin } = event.data;
  try {
    const instance = await WebAssembly.instantiate(module, workerImports(module, memory, pageTimeOrigin));
    self.postMessage({ id, joining: true });
    instance.exports.stackRestore(stackTop);
    instance.exports.hd_worker_main(id);
    self.postMessage({ id, error: "hd_worker_main returned (bad worker id or no stack)" });
  } catch (err) {
    self.postMessage({ id, error: String((err && err.message) || err) });
  }
};
