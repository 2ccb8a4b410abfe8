/*
 * harmonizer-deploy's thread pool for TVM's web runtime (the `wasm-mt` target).
 *
 * TVM's wasm runtime runs every parallel loop on the calling thread (its TVMBackendParallelLaunch calls task 0
 * with num_task = 1). The threaded build renames that serial version away and links this file instead: the page's
 * thread publishes a job {lambda, closure, task count} in shared memory, wakes the workers with
 * memory.atomic.notify and runs tasks itself; each Web Worker instantiates the same module on the same shared
 * memory and waits in hd_worker_main with memory.atomic.wait32 (allowed in workers). The page's thread never waits
 * (the browser forbids it there): it spins until every task of the job is done.
 *
 * Tasks are claimed from one 64-bit word holding {job generation, next task id}: a worker that read the fields
 * of an old job cannot claim a task of a newer one, because its compare-and-swap expects the old generation.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;  /* layout of tvm/runtime/c_backend_api.h */

typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

#define HD_MAX_WORKERS 64
#define HD_STACK_BYTES (1 << 20) /* per worker; TVM's kernels keep their tiles in registers or the workspace */
#define HD_SPIN_BEFORE_WAIT 20000
#define HD_TASKS_PER_THREAD 4
#define HD_STALL_MS 15000.0 /* a job with no task finished for this long: a worker died or hangs */

#define HD_THREAD_BYTES 512   /* a copy of the page thread's `struct pthread` (musl's, ~150 bytes) and beyond */

extern void __wasm_init_tls(void* block);
extern void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message);  /* TVM's FFI (the runtime) */
/* emscripten's libc: sets this instance's thread pointer and thread state (emscripten's JS glue normally calls
 * it; here the page's JS and hd_worker_main do) */
extern void _emscripten_thread_init(void* thread, int is_main, int is_runtime, int can_block, int profile);

static _Atomic uint64_t claim_word;     /* generation << 32 | next task id */
static _Atomic int32_t wake_gen;        /* bumped once per job; workers wait on it */
static _Atomic int32_t tasks_done;      /* tasks of the current job finished */
static _Atomic int32_t tasks_failed;    /* tasks of the current job that returned non-zero */
static _Atomic int32_t workers_joined;  /* workers that entered hd_worker_main */
static _Atomic int32_t barrier_count;
static _Atomic int32_t barrier_sense;
static _Atomic(FTVMParallelLambda) job_lambda;
static _Atomic(void*) job_cdata;
static _Atomic int32_t job_tasks;
static uint32_t job_generation;  /* written by the page's thread only */
static void* worker_blocks[HD_MAX_WORKERS];
static void* worker_threads[HD_MAX_WORKERS];
static uintptr_t main_thread_block;

/* Claim and run tasks of generation `gen` until none is left; returns how many this thread ran. */
static int run_tasks(uint32_t gen, FTVMParallelLambda lambda, void* cdata, int32_t n) {
  int ran = 0;
  TVMParallelGroupEnv env = {NULL, n};
  for (;;) {
    uint64_t word = atomic_load(&claim_word);
    uint32_t task = (uint32_t)word;
    if ((uint32_t)(word >> 32) != gen || task >= (uint32_t)n) return ran;
    if (!atomic_compare_exchange_weak(&claim_word, &word, word + 1)) continue;
    if (lambda((int)task, &env, cdata) != 0) atomic_fetch_add(&tasks_failed, 1);
    atomic_fetch_add(&tasks_done, 1);
    ++ran;
  }
}

/* The thread count a parallel loop is split into: the page's thread plus the workers that joined. */
#define HD_EXPORT(name) __attribute__((used, export_name(name)))

HD_EXPORT("hd_num_threads") int hd_num_threads(void) { return 1 + atomic_load(&workers_joined); }

