"""When verify fails: find the first ONNX node whose output diverges, and shrink the model to a bug report.

Why not "mark every tensor as an output" (Polygraphy's approach): that holds every intermediate at once and
changes the compiled program under test. Here the graph is cut into chunks of `chunk_size` nodes in
topological order; each chunk becomes a small ONNX model whose inputs are the live tensors at the chunk's
boundary and whose outputs are the chunk's own tensors. Each chunk is compiled for the target and run twice in
lockstep with onnxruntime: the compiled side is fed the *compiled* values carried from the previous chunk (so
error accumulates as in the deployed model), onnxruntime is fed its own values. Only the boundary tensors and
one chunk's outputs are ever held, so memory follows the chunk size and the graph's width, not its length.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.compiler.targets import TargetSpec, load_target
from harmonizer_deploy.conversion.inputs import is_harmonizer_io, load_inputs, make_inputs
from harmonizer_deploy.core.artifacts import atomic_file, sha256_file, write_json
from harmonizer_deploy.core.compare import Tolerances, error_stats, max_abs_error
from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.manifest import read_manifest
from harmonizer_deploy.core.npz import read_npz
from harmonizer_deploy.run.runners import RUNNERS
from harmonizer_deploy.verification.verify import VerifyReport

DEFAULT_CHUNK_SIZE = 8
REDUCED_MODEL = "reduced.onnx"
REDUCED_INPUTS = "inputs.npz"
REDUCED_EXPECTED = "expected.npz"
REDUCED_REPORT = "reduced.json"
REDUCED_REPRO = "repro.py"


# ---------------------------------------------------------------------------------------------------------------
# ONNX graph helpers


def _node_label(node: Any, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _check_flat_graph(model: Any) -> None:
    """Control-flow nodes (If/Loop/Scan) read outer-scope tensors implicitly; chunking them is not supported."""
    import onnx

    for i, node in enumerate(model.graph.node):
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise HarmonizerError(
                f"node {_node_label(node, i)} ({node.op_type}) holds a subgraph; debug localize/reduce handle "
                "flat graphs only", "inline control flow before debugging (e.g. onnx-simplifier)")


def _onnx_elem_type(dtype: np.dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def submodel(model: Any, nodes: list[Any], inputs: dict[str, np.ndarray], outputs: list[str]) -> Any:
    """A standalone ONNX model of `nodes`: `inputs` (concrete arrays fix their shapes) feed the boundary,
    `outputs` are exposed; only the initializers these nodes read are copied."""
    import onnx
    from onnx import helper

    used = {name for n in nodes for name in n.input if name}
    initializers = [t for t in model.graph.initializer if t.name in used and t.name not in inputs]
    graph_inputs = [helper.make_tensor_value_info(name, _onnx_elem_type(a.dtype), list(a.shape))
                    for name, a in inputs.items()]
    graph = helper.make_graph(list(nodes), "subgraph", graph_inputs, [], initializer=initializers)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    try:
        inferred = onnx.shape_inference.infer_shapes(sub, strict_mode=False)
        types = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:  # inference is a nicety: fall back to float outputs of unknown shape
        types = {}
    for name in outputs:
        if name in types:
            sub.graph.output.append(types[name])
        else:
            sub.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return sub


def _consumers_last_use(model: Any) -> dict[str, int]:
    """Tensor name -> index of the last node that reads it (graph outputs live to the end)."""
    last: dict[str, int] = {}
    for i, node in enumerate(model.graph.node):
        for name in node.input:
            if name:
                last[name] = i
    for out in model.graph.output:
        last[out.name] = len(model.graph.node)
    return last


def _tensor_names(model: Any) -> list[str]:
    """Every tensor a tolerance may be given for: graph outputs first, then node outputs."""
    names = [o.name for o in model.graph.output]
    return names + [n for node in model.graph.node for n in node.output if n and n not in names]


def _producers(model: Any) -> dict[str, int]:
    return {name: i for i, node in enumerate(model.graph.node) for name in node.output if name}


def _ancestors(model: Any, index: int) -> list[int]:
    """Indices of the nodes `index` depends on, in topological order (not including `index`)."""
    producers = _producers(model)
    seen: set[int] = set()
    stack = [index]
    while stack:
        for name in model.graph.node[stack.pop()].input:
            j = producers.get(name)
            if j is not None and j not in seen:
                seen.add(j)
                stack.append(j)
    return sorted(seen)


def _boundary_inputs(model: Any, nodes: list[Any]) -> list[str]:
    """Tensors the nodes read but do not produce (initializers excluded), in first-use order."""
    produced = {name for n in nodes for name in n.output}
    constants = {t.name for t in model.graph.initializer}
    seen: list[str] = []
    for n in nodes:
        for name in n.input:
            if name and name not in produced and name not in constants and name not in seen:
                seen.append(name)
    return seen


# ---------------------------------------------------------------------------------------------------------------
# running a (sub-)model on onnxruntime and on the target


def run_onnxruntime(model: Any, feeds: dict[str, np.ndarray], session: Any = None) -> dict[str, np.ndarray]:
    """The reference: onnxruntime's CPU provider, as verify uses it (pass `session` to reuse one)."""
    from harmonizer_deploy.core.onnxruntime import ort_session

    if session is None:
        session = ort_session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


