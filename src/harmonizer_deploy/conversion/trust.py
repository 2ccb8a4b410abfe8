"""A SavedModel is a program: before any of it runs, look at every op it could run and refuse side effects.

`convert` (and every command that loads a SavedModel) runs the model's graph in TensorFlow. A hostile graph can
write or read files (WriteFile, ReadFile, MatchingFiles, summary writers, dataset savers), run Python (PyFunc), or
talk to the network. We parse `saved_model.pb` *before* TensorFlow loads it, walk the main graph and the whole
function library, and refuse these ops by name unless the user passes `--trust-model`.

Checkpoint ops (SaveV2, RestoreV2, MergeV2Checkpoints) are normal in a SavedModel, but only in the functions its
`saver_def` points to (what the loader itself uses); anywhere else they write or read arbitrary files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harmonizer_deploy.core.errors import HarmonizerError

TRUST_FIX = ("use a model from a source you trust; if you trust this one, `convert --trust-model` runs it (other "
             "commands never run such a model)")

# Ops that touch files, run Python, print to files or reach the network: refused wherever they appear.
SIDE_EFFECT_OPS = frozenset({
    # files
    "WriteFile", "ReadFile", "MatchingFiles", "ImmutableConst", "DecodeProtoV2", "EncodeProto",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2", "LoadAndRemapMatrix", "GenerateVocabRemapping",
    "Save", "SaveSlices", "Restore", "RestoreSlice", "RecordInput",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2", "TFRecordReader",
    "TFRecordReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LMDBReader", "IdentityReader",
    "IdentityReaderV2", "ReaderRead", "ReaderReadV2", "ReaderReadUpTo", "ReaderReadUpToV2", "ReaderRestoreState",
    "ReaderRestoreStateV2", "ReaderSerializeState", "ReaderSerializeStateV2",
    "TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset", "FixedLengthRecordDataset",
    "FixedLengthRecordDatasetV2", "LMDBDataset", "ExperimentalLMDBDataset", "DatasetToTFRecord",
    "ExperimentalDatasetToTFRecord", "SaveDataset", "SaveDatasetV2", "LoadDataset", "ExperimentalLoadDataset",
    "SnapshotDataset", "SnapshotDatasetV2", "SnapshotDatasetReader", "SnapshotNestedDatasetReader",
    "CacheDataset", "CacheDatasetV2", "SqlDataset", "ExperimentalSqlDataset", "MatchingFilesDataset",
    "ExperimentalMatchingFilesDataset",
    # summaries (event files)
    "CreateSummaryFileWriter", "CreateSummaryDbWriter", "SummaryWriter", "WriteSummary", "WriteScalarSummary",
    "WriteHistogramSummary", "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary",
    "WriteRawProtoSummary", "ImportEvent", "FlushSummaryWriter", "CloseSummaryWriter",
    # Python and debugging hooks
    "PyFunc", "PyFuncStateless", "EagerPyFunc", "DebugIdentity", "DebugIdentityV2", "DebugIdentityV3",
    "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2",
    # network
    "Rpc", "TryRpc", "RpcCall", "RpcClient", "RpcServer", "RpcServerStart", "RpcServerRegister",
    "DataServiceDataset", "DataServiceDatasetV2", "DataServiceDatasetV3", "DataServiceDatasetV4",
    "CollectiveReduce", "CollectiveReduceV2", "CollectiveGather", "CollectiveGatherV2", "CollectiveBcastSend",
    "CollectiveBcastRecv", "CollectiveBcastSendV2", "CollectiveBcastRecvV2", "CollectiveAllToAllV2",
    "CollectiveAllToAllV3",
})
# Checkpoint I/O: allowed only in what the SavedModel's saver_def uses.
CHECKPOINT_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints"})
PRINT_TO_FILE_OPS = frozenset({"PrintV2"})  # refused when `output_stream` names a file


@dataclass(frozen=True)
class Finding:
    op: str
    where: str  # "graph" or the function name

    def __str__(self) -> str:
        return f"{self.op} (in {self.where})"


def _functions_called(node: Any) -> set[str]:
    """Names of library functions a NodeDef refers to (PartitionedCall's `f`, If/While branches, ...)."""
    names = set()
    for value in node.attr.values():
        if value.HasField("func"):
            names.add(value.func.name)
        names.update(f.name for f in value.list.func)
    if node.op and not node.op[0].islower():  # a node whose op is itself a library function
        names.add(node.op)
    return names


def _reachable(roots: set[str], calls: dict[str, set[str]]) -> set[str]:
    seen, stack = set(), [r for r in roots if r in calls]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(c for c in calls.get(name, ()) if c in calls and c not in seen)
    return seen


def _is_file_print(node: Any) -> bool:
    stream = node.attr["output_stream"].s.decode(errors="replace") if "output_stream" in node.attr else ""
    return stream.startswith("file://")


def _node_findings(nodes: Any, where: str, checkpoint_ok: bool) -> list[Finding]:
    found = []
    for node in nodes:
        if node.op in SIDE_EFFECT_OPS or (node.op in CHECKPOINT_OPS and not checkpoint_ok) \
                or (node.op in PRINT_TO_FILE_OPS and _is_file_print(node)):
            found.append(Finding(node.op, where))
    return found


def scan_graph(meta_graph: Any) -> list[Finding]:
    """Side-effect ops in one MetaGraphDef: its graph and every function of its library."""
    graph = meta_graph.graph_def
    library = {f.signature.name: f for f in graph.library.function}
    calls = {name: set().union(*(_functions_called(n) for n in f.node_def)) if f.node_def else set()
             for name, f in library.items()}
    saver = meta_graph.saver_def
    saver_nodes = {n.split(":")[0].lstrip("^") for n in (saver.save_tensor_name, saver.restore_op_name) if n}
    saver_nodes -= {t.name.split(":")[0] for sig in meta_graph.signature_def.values()
                    for t in (*sig.inputs.values(), *sig.outputs.values())}  # a signature is never the saver
    saver_roots, model_roots = set(), set(meta_graph.object_graph_def.concrete_functions)
    for node in graph.node:
        (saver_roots if node.name in saver_nodes else model_roots).update(_functions_called(node))
    model_roots |= set(library) - _reachable(saver_roots, calls)  # anything not the saver's counts as the model's
    saver_only = _reachable(saver_roots, calls) - _reachable(model_roots, calls)
    found = _node_findings([n for n in graph.node if n.name not in saver_nodes], "graph", checkpoint_ok=False)
    found += _node_findings([n for n in graph.node if n.name in saver_nodes], "saver", checkpoint_ok=True)
    for name, function in library.items():
        found += _node_findings(function.node_def, name, checkpoint_ok=name in saver_only)
    return found


def scan_saved_model(path: Path) -> list[Finding]:
    """Every side-effect op of the SavedModel at `path`, read from saved_model.pb without loading it."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    pb = path / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    try:
        proto.ParseFromString(pb.read_bytes())
    except (OSError, DecodeError, ValueError) as exc:
        raise HarmonizerError(f"cannot read SavedModel {path}: {pb.name} is not a SavedModel protobuf ({exc})",
                              "re-export the SavedModel") from exc
    found: list[Finding] = []
    for meta_graph in proto.meta_graphs:
        found += scan_graph(meta_graph)
    return found


def check_saved_model(path: Path, trust_model: bool = False) -> None:
    """Refuse, before TensorFlow loads it, a SavedModel whose graph has side effects (unless trusted)."""
    if trust_model:
        return
    if found := scan_saved_model(path):
        names = sorted({f.op for f in found})
        raise HarmonizerError(
            f"SavedModel {path} contains ops with side effects that would run during conversion: "
            f"{', '.join(names)} (first: {found[0]})", TRUST_FIX)