int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  int threads = hd_num_threads();
  /* TVM's codegen asks for num_task = 0 ("as many as there are threads") and splits the loop evenly over the
   * task count it gets back. HD_TASKS_PER_THREAD smaller tasks, claimed dynamically, keep both threads busy when
   * one of them is descheduled or woken late (the page's thread takes what the late worker did not). */
  int n = num_task > 0 ? num_task : (threads == 1 ? 1 : threads * HD_TASKS_PER_THREAD);
  if (threads == 1 || n == 1) {
    TVMParallelGroupEnv env = {NULL, n};
    for (int i = 0; i < n; ++i) {
      if (flambda(i, &env, cdata) != 0) return -1;
    }
    return 0;
  }
  /* close the word under a generation of its own first: a worker that read an earlier word can no longer
   * claim, so it never pairs one job's fields with another job's task ids */
  atomic_store(&claim_word, ((uint64_t)++job_generation << 32) | UINT32_MAX);
  uint32_t gen = ++job_generation;
  atomic_store(&job_lambda, flambda);
  atomic_store(&job_cdata, cdata);
  atomic_store(&job_tasks, n);
  atomic_store(&tasks_done, 0);
  atomic_store(&tasks_failed, 0);
  atomic_store(&claim_word, (uint64_t)gen << 32);
  atomic_fetch_add(&wake_gen, 1);
  __builtin_wasm_memory_atomic_notify((int*)&wake_gen, (unsigned)(threads - 1));
  run_tasks(gen, flambda, cdata, n);
  /* spin (the page's thread may not block) until every task is done; a task a worker claimed and never finished
   * (the worker trapped, or the browser stopped it) would spin forever: after HD_STALL_MS without progress the
   * call fails with a message and the pool is dropped (later loops run on the page's thread alone) */
  int32_t last = -1;
  uint32_t spins = 0;
  double stalled_since = 0.0;
  for (;;) {
    int32_t done = atomic_load(&tasks_done);
    if (done >= n) break;
    if (done != last) {
      last = done;
      stalled_since = 0.0;
      continue;
    }
    if ((++spins & 0xFFFF) != 0) continue;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double now = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    if (stalled_since == 0.0) {
      stalled_since = now;
    } else if (now - stalled_since > HD_STALL_MS) {
      atomic_store(&workers_joined, 0);
      TVMFFIErrorSetRaisedFromCStr("RuntimeError", "a wasm worker thread stopped in the middle of a parallel loop "
                                   "(harmonizer-deploy wasm-mt); later loops run on one thread");
      return -1;
    }
  }
  return atomic_load(&tasks_failed) == 0 ? 0 : -1;
}

/* A spinning sense-reversing barrier over the job's tasks. It needs every task of the job running at once, so a
 * job with more tasks than threads (tasks are claimed, not pinned) gets an error instead of a deadlock; the
 * schedules of this project emit no barrier. */
int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  if (penv->num_task > hd_num_threads()) return -1;
  int32_t sense = atomic_load(&barrier_sense);
  if (atomic_fetch_add(&barrier_count, 1) + 1 == penv->num_task) {
    atomic_store(&barrier_count, 0);
    atomic_store(&barrier_sense, sense ^ 1);
  } else {
    while (atomic_load(&barrier_sense) == sense) {
    }
  }
  return 0;
}

static size_t tls_alignment(void) {
  size_t align = __builtin_wasm_tls_align();
  return align > 0 ? align : 1;
}

/* The page's thread gets its own thread-local block before any other constructor runs: without emscripten's JS
 * glue nobody else calls __wasm_init_tls for it, and its __tls_base would stay 0 (every thread's TLS at address 0). */
__attribute__((constructor(101))) static void hd_main_thread_tls(void) {
  size_t size = __builtin_wasm_tls_size();
  if (size == 0) return;
  size_t align = tls_alignment();
  void* block = malloc(size + align);
  if (block != NULL) __wasm_init_tls((void*)(((uintptr_t)block + align - 1) & ~(uintptr_t)(align - 1)));
}

/* The page's thread's `struct pthread` (libc's __main_pthread), from the JS import emscripten's startup calls
 * (__emscripten_init_main_thread_js): without a thread pointer, libc's recursive mutexes (TVM's allocator takes
 * one) walk a robust list at address 0 and trap. The page's thread never blocks (can_block = 0: libc spins). */