class TargetRunner:
    """Compiles ONNX (sub-)models for a target in memory and runs them in this process.

    Goes through `relax_import.import_onnx`, the same import `compile` uses, so the sub-models are built exactly
    like the artifact (looked up at call time: a test can swap in a faulty importer)."""

    def __init__(self, spec: TargetSpec) -> None:
        from harmonizer_deploy.core.cpus import use_all_cpu_cores
        from harmonizer_deploy.run.tvm import tvm_device

        if spec.device == "cpu":
            use_all_cpu_cores()
        if spec.runner != "local":
            raise HarmonizerError(
                f"target {spec.name!r} runs through runner {spec.runner!r}; debug localize/reduce run sub-models "
                "in this process", "debug on a machine where the target runs locally (runner = \"local\")")
        spec.check_buildable()
        self.spec = spec
        self.device = tvm_device(spec.device)
        self.compiled = 0
        self.compile_seconds = 0.0

    def run(self, model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tvm
        from tvm import relax

        from harmonizer_deploy.compiler import relax_import
        from harmonizer_deploy.compiler.executable import build_executable
        from harmonizer_deploy.compiler.pipelines import get_pipeline
        from harmonizer_deploy.compiler.scheduling import ScheduleReport
        from harmonizer_deploy.run.tvm import prepare_params

        start = time.perf_counter()
        mod, _names, arrays, _report = relax_import.import_onnx(model)
        tvm_target = self.spec.tvm_target()
        schedules = ScheduleReport()
        executable = build_executable(mod, tvm_target, schedules=schedules, target_name=self.spec.name,
                                      pipeline=get_pipeline(self.spec.pipeline)(self.spec, tvm_target, schedules))
        self.compiled += 1
        self.compile_seconds += time.perf_counter() - start
        vm = relax.VirtualMachine(executable, self.device)
        graph_inputs = [i.name for i in model.graph.input if i.name in feeds]
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[n]), self.device) for n in graph_inputs]
        args += prepare_params(vm, arrays, self.device)
        result = vm["main"](*args)
        values = [result] if isinstance(result, tvm.runtime.Tensor) else list(result)
        names = [o.name for o in model.graph.output]
        if len(values) != len(names):
            raise HarmonizerError(f"compiled sub-model returned {len(values)} outputs, expected {len(names)}",
                                  "report this with the model")
        return {n: v.numpy() for n, v in zip(names, values, strict=True)}


# ---------------------------------------------------------------------------------------------------------------
# localize


@dataclass
class NodeCheck:
    """One node's outputs compared: the compiled value (fed compiled upstream values) vs onnxruntime."""

    index: int
    name: str
    op_type: str
    outputs: list[dict]

    @property
    def passed(self) -> bool:
        return all(o["passed"] for o in self.outputs)

    def worst(self) -> dict:
        return max(self.outputs, key=lambda o: o["max_abs_err"])

    def summary(self) -> dict:
        w = self.worst()
        return {"index": self.index, "name": self.name, "op_type": self.op_type, "passed": self.passed,
                "tensor": w["name"], "max_abs_err": w["max_abs_err"], "required_atol": w["required_atol"],
                "required_rtol": w["required_rtol"], "atol": w["atol"], "rtol": w["rtol"]}


