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

function workerImports(module, memory) {
  const imports = { env: { memory } };
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== "function") continue;
    imports[imp.module] = imports[imp.module] || {};
    imports[imp.module][imp.name] = WORKER_NOOPS[imp.name] || (() => {
      throw new Error(`${imp.module}.${imp.name} is not available in a worker thread`);
    });
  }
  return imports;
}

self.onmessage = async (event) => {
  const { module, memory, id, stackTop } = event.data;
  try {
    const instance = await WebAssembly.instantiate(module, workerImports(module, memory));
    self.postMessage({ id, joining: true });
    instance.exports.stackRestore(stackTop);
    instance.exports.hd_worker_main(id);
    self.postMessage({ id, error: "hd_worker_main returned (bad worker id or no stack)" });
  } catch (err) {
    self.postMessage({ id, error: String((err && err.message) || err) });
  }
};
