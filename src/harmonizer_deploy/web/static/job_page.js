// What the headless job pages (runner.html: TVM artifacts; ort_runner.html: onnxruntime-web) share: a log that
// reaches the server (the CLI shows its tail when a run fails), POST helpers, and the final report.
const logEl = document.getElementById("log");
export const lines = [];

export function log(msg) {
  lines.push(msg);
  logEl.textContent = lines.slice(-40).join("\n");
  fetch("/log", { method: "POST", headers: { "Content-Type": "text/plain" }, body: String(msg) }).catch(() => {});
}
window.addEventListener("error", (e) => log(`page error: ${e.message}`));
window.addEventListener("unhandledrejection", (e) => log(`unhandled: ${e.reason && e.reason.stack || e.reason}`));

export async function post(url, body, type) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": type }, body });
  if (!r.ok) throw new Error(`POST ${url}: HTTP ${r.status}`);
}

/** Run `main`; a failure is logged and reported to the server as {ok: false} instead of hanging the job. */
export function runJob(main) {
  main().catch((e) => {
    log(String(e && e.stack || e));
    post("/done", JSON.stringify({ ok: false, error: String(e && e.message || e), log: lines.slice(-20) }),
      "application/json").catch(() => {});
  });
}