@dataclass
class LocalizeReport:
    target: str
    model: str
    chunk_size: int
    num_nodes: int
    full_model: dict
    input_index: int
    input_shape: list[int]
    culprit: dict | None
    chain: list[dict]
    checked: list[dict]
    submodels_compiled: int
    compile_seconds: float
    seconds: float
    peak_live_tensors: int
    peak_live_bytes: int
    verdict: str
    notes: list[str] = field(default_factory=list)
    worst_input: np.ndarray | None = None

    @property
    def diverged(self) -> bool:
        return self.culprit is not None or not self.full_model["passed"]

    def to_dict(self) -> dict:
        return {"target": self.target, "model": self.model, "chunk_size": self.chunk_size,
                "num_nodes": self.num_nodes, "full_model": self.full_model, "input_index": self.input_index,
                "input_shape": self.input_shape, "culprit": self.culprit, "chain": self.chain,
                "checked": self.checked, "submodels_compiled": self.submodels_compiled,
                "compile_seconds": round(self.compile_seconds, 3), "seconds": round(self.seconds, 3),
                "peak_live_tensors": self.peak_live_tensors, "peak_live_bytes": self.peak_live_bytes,
                "verdict": self.verdict, "notes": self.notes}


def _source_model(manifest: dict) -> tuple[Path, Any]:
    import onnx

    path = Path(manifest["model"]["path"])
    if not path.is_file():
        raise HarmonizerError(f"the ONNX model this artifact was compiled from is gone: {path}",
                              "re-run convert and compile")
    if sha256_file(path) != manifest["model"]["sha256"]:
        raise HarmonizerError(f"{path} changed after this artifact was compiled (hash mismatch)",
                              "recompile: harmonizer-deploy compile --target " + manifest["target"])
    model = onnx.load(str(path))
    _check_flat_graph(model)
    constants = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in constants]
    if inputs != [manifest["inputs"][0]["name"]]:
        raise HarmonizerError(f"{path} has inputs {inputs}; debug localize/reduce expect the one model input "
                              f"{manifest['inputs'][0]['name']!r}", "recompile the artifact from this model")
    return path, model


def _artifact(artifact_dir: str | Path | None, target: str) -> tuple[TargetSpec, Path, dict]:
    spec = load_target(target)
    directory = Path(artifact_dir) if artifact_dir else Path("build") / spec.name
    manifest = read_manifest(directory)
    if manifest.get("target") != spec.name:
        raise HarmonizerError(f"{directory} holds a {manifest.get('target')!r} artifact, not {spec.name!r}",
                              f"pass --target {manifest.get('target')} or the right directory")
    if manifest.get("inputs") and not is_harmonizer_io(manifest["inputs"]):
        raise HarmonizerError(
            f"debug localize/reduce feed the harmonizer's one input; {directory} takes "
            f"{', '.join(i['name'] for i in manifest['inputs'])}",
            "compare this model node by node with `harmonizer-deploy debug verify MODEL.onnx --inputs F.npz` "
            "(npz keyed by input name, e.g. from `verify --num-inputs 1 --save-inputs F.npz`)",
        )
    return spec, directory, manifest


def _compare_full(directory: Path, manifest: dict, model: Any, inputs: list[np.ndarray],
                  tolerances: Tolerances) -> tuple[dict, int]:
    """The whole artifact vs onnxruntime on every input; returns the stats and the worst input's index."""
    input_name = manifest["inputs"][0]["name"]
    output_name = model.graph.output[0].name
    from harmonizer_deploy.core.onnxruntime import ort_session

    actual = RUNNERS.lookup(manifest.get("runner", "local"))(directory, manifest, inputs)
    session = ort_session(model)
    worst, worst_err, expected = 0, -1.0, []
    for i, x in enumerate(inputs):
        expected.append(run_onnxruntime(model, {input_name: x}, session)[output_name])
        err = max_abs_error(actual[i], expected[i])
        if not np.isfinite(err) or not np.isfinite(actual[i]).all():
            err = np.inf
        if err > worst_err:
            worst, worst_err = i, err
    atol, rtol = tolerances.get(output_name)
    stats = error_stats(np.concatenate([a.ravel() for a in actual]),
                        np.concatenate([e.ravel() for e in expected]), atol, rtol)
    return {"name": output_name, **stats}, worst


