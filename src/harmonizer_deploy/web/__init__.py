"""The harmonizer in the browser: WebGPU/wasm artifacts, TVM's web runtime built from the wheel, headless Chromium
runs for verify and bench, and the static page served by `harmonizer-deploy serve`."""