HD_EXPORT("hd_main_thread_init") void hd_main_thread_init(uintptr_t thread) {
  main_thread_block = thread;
  _emscripten_thread_init((void*)thread, 1, 1, 0, 0);
}

/* A worker's `struct pthread`: a copy of the page thread's with the pointers into itself (self, its robust
 * list head) moved to the copy, so errno and robust lists are per thread. Its tid stays the page's: only
 * recursive or error-checking mutexes compare owners, and TVM's parallel tasks take none. */
static void* copy_thread_block(void* dest) {
  uint32_t* words = (uint32_t*)dest;
  memcpy(dest, (const void*)main_thread_block, HD_THREAD_BYTES);
  for (size_t i = 0; i < HD_THREAD_BYTES / sizeof(uint32_t); ++i) {
    if (words[i] >= main_thread_block && words[i] < main_thread_block + HD_THREAD_BYTES) {
      words[i] = (uint32_t)((uintptr_t)dest + (words[i] - main_thread_block));
    }
  }
  return dest;
}

/* Called on the page's thread before starting worker `id`: allocates its stack and thread-local block and
 * returns the stack top the worker sets (with stackRestore) before calling hd_worker_main; 0 when out of room. */
HD_EXPORT("hd_worker_stack") uintptr_t hd_worker_stack(int id) {
  if (id < 0 || id >= HD_MAX_WORKERS) return 0;
  size_t tls_align = tls_alignment();
  size_t tls_size = __builtin_wasm_tls_size();
  size_t tls_bytes = (tls_size + tls_align - 1) / tls_align * tls_align;
  if (worker_blocks[id] == NULL) {
    if (main_thread_block == 0) return 0;  /* hd_main_thread_init has not run: no thread block to copy */
    void* block = malloc(HD_STACK_BYTES + tls_bytes + tls_align + 16);  /* both ends aligned by hand below */
    void* thread = aligned_alloc(16, HD_THREAD_BYTES);
    if (block == NULL || thread == NULL) {
      free(block);
      free(thread);
      return 0;
    }
    worker_blocks[id] = block;
    worker_threads[id] = copy_thread_block(thread);
  }
  return ((uintptr_t)worker_blocks[id] + HD_STACK_BYTES) & ~(uintptr_t)15;  /* the stack grows down from here */
}

/* A worker's whole life: set up its thread-local storage, join, then run tasks of every job until the page goes.
 * The stack pointer was set by the caller (JS) to hd_worker_stack(id). */
HD_EXPORT("hd_worker_main") void hd_worker_main(int id) {
  if (id < 0 || id >= HD_MAX_WORKERS || worker_blocks[id] == NULL) return;
  size_t tls_align = tls_alignment();
  uintptr_t tls = ((uintptr_t)worker_blocks[id] + HD_STACK_BYTES + tls_align - 1) & ~(uintptr_t)(tls_align - 1);
  if (__builtin_wasm_tls_size() > 0) __wasm_init_tls((void*)tls);
  _emscripten_thread_init(worker_threads[id], 0, 0, 1, 0);
  int32_t seen = atomic_load(&wake_gen);
  atomic_fetch_add(&workers_joined, 1);
  for (;;) {
    int spins = 0;
    while (atomic_load(&wake_gen) == seen) {
      if (++spins < HD_SPIN_BEFORE_WAIT) continue;
      __builtin_wasm_memory_atomic_wait32((int*)&wake_gen, seen, -1);
    }
    seen = atomic_load(&wake_gen);
    uint64_t word = atomic_load(&claim_word);
    uint32_t gen = (uint32_t)(word >> 32);
    /* the fields belong to `gen` whenever a claim of `gen` succeeds (see run_tasks) */
    run_tasks(gen, atomic_load(&job_lambda), atomic_load(&job_cdata), atomic_load(&job_tasks));
  }
}