def localize(
    artifact_dir: str | Path | None = None,
    target: str = "cpu",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    num_inputs: int = 1,
    seed: int = 0,
    batch: int = 2,
    time_steps: int = 32,
    load_inputs_from: str | Path | None = None,
    atol: float | dict[str, float] | None = None,
    rtol: float | dict[str, float] | None = None,
    scan_always: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LocalizeReport:
    """Find the first node (topological order) whose output, computed by code compiled for `target`, differs
    from onnxruntime beyond tolerance. Tolerances: the target's, or `atol`/`rtol` (a number, or per tensor
    name with "*" as the default). The full artifact is compared first; the chunked scan runs only when it
    fails (or with `scan_always`), on the input where it failed worst."""
    start = time.perf_counter()
    if chunk_size < 1:
        raise HarmonizerError("--chunk-size must be at least 1", "pass a positive chunk size")
    spec, directory, manifest = _artifact(artifact_dir, target)
    model_path, model = _source_model(manifest)
    tolerances = Tolerances.build(spec, atol, rtol, _tensor_names(model))
    if load_inputs_from:
        inputs = load_inputs(load_inputs_from)
    else:
        if num_inputs < 1 or batch < 1 or time_steps < 1:
            raise HarmonizerError("--num-inputs, --batch and --time must be positive", "pass positive values")
        inputs = make_inputs(seed, num_inputs, batch, time_steps)
    full, worst = _compare_full(directory, manifest, model, inputs, tolerances)
    nodes = list(model.graph.node)
    chunks = [list(range(i, min(i + chunk_size, len(nodes)))) for i in range(0, len(nodes), chunk_size)]
    report = LocalizeReport(
        target=spec.name, model=str(model_path), chunk_size=chunk_size, num_nodes=len(nodes), full_model=full,
        input_index=worst, input_shape=list(inputs[worst].shape), culprit=None, chain=[], checked=[],
        submodels_compiled=0, compile_seconds=0.0, seconds=0.0, peak_live_tensors=0, peak_live_bytes=0,
        verdict="", worst_input=inputs[worst])
    if full["passed"] and not scan_always:
        report.verdict = (f"the artifact matches onnxruntime within tolerance (max abs error "
                          f"{full['max_abs_err']:.2e}); nothing to localize")
        report.seconds = time.perf_counter() - start
        return report

    runner = TargetRunner(spec)
    graph_input = manifest["inputs"][0]["name"]
    last_use = _consumers_last_use(model)
    # the live frontier: tensors produced so far that a later node (or the graph output) still reads
    reference: dict[str, np.ndarray] = {graph_input: inputs[worst]}
    compiled: dict[str, np.ndarray] = {graph_input: inputs[worst]}
    checks: dict[int, NodeCheck] = {}
    culprit_index: int | None = None
    culprit_chunk: dict[str, np.ndarray] = {}
    for c, chunk in enumerate(chunks):
        chunk_nodes = [nodes[i] for i in chunk]
        boundary = _boundary_inputs(model, chunk_nodes)
        outputs = [name for n in chunk_nodes for name in n.output if name]
        sub = submodel(model, chunk_nodes, {n: reference[n] for n in boundary}, outputs)
        ref_out = run_onnxruntime(sub, {n: reference[n] for n in boundary})
        act_out = runner.run(sub, {n: compiled[n] for n in boundary})
        live = len(reference) + len(ref_out)
        report.peak_live_tensors = max(report.peak_live_tensors, 2 * live)
        report.peak_live_bytes = max(report.peak_live_bytes, sum(a.nbytes for a in reference.values())
                                     + sum(a.nbytes for a in compiled.values())
                                     + sum(a.nbytes for a in ref_out.values())
                                     + sum(a.nbytes for a in act_out.values()))
        for i in chunk:
            node = nodes[i]
            stats = []
            for name in node.output:
                if not name:
                    continue
                t_atol, t_rtol = tolerances.get(name)
                stats.append({"name": name, **error_stats(act_out[name], ref_out[name], t_atol, t_rtol)})
            checks[i] = NodeCheck(i, _node_label(node, i), node.op_type, stats)
            if culprit_index is None and not checks[i].passed:
                culprit_index = i
        if progress:
            progress(c + 1, len(chunks))
        if culprit_index is not None:
            culprit_chunk = ref_out
            break
        end = chunk[-1]
        for name in outputs:
            reference[name], compiled[name] = ref_out[name], act_out[name]
        for name in [n for n in reference if last_use.get(n, -1) <= end]:
            del reference[name], compiled[name]
        del ref_out, act_out

    report.checked = [checks[i].summary() for i in sorted(checks)]
    if culprit_index is None:
        report.verdict = ("no single node diverges when the model is compiled chunk by chunk"
                          + ("" if full["passed"] else
                             f", yet the whole artifact does (max abs error {full['max_abs_err']:.2e}): the "
                             "mismatch comes from compiling across chunk boundaries (fusion, layout); retry with "
                             "a larger --chunk-size"))
    else:
        _describe_culprit(report, model, checks, culprit_index, runner, culprit_chunk, reference, tolerances)
    report.submodels_compiled = runner.compiled
    report.compile_seconds = runner.compile_seconds
    report.seconds = time.perf_counter() - start
    return report


def _describe_culprit(report: LocalizeReport, model: Any, checks: dict[int, NodeCheck], index: int,
                      runner: TargetRunner, chunk_ref: dict[str, np.ndarray], frontier_ref: dict[str, np.ndarray],
                      tolerances: Tolerances) -> None:
    """The culprit's inputs' error, its own, its error alone (fed onnxruntime's inputs), and the chain."""
    node = model.graph.node[index]
    producers = _producers(model)
    constants = {t.name for t in model.graph.initializer}
    inputs = []
    for name in node.input:
        if not name or name in constants:
            continue
        j = producers.get(name)
        if j is None:
            inputs.append({"name": name, "producer": None, "max_abs_err": 0.0, "passed": True,
                           "note": "graph input: identical on both sides"})
        else:
            stat = next(o for o in checks[j].outputs if o["name"] == name)
            inputs.append({"name": name, "producer": checks[j].name, "producer_op": checks[j].op_type,
                           "max_abs_err": stat["max_abs_err"], "required_atol": stat["required_atol"],
                           "required_rtol": stat["required_rtol"], "passed": stat["passed"]})
    feeds = {}
    for name in _boundary_inputs(model, [node]):
        feeds[name] = chunk_ref[name] if name in chunk_ref else frontier_ref[name]
    own = [name for name in node.output if name]
    alone_model = submodel(model, [node], feeds, own)
    alone_ref = run_onnxruntime(alone_model, feeds)
    alone_act = runner.run(alone_model, feeds)
    alone = []
    for name in own:
        t_atol, t_rtol = tolerances.get(name)
        alone.append({"name": name, **error_stats(alone_act[name], alone_ref[name], t_atol, t_rtol)})
    check = checks[index]
    worst = check.worst()
    alone_failed = not all(a["passed"] for a in alone)
    report.culprit = {
        "index": index, "name": check.name, "op_type": node.op_type, "outputs": check.outputs,
        "inputs": inputs, "alone": alone, "alone_failed": alone_failed,
        "required_atol": worst["required_atol"], "required_rtol": worst["required_rtol"],
    }
    chain = [*_ancestors(model, index), index]
    report.chain = [checks[i].summary() for i in chain if i in checks]
    inputs_ok = all(i["passed"] for i in inputs)
    if alone_failed:
        report.verdict = (f"{check.name} ({node.op_type}) is wrong on its own: fed onnxruntime's inputs it is "
                          f"still off by {max(a['max_abs_err'] for a in alone):.2e}"
                          f"{' while its inputs are within tolerance' if inputs_ok else ''}; likely a bug in how "
                          f"the target compiles {node.op_type} (run `debug reduce` for a bug report)")
    else:
        report.verdict = (f"{check.name} ({node.op_type}) is where accumulated error first exceeds tolerance; "
                          f"alone it is within tolerance, so this is numerical drift: it would pass with "
                          f"atol={worst['required_atol']:.2e} (rtol=0) or rtol={worst['required_rtol']:.2e} "
                          "(atol=0) on this tensor")


# ---------------------------------------------------------------------------------------------------------------
# reduce


@dataclass
class ReduceReport:
    output_dir: str
    model_path: str
    inputs_path: str
    node: str
    op_type: str
    num_nodes: int
    nodes: list[str]
    input_names: list[str]
    outputs: list[dict]
    tried: list[dict]
    localize: dict | None

    def to_dict(self) -> dict:
        return {"output_dir": self.output_dir, "model": self.model_path, "inputs": self.inputs_path,
                "node": self.node, "op_type": self.op_type, "num_nodes": self.num_nodes, "nodes": self.nodes,
                "input_names": self.input_names, "outputs": self.outputs, "tried": self.tried,
                "localize": self.localize}


def _reference_values(model: Any, graph_input: str, x: np.ndarray, names: list[str],
                      upto: int) -> dict[str, np.ndarray]:
    """onnxruntime's values of `names`, from the model prefix that ends at node `upto`."""
    wanted = [n for n in names if n != graph_input]
    values = {graph_input: x} if graph_input in names else {}
    if wanted:
        prefix = [model.graph.node[i] for i in range(upto + 1)]
        sub = submodel(model, prefix, {graph_input: x}, wanted)
        values.update(run_onnxruntime(sub, {graph_input: x}))
    return values


def reduce(
    artifact_dir: str | Path | None = None,
    target: str = "cpu",
    output_dir: str | Path = "build/reduced",
    node: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    num_inputs: int = 1,
    seed: int = 0,
    batch: int = 2,
    time_steps: int = 32,
    load_inputs_from: str | Path | None = None,
    atol: float | dict[str, float] | None = None,
    rtol: float | dict[str, float] | None = None,
) -> ReduceReport:
    """Shrink a failing model to the smallest subgraph ending at the diverging node that still fails on the
    target, fed onnxruntime's values at its boundary; write it as `reduced.onnx` + `inputs.npz` (keys are the
    ONNX input names) + `reduced.json` + a standalone `repro.py`. The node is localized first unless given."""
    spec, directory, manifest = _artifact(artifact_dir, target)
    _model_path, model = _source_model(manifest)
    graph_input = manifest["inputs"][0]["name"]
    tolerances = Tolerances.build(spec, atol, rtol, _tensor_names(model))
    located = None
    if node is None:
        located = localize(directory, target, chunk_size, num_inputs, seed, batch, time_steps, load_inputs_from,
                           atol, rtol)
        if located.culprit is None:
            raise HarmonizerError(f"nothing to reduce: {located.verdict}",
                                  "pass --node NAME to cut around a node anyway")
        index = located.culprit["index"]
        x = located.worst_input
    else:
        labels = [_node_label(n, i) for i, n in enumerate(model.graph.node)]
        if node not in labels:
            raise HarmonizerError(f"no node named {node!r} in the model",
                                  "use a name printed by `debug localize` (or netron)")
        index = labels.index(node)
        x = (load_inputs(load_inputs_from) if load_inputs_from else make_inputs(seed, 1, batch, time_steps))[0]
    runner = TargetRunner(spec)
    culprit = model.graph.node[index]
    outputs = [name for name in culprit.output if name]
    ancestors = _ancestors(model, index)
    tried = []
    size = 1
    while True:
        chosen = [*(ancestors[len(ancestors) - (size - 1):] if size > 1 else []), index]
        nodes = [model.graph.node[i] for i in chosen]
        boundary = _boundary_inputs(model, nodes)
        feeds = _reference_values(model, graph_input, x, boundary, index)
        sub = submodel(model, nodes, feeds, outputs)
        stats = _compare(sub, feeds, runner, tolerances)
        failed = not all(s["passed"] for s in stats)
        tried.append({"num_nodes": len(nodes), "failed": failed,
                      "max_abs_err": max(s["max_abs_err"] for s in stats)})
        if failed:
            break
        if size > len(ancestors):
            raise HarmonizerError(
                f"no subgraph ending at {_node_label(culprit, index)} fails on its own, even from the graph input",
                "the mismatch needs the whole model compiled together; attach the full model instead")
        size = min(size * 2, len(ancestors) + 1)

    out = Path(output_dir)
    labels = [_node_label(model.graph.node[i], i) for i in chosen]
    _write_bundle(out, sub, feeds, spec, manifest, {
        "node": _node_label(culprit, index), "op_type": culprit.op_type, "nodes": labels,
        "outputs": stats, "tried": tried, "localize": located.to_dict() if located else None})
    return ReduceReport(
        output_dir=str(out), model_path=str(out / REDUCED_MODEL), inputs_path=str(out / REDUCED_INPUTS),
        node=_node_label(culprit, index), op_type=culprit.op_type, num_nodes=len(nodes), nodes=labels,
        input_names=list(feeds), outputs=stats,
        tried=tried, localize=located.to_dict() if located else None)


def _compare(model: Any, feeds: dict[str, np.ndarray], runner: TargetRunner, tolerances: Tolerances) -> list[dict]:
    expected = run_onnxruntime(model, feeds)
    actual = runner.run(model, feeds)
    stats = []
    for name in expected:
        t_atol, t_rtol = tolerances.get(name)
        stats.append({"name": name, **error_stats(actual[name], expected[name], t_atol, t_rtol)})
    return stats


def _write_bundle(out: Path, sub: Any, feeds: dict[str, np.ndarray], spec: TargetSpec, manifest: dict,
                  details: dict) -> None:
    import onnx

    onnx.checker.check_model(sub, full_check=True)
    with atomic_file(out / REDUCED_MODEL) as tmp:
        onnx.save(sub, str(tmp))
    with atomic_file(out / REDUCED_INPUTS) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **feeds)
    expected = run_onnxruntime(sub, feeds)  # stored, so the reproducer needs TVM alone, not onnxruntime
    with atomic_file(out / REDUCED_EXPECTED) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **expected)
    write_json(out / REDUCED_REPORT, {
        **details, "target": spec.name, "target_json": manifest.get("target_json"),
        "tolerance": {"atol": spec.atol, "rtol": spec.rtol}, "versions": manifest.get("versions"),
        "files": [REDUCED_MODEL, REDUCED_INPUTS, REDUCED_EXPECTED, REDUCED_REPRO],
        "reproduce": f"python {REDUCED_REPRO}  (or: harmonizer-deploy debug verify {REDUCED_MODEL} "
                     f"--inputs {REDUCED_INPUTS} --target {spec.name})"})
    with atomic_file(out / REDUCED_REPRO) as tmp:
        tmp.write_text(_REPRO.format(target=json.dumps(manifest.get("target_json")), atol=spec.atol,
                                     rtol=spec.rtol, device=spec.device))


_REPRO = '''"""Standalone reproducer: TVM Relax vs onnxruntime's outputs on {model} (numpy, onnx, apache-tvm).

{expected} holds onnxruntime's outputs for {inputs}, computed when this folder was written.
"""
import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

model = onnx.load("{model}")
feeds = dict(np.load("{inputs}"))
reference = np.load("{expected}")
expected = [reference[out.name] for out in model.graph.output]
target = tvm.target.Target({target})
executable = relax.build(from_onnx(model), target=target, relax_pipeline=relax.get_default_pipeline(target))
device = tvm.device("{device}", 0)
vm = relax.VirtualMachine(executable, device)
result = vm["main"](*[tvm.runtime.tensor(feeds[i.name], device) for i in model.graph.input])
actual = [result.numpy()] if isinstance(result, tvm.runtime.Tensor) else [r.numpy() for r in result]
for out, a, e in zip(model.graph.output, actual, expected):
    err = np.abs(a.astype(np.float64) - e)
    ok = np.all(err <= {atol} + {rtol} * np.abs(e))
    print(f"{{out.name}}: max abs error {{err.max():.3e}} -> {{'PASS' if ok else 'FAIL'}}")
'''.replace("{model}", REDUCED_MODEL).replace("{inputs}", REDUCED_INPUTS).replace("{expected}", REDUCED_EXPECTED)


# ---------------------------------------------------------------------------------------------------------------
# verify any ONNX file (e.g. a reduced one) on a target


def load_named_inputs(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise HarmonizerError(f"inputs file not found: {path}", f"pass the {REDUCED_INPUTS} written by debug reduce")
    return read_npz(path, f"pass the {REDUCED_INPUTS} written by debug reduce")


def verify_onnx(
    model_path: str | Path,
    inputs_path: str | Path,
    target: str = "cpu",
    atol: float | dict[str, float] | None = None,
    rtol: float | dict[str, float] | None = None,
) -> VerifyReport:
    """Compile an arbitrary ONNX model for `target` in memory and compare every output with onnxruntime,
    on inputs from an npz keyed by input name (what `reduce` writes)."""
    from harmonizer_deploy.conversion.convert import check_onnx_file

    spec = load_target(target)
    model = check_onnx_file(Path(model_path))
    feeds = load_named_inputs(inputs_path)
    wanted = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    missing = [n for n in wanted if n not in feeds]
    if missing:
        raise HarmonizerError(f"{inputs_path} lacks inputs {missing}", "pass the npz written with this model")
    feeds = {n: feeds[n] for n in wanted}
    tolerances = Tolerances.build(spec, atol, rtol, [o.name for o in model.graph.output])
    stats = _compare(model, feeds, TargetRunner(spec), tolerances)
    return VerifyReport(target=spec.name, backend=spec.backend, artifact_dir=str(model_path),
                        passed=all(s["passed"] for s in stats), outputs=stats, num_inputs=1, seed=None,
                        input_shapes=[list(a.shape) for a in feeds.values()])
