"""The pack's converters for ops TVM 0.27's Relax ONNX frontend lacks or gets wrong: the "misc" group.

Missing in TVM: RotaryEmbedding, TensorScatter, TfIdfVectorizer (integer pools), Det, MelWeightMatrix and, from
ai.onnx.ml, TreeEnsemble, ArrayFeatureExtractor and Binarizer. Wrong in TVM: BatchNormalization with
training_mode=1 (running mean/var outputs); float16 MatMul and Softmax (accumulated in float16, so the float16
`_expanded` Attention cases drift past rtol 1e-3). Everything that depends on runtime data is a Relax graph; only
attributes (n-gram pools, tree structure) are read at import time. MelWeightMatrix, whose inputs are all
constants in every model that uses it, is folded into a constant (constant folding).

pack.py merges `CONVERTERS` into its own table; the shared helpers come from pack.py (imported at the bottom
of this module, so either module may be imported first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.frontend.hook import ConvertContext, Converter, ConverterKey

# ------------------------------------------------------------------------------------------ RotaryEmbedding


def rotary_embedding(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """RotaryEmbedding (opset 23): rotate the first rotary_embedding_dim features of each head.

    X is [b, heads, s, d] or [b, s, heads * d]; the caches are [b, s, dim/2] without position_ids, or
    [max_pos, dim/2] indexed by position_ids [b, s]. Halves (default) or even/odd pairs (interleaved).
    """
    relax = _relax()
    x, cos, sin = inputs[0], inputs[1], inputs[2]
    pos = _opt(inputs, 3)
    shape = _shape(x)
    four_d = len(shape) == 4
    if four_d:
        b, heads, s, d = shape
        x4 = bb.emit(relax.op.permute_dims(x, [0, 2, 1, 3]))  # [b, s, heads, d]
    else:
        heads = int(attrs.get("num_heads", 0))
        if heads <= 0:
            raise HarmonizerError(
                "RotaryEmbedding on a 3D input needs the num_heads attribute",
                "set num_heads on the node (the exporter should have)",
            )
        b, s, hidden = shape
        d = hidden // heads
        x4 = bb.emit(relax.op.reshape(x, [b, s, heads, d]))
    rot = int(attrs.get("rotary_embedding_dim", 0)) or d
    half = rot // 2
    if pos is not None:
        # position_ids are runtime data: clip, never read past the cache ("fast" take has no bounds check)
        cos = relax.op.take(cos, pos, axis=0, mode="clip")
        sin = relax.op.take(sin, pos, axis=0, mode="clip")
    cos = bb.emit(relax.op.expand_dims(cos, 2))  # [b, s, 1, half]
    sin = bb.emit(relax.op.expand_dims(sin, 2))
    x_rot = relax.op.strided_slice(x4, [3], [0], [rot]) if rot < d else x4
    if attrs.get("interleaved", 0):
        pairs = bb.emit(relax.op.reshape(x_rot, [b, s, heads, half, 2]))
        x1 = relax.op.squeeze(relax.op.strided_slice(pairs, [4], [0], [1]), [4])
        x2 = relax.op.squeeze(relax.op.strided_slice(pairs, [4], [1], [2]), [4])
    else:
        x1 = relax.op.strided_slice(x_rot, [3], [0], [half])
        x2 = relax.op.strided_slice(x_rot, [3], [half], [rot])
    x1, x2 = bb.emit(x1), bb.emit(x2)
    real = relax.op.subtract(relax.op.multiply(cos, x1), relax.op.multiply(sin, x2))
    imag = relax.op.add(relax.op.multiply(sin, x1), relax.op.multiply(cos, x2))
    if attrs.get("interleaved", 0):
        pairs = relax.op.stack([real, imag], axis=4)
        rotated = relax.op.reshape(pairs, [b, s, heads, rot])
    else:
        rotated = relax.op.concat([real, imag], axis=3)
    if rot < d:
        rotated = relax.op.concat([rotated, relax.op.strided_slice(x4, [3], [rot], [d])], axis=3)
    out = bb.emit(rotated)
    if four_d:
        return relax.op.permute_dims(out, [0, 2, 1, 3])
    return relax.op.reshape(out, shape)


# -------------------------------------------------------------------------------------------- TensorScatter


def tensor_scatter(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """TensorScatter (opset 24): write `update` into the cache along `axis` at write_indices[batch] onward.

    Each cache position p along the axis takes update[p - w[b]] when 0 <= p - w[b] < len (mod the cache length
    in circular mode) and keeps the cache value otherwise: a gather plus a select, all runtime data.
    """
    relax = _relax()
    cache, update = inputs[0], inputs[1]
    writes = _opt(inputs, 2)
    shape, ushape = _shape(cache), _shape(update)
    rank = len(shape)
    axis = int(attrs.get("axis", -2))
    axis = axis + rank if axis < 0 else axis
    mode = attrs.get("mode", "linear")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("linear", "circular"):
        raise HarmonizerError(f"TensorScatter mode {mode!r} is not an ONNX mode", "use 'linear' or 'circular'")
    if axis == 0:
        raise HarmonizerError("TensorScatter axis 0 is the batch axis", "scatter along a sequence axis (axis >= 1)")
    length, count = shape[axis], ushape[axis]
    view = [1] * rank
    view[axis] = length
    positions = relax.const(np.arange(length, dtype=np.int64).reshape(view), "int64")
    if writes is None:
        offset = relax.const(np.zeros([shape[0]] + [1] * (rank - 1), np.int64), "int64")
    else:
        offset = relax.op.reshape(relax.op.astype(writes, "int64"), [shape[0]] + [1] * (rank - 1))
    src = bb.emit(relax.op.subtract(positions, offset))  # [b, 1.., length, 1..]
    if mode == "circular":
        n = relax.const(length, "int64")
        src = bb.emit(relax.op.floor_mod(relax.op.add(relax.op.floor_mod(src, n), n), n))
    inside = relax.op.logical_and(
        relax.op.greater_equal(src, relax.const(0, "int64")), relax.op.less(src, relax.const(count, "int64"))
    )
    index = relax.op.clip(src, 0, max(count - 1, 0))
    gather_shape = list(shape)
    index = bb.emit(relax.op.broadcast_to(index, gather_shape))
    if count == 0:
        return cache
    # gather_elements needs the data's non-axis dims to match the index's, which they do (only the axis differs).
    gathered = bb.emit(relax.op.gather_elements(update, index, axis))
    return relax.op.where(relax.op.broadcast_to(inside, gather_shape), gathered, cache)


# ------------------------------------------------------------------------------------------ TfIdfVectorizer


def _ngram_pool(attrs: dict) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], int]:
    """The pool as [(n, grams[P, n], output column[P])] for each n in [min, max]; and the output size."""
    pool = attrs.get("pool_int64s")
    if pool is None:
        raise HarmonizerError(
            "TfIdfVectorizer with pool_strings needs string tensors, which TVM cannot represent",
            "map the tokens to integer ids before the vectorizer (pool_int64s)",
        )
    pool = np.asarray(pool, np.int64)
    counts = [int(c) for c in attrs.get("ngram_counts", [])]
    indexes = np.asarray(attrs.get("ngram_indexes", []), np.int64)
    lo, hi = int(attrs.get("min_gram_length", 1)), int(attrs.get("max_gram_length", 1))
    if indexes.size and indexes.min() < 0:
        raise HarmonizerError("TfIdfVectorizer has a negative ngram_index", "output indexes start at 0")
    out, gram_id = [], 0  # n-grams are numbered in pool order over every size, used or not
    for i, start in enumerate(counts):
        n = i + 1
        end = counts[i + 1] if i + 1 < len(counts) else len(pool)
        if not 0 <= start <= end <= len(pool) or (end - start) % n:
            raise HarmonizerError(
                f"TfIdfVectorizer ngram_counts {counts} do not split the pool of {len(pool)} into whole {n}-grams",
                "fix ngram_counts (the start of each n-gram size in the pool)",
            )
        grams = pool[start:end].reshape(-1, n) if end > start else np.zeros((0, n), np.int64)
        ids = np.arange(gram_id, gram_id + len(grams))
        gram_id += len(grams)
        if len(indexes) < gram_id:
            raise HarmonizerError(
                f"TfIdfVectorizer has {len(indexes)} ngram_indexes for at least {gram_id} pooled n-grams",
                "give one output index per pooled n-gram",
            )
        if lo <= n <= hi and len(grams):
            out.append((n, grams, indexes[ids]))
    size = int(indexes.max()) + 1 if indexes.size else 0
    return out, size


def tfidf_vectorizer(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """TfIdfVectorizer over integer tokens: count each pooled n-gram in sliding (skip) windows, then weight.

    For every n-gram size n and skip distance d (1..max_skip_count+1; unigrams once), the n shifted windows
    X[:, k*d : k*d + C-(n-1)d] are compared with the pool's grams ([B, L, P] booleans); the matches summed
    over L are the counts, spread to their output columns by a constant one-hot matmul.
    """
    relax = _relax()
    x = inputs[0]
    grams_by_n, size = _ngram_pool(attrs)
    one_d = _ndim(x) == 1
    if _ndim(x) not in (1, 2):
        raise HarmonizerError(f"TfIdfVectorizer input has rank {_ndim(x)}", "give it [C] or [B, C] tokens")
    x2 = bb.emit(relax.op.expand_dims(x, 0)) if one_d else x
    rows, cols = _shape(x2)
    x2 = bb.emit(relax.op.astype(x2, "int64"))
    max_skip = int(attrs.get("max_skip_count", 0))
    total = None
    for n, grams, columns in grams_by_n:
        gram_consts = [relax.const(grams[:, k].reshape(1, 1, -1), "int64") for k in range(n)]
        spread = np.zeros((len(grams), size), np.float32)
        spread[np.arange(len(grams)), columns] = 1.0
        distances = [1] if n == 1 else range(1, max_skip + 2)
        for d in distances:
            span = cols - (n - 1) * d
            if span <= 0:
                continue
            match = None
            for k in range(n):
                window = relax.op.strided_slice(x2, [1], [k * d], [k * d + span])
                hit = relax.op.equal(relax.op.expand_dims(window, 2), gram_consts[k])  # [B, L, P]
                match = hit if match is None else relax.op.logical_and(match, hit)
            counts = relax.op.sum(relax.op.astype(match, "float32"), axis=[1])  # [B, P]
            term = bb.emit(relax.op.matmul(counts, relax.const(spread)))
            total = term if total is None else bb.emit(relax.op.add(total, term))
    if total is None:
        total = relax.op.zeros([rows, size], "float32")
    mode = attrs.get("mode", b"TF")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    weights = attrs.get("weights")
    w = None
    if weights is not None and len(weights):
        # weights[k] belongs to the k-th n-gram of the pool (the spec, and onnxruntime), so to column indexes[k];
        # onnx.reference reads weights[column] instead, which agrees only when ngram_indexes is the identity.
        indexes = np.asarray(attrs.get("ngram_indexes", []), np.int64)
        per_column = np.zeros(size, np.float32)
        per_column[indexes[: len(weights)]] = np.asarray(weights, np.float32)[: len(indexes)]
        w = relax.const(per_column, "float32")
    if mode == "IDF":
        present = relax.op.astype(relax.op.greater(total, relax.const(0.0, "float32")), "float32")
        total = relax.op.multiply(present, w) if w is not None else present
    elif mode == "TFIDF":
        total = relax.op.multiply(total, w) if w is not None else total
    elif mode != "TF":
        raise HarmonizerError(f"TfIdfVectorizer mode {mode!r} is not an ONNX mode", "use TF, IDF or TFIDF")
    total = bb.emit(total)
    return relax.op.reshape(total, [size]) if one_d else total


# --------------------------------------------------------------------------------------------------- Det


def det(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Det of [..., n, n]: Gaussian elimination with partial pivoting, unrolled over the static n.

    Each step picks the largest |pivot| at or below the diagonal (argmax), swaps it up with a rank-one update
    (a sign flip per real swap), and eliminates below it. float32 inputs are computed in float64.
    """
    relax = _relax()
    a = inputs[0]
    shape, in_dt = _shape(a), _dtype(a)
    n = shape[-1]
    batch = shape[:-2]
    if len(shape) < 2 or shape[-2] != n:
        raise HarmonizerError(f"Det needs square matrices [..., n, n], got shape {shape}", "fix the model's input")
    dt = "float64" if in_dt in ("float32", "float64") else "float32"
    a = bb.emit(relax.op.astype(a, dt)) if dt != in_dt else a
    rows = np.arange(n)
    col_view = [1] * len(batch) + [n, 1]
    det_val = relax.op.ones(batch, dt) if batch else relax.const(1.0, dt)
    det_val = bb.emit(det_val)
    for k in range(n):
        column = relax.op.squeeze(relax.op.strided_slice(a, [len(shape) - 1], [k], [k + 1]), [len(shape) - 1])
        below = relax.const((rows >= k).astype(dt), dt)
        score = relax.op.subtract(relax.op.multiply(relax.op.abs(column), below), relax.const(1.0 - (rows >= k), dt))
        p = bb.emit(relax.op.argmax(score, axis=-1, keepdims=True))  # [..., 1]
        at_p = bb.emit(relax.op.astype(relax.op.equal(relax.const(rows, "int64"), p), dt))  # [..., n]
        e_k = relax.const(np.eye(n, dtype=dt)[k], dt)
        row_p = bb.emit(relax.op.sum(relax.op.multiply(a, relax.op.expand_dims(at_p, -1)), axis=[-2]))  # [..., n]
        row_k = relax.op.squeeze(relax.op.strided_slice(a, [len(shape) - 2], [k], [k + 1]), [len(shape) - 2])
        swap = relax.op.multiply(
            relax.op.expand_dims(relax.op.subtract(e_k, at_p), -1),
            relax.op.expand_dims(relax.op.subtract(row_p, row_k), -2),
        )
        a = bb.emit(relax.op.add(a, swap))
        pivot = bb.emit(relax.op.squeeze(relax.op.strided_slice(row_p, [len(shape) - 2], [k], [k + 1]), [-1]))
        swapped = relax.op.not_equal(relax.op.squeeze(p, [-1]), relax.const(k, "int64"))
        sign = relax.op.where(swapped, relax.const(-1.0, dt), relax.const(1.0, dt))
        det_val = bb.emit(relax.op.multiply(det_val, relax.op.multiply(sign, pivot)))
        if k == n - 1:
            break
        zero = relax.op.equal(pivot, relax.const(0.0, dt))
        safe = relax.op.where(zero, relax.const(1.0, dt), pivot)
        col_k = relax.op.strided_slice(a, [len(shape) - 1], [k], [k + 1])  # [..., n, 1]
        factors = relax.op.multiply(
            relax.op.divide(col_k, relax.op.reshape(safe, [*batch, 1, 1])),
            relax.const((rows > k).astype(dt).reshape(col_view), dt),
        )
        a = bb.emit(relax.op.subtract(a, relax.op.multiply(factors, relax.op.expand_dims(row_p, -2))))
    return relax.op.astype(det_val, in_dt) if dt != in_dt else det_val


# --------------------------------------------------------------------------------------- BatchNormalization


def _bn_training(node: Any, graph: Any) -> bool:
    """Only BatchNormalization with training_mode=1 (inference goes to TVM's converter)."""
    return any(a.name == "training_mode" and a.i == 1 for a in node.attribute)


def batch_norm_training(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """BatchNormalization training_mode=1: Y from the batch statistics, running mean/var updated by momentum.

    TVM returns the input mean/var as the running outputs. Variance is the population variance, as the
    reference computes it.
    """
    relax = _relax()
    x, scale, bias, mean, var = inputs[:5]
    rank = _ndim(x)
    axes = [0, *range(2, rank)]
    eps = float(attrs.get("epsilon", 1e-5))
    momentum = float(attrs.get("momentum", 0.9))
    dt = _dtype(x)
    view = [-1] + [1] * (rank - 2)
    batch_mean = bb.emit(relax.op.mean(x, axes, keepdims=True))
    centered = bb.emit(relax.op.subtract(x, batch_mean))
    batch_var = bb.emit(relax.op.mean(relax.op.multiply(centered, centered), axes, keepdims=True))
    inv = relax.op.rsqrt(relax.op.add(batch_var, relax.const(eps, dt)))
    y = relax.op.add(
        relax.op.multiply(relax.op.multiply(centered, inv), relax.op.reshape(scale, view)),
        relax.op.reshape(bias, view),
    )
    m, one_m = relax.const(momentum, dt), relax.const(1.0 - momentum, dt)
    flat_mean = relax.op.reshape(batch_mean, [_shape(x)[1]])
    flat_var = relax.op.reshape(batch_var, [_shape(x)[1]])
    run_mean = relax.op.add(relax.op.multiply(mean, m), relax.op.multiply(flat_mean, one_m))
    run_var = relax.op.add(relax.op.multiply(var, m), relax.op.multiply(flat_var, one_m))
    return relax.Tuple([bb.emit(y), bb.emit(run_mean), bb.emit(run_var)])


batch_norm_training.applies_to = _bn_training  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ MelWeightMatrix


def mel_weight_matrix(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """MelWeightMatrix from constant inputs, folded at import time (all five inputs are scalars that exporters
    write as constants; a runtime one is refused). Triangular filters on the HTK mel scale, as the spec defines."""
    import onnx

    relax = _relax()
    names = ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz")
    vals = [
        np.asarray(_const_value(v, f"MelWeightMatrix {n}", ctx)).reshape(-1)[0]
        for v, n in zip(inputs[:5], names, strict=True)
    ]
    bins, dft, rate = int(vals[0]), int(vals[1]), int(vals[2])
    low, high = vals[3], vals[4]
    spectrum = dft // 2 + 1
    points = np.arange(0, bins + 2)
    low_mel = 2595 * np.log1p(low / 700) / np.log(10)
    high_mel = 2595 * np.log1p(high / 700) / np.log(10)
    step = (high_mel - low_mel) / points.shape[0]
    hz = 700 * np.expm1((points * step + low_mel) / 2595 * np.log(10))
    edges = (((dft + 1) * hz) // rate).astype(int)
    out = np.zeros((spectrum, bins))
    for i in range(bins):
        left, centre, right = edges[i], edges[i + 1], edges[i + 2]
        if centre == left:
            out[centre, i] = 1
        else:
            j = np.arange(left, centre + 1)
            out[j, i] = (j - left) / float(centre - left)
        if right > centre:
            j = np.arange(centre, right)
            out[j, i] = (right - j) / float(right - centre)
    dt = onnx.helper.tensor_dtype_to_np_dtype(int(attrs.get("output_datatype", onnx.TensorProto.FLOAT)))
    return relax.const(out.astype(dt), str(np.dtype(dt)))


# ------------------------------------------------------------------------------------------------ ai.onnx.ml


def binarizer(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """Binarizer: 1 where x > threshold, else 0, in x's type."""
    relax = _relax()
    x = inputs[0]
    dt = _dtype(x)
    above = relax.op.greater(x, relax.const(float(attrs.get("threshold", 0.0)), dt))
    return relax.op.astype(above, dt)


def array_feature_extractor(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """ArrayFeatureExtractor: X[..., indices] with the indices flattened; a 1-D X gives one row [1, k]."""
    relax = _relax()
    x, idx = inputs[0], inputs[1]
    count = int(np.prod(_shape(idx)))
    flat = relax.op.reshape(relax.op.astype(idx, "int64"), [count])
    shape = _shape(x)
    try:
        known = np.asarray(_const_value(idx, "ArrayFeatureExtractor indices", ctx)).reshape(-1)
    except ValueError:
        known = None  # runtime indices: clipped below, never read out of bounds
    if known is not None and known.size and (known.min() < -shape[-1] or known.max() >= shape[-1]):
        raise HarmonizerError(
            f"ArrayFeatureExtractor index {int(known.max())} is out of range for {shape[-1]} features",
            "fix the indices initializer of the node",
        )
    picked = bb.emit(relax.op.take(x, flat, axis=len(shape) - 1, mode="wrap" if known is not None else "clip"))
    return relax.op.reshape(picked, [1, count]) if len(shape) == 1 else picked


_TREE_MODES = ("LEQ", "LT", "GTE", "GT", "EQ", "NEQ", "MEMBER")


def _ints(attrs: dict, name: str, default: list | None = None) -> list[int]:
    value = attrs.get(name, default)
    return [int(v) for v in np.asarray(value if value is not None else [], np.int64).reshape(-1)]


def _floats(attrs: dict, name: str) -> np.ndarray:
    value = attrs.get(name)
    if value is None:
        return np.zeros(0)
    if hasattr(value, "numpy"):
        value = value.numpy()
    elif hasattr(value, "raw_data") or hasattr(value, "dims"):
        from onnx import numpy_helper

        value = numpy_helper.to_array(value)
    return np.asarray(value, np.float64).reshape(-1)


def _leaf_paths(attrs: dict) -> list[tuple[int, list[tuple[int, bool]]]]:
    """(leaf index, [(node, took the true branch)]) for every leaf reachable from each tree root."""
    true_ids, false_ids = _ints(attrs, "nodes_truenodeids"), _ints(attrs, "nodes_falsenodeids")
    true_leaf, false_leaf = _ints(attrs, "nodes_trueleafs"), _ints(attrs, "nodes_falseleafs")
    out: list[tuple[int, list[tuple[int, bool]]]] = []
    for root in _ints(attrs, "tree_roots"):
        if true_leaf[root] and false_leaf[root] and true_ids[root] == false_ids[root]:
            out.append((true_ids[root], []))  # a tree that is a single leaf
            continue
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if len(path) > len(true_ids):
                raise HarmonizerError("TreeEnsemble has a cycle in its node links", "re-export the model")
            for branch, ids, leafs in ((True, true_ids, true_leaf), (False, false_ids, false_leaf)):
                step = [*path, (node, branch)]
                if leafs[node]:
                    out.append((ids[node], step))
                else:
                    stack.append((ids[node], step))
    return out


def _check_tree(attrs: dict, columns: int) -> None:
    """Refuse a malformed ensemble (ids out of range) before any of it is read: one line, not an IndexError."""
    nodes = len(_ints(attrs, "nodes_featureids"))
    leaves = len(_floats(attrs, "leaf_weights"))
    fields = (
        "nodes_modes",
        "nodes_splits",
        "nodes_truenodeids",
        "nodes_falsenodeids",
        "nodes_trueleafs",
        "nodes_falseleafs",
    )
    sizes = [len(_floats(attrs, f)) if f in ("nodes_modes", "nodes_splits") else len(_ints(attrs, f)) for f in fields]
    problems = [f"{f} has {n} entries for {nodes} nodes" for f, n in zip(fields, sizes, strict=True) if n != nodes]
    if len(_ints(attrs, "leaf_targetids")) != leaves:
        problems.append("leaf_targetids and leaf_weights differ in length")
    if any(not 0 <= f < columns for f in _ints(attrs, "nodes_featureids")):
        problems.append(f"a feature id is outside the input's {columns} columns")
    if any(not 0 <= r < nodes for r in _ints(attrs, "tree_roots")):
        problems.append("a tree root is not a node")
    if not problems:
        for ids, is_leaf in (("nodes_truenodeids", "nodes_trueleafs"), ("nodes_falsenodeids", "nodes_falseleafs")):
            for i, leaf in zip(_ints(attrs, ids), _ints(attrs, is_leaf), strict=True):
                if not 0 <= i < (leaves if leaf else nodes):
                    problems.append(f"{ids} points past the {'leaves' if leaf else 'nodes'}")
                    break
    modes = _floats(attrs, "nodes_modes").astype(int)
    if any(not 0 <= m < len(_TREE_MODES) for m in modes):
        problems.append("a node mode is not one of the 7 ONNX modes")
    if problems:
        raise HarmonizerError(f"TreeEnsemble is malformed: {problems[0]}", "re-export the model")


def tree_ensemble(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """ai.onnx.ml TreeEnsemble (opset 5): every node's test evaluated at once, leaves reached by path counting.

    The tree structure is attributes (static): node tests become one [B, nodes] boolean tensor; a leaf is reached
    when none of the tests on its path disagrees (a constant [nodes, leaves] matmul); leaf weights are then summed,
    averaged, or min/max-ed per target. Set membership values are read in node order, as the spec lists them.
    """
    relax = _relax()
    x = inputs[0]
    dt = _dtype(x)
    rows = _shape(x)[0]
    features = _ints(attrs, "nodes_featureids")
    _check_tree(attrs, _shape(x)[1])
    modes_raw = _floats(attrs, "nodes_modes").astype(int)
    splits = _floats(attrs, "nodes_splits")
    missing = _ints(attrs, "nodes_missing_value_tracks_true") or [0] * len(features)
    members = _floats(attrs, "membership_values")
    post = int(attrs.get("post_transform", 0))
    if post != 0:
        raise HarmonizerError(
            f"TreeEnsemble post_transform={post} is not supported by the converter pack",
            "apply the transform as separate ONNX ops after the ensemble (post_transform=0)",
        )
    sets = iter(np.split(members, np.flatnonzero(np.isnan(members)) + 1)) if members.size else iter(())
    feats = bb.emit(relax.op.take(x, relax.const(np.asarray(features, np.int64)), axis=1))  # [B, N]
    tests = []
    for i, mode in enumerate(modes_raw):
        f = relax.op.strided_slice(feats, [1], [i], [i + 1])
        if _TREE_MODES[mode] == "MEMBER":
            values = [v for v in next(sets, np.zeros(0)) if not np.isnan(v)]
            hit = relax.op.equal(f, relax.const(np.asarray(values, dtype=dt).reshape(1, -1), dt))
            t = relax.op.max(relax.op.astype(hit, "int32"), axis=[1], keepdims=True) if values else None
            t = relax.op.greater(t, relax.const(0, "int32")) if t is not None else relax.op.zeros([rows, 1], "bool")
        else:
            split = relax.const(splits[i], dt)
            op = {
                "LEQ": relax.op.less_equal,
                "LT": relax.op.less,
                "GTE": relax.op.greater_equal,
                "GT": relax.op.greater,
                "EQ": relax.op.equal,
                "NEQ": relax.op.not_equal,
            }[_TREE_MODES[mode]]
            t = op(f, split)
        if missing[i]:
            t = relax.op.logical_or(t, relax.op.isnan(f))
        tests.append(t)
    passed = bb.emit(relax.op.astype(relax.op.concat(tests, axis=1), "float32"))  # [B, N]
    paths = _leaf_paths(attrs)
    need_true = np.zeros((len(features), len(paths)), np.float32)
    need_false = np.zeros_like(need_true)
    for j, (_leaf, path) in enumerate(paths):
        for node, branch in path:
            (need_true if branch else need_false)[node, j] = 1.0
    wrong = relax.op.add(
        relax.op.matmul(relax.op.subtract(relax.const(1.0, "float32"), passed), relax.const(need_true)),
        relax.op.matmul(passed, relax.const(need_false)),
    )
    reached = bb.emit(relax.op.equal(wrong, relax.const(0.0, "float32")))  # [B, leaves]
    leaf_weights = _floats(attrs, "leaf_weights")
    leaf_targets = _ints(attrs, "leaf_targetids")
    targets = int(attrs.get("n_targets", max(leaf_targets) + 1 if leaf_targets else 1))
    weights = np.asarray([leaf_weights[leaf] for leaf, _ in paths])
    target_of = np.asarray([leaf_targets[leaf] for leaf, _ in paths])
    one_hot = np.zeros((len(paths), targets))
    one_hot[np.arange(len(paths)), target_of] = 1.0
    agg = int(attrs.get("aggregate_function", 1))
    if agg in (0, 1):
        scale = 1.0 / len(_ints(attrs, "tree_roots")) if agg == 0 else 1.0
        contrib = relax.const((weights[:, None] * one_hot * scale).astype(dt), dt)
        return relax.op.matmul(relax.op.astype(reached, dt), contrib)
    if agg not in (2, 3):
        raise HarmonizerError(f"TreeEnsemble aggregate_function={agg} is not an ONNX value", "use 0, 1, 2 or 3")
    start = np.finfo(np.dtype(dt)).max if agg == 2 else np.finfo(np.dtype(dt)).min
    table = np.where(one_hot > 0, weights[:, None], start).astype(dt)  # [leaves, targets]
    hit = relax.op.expand_dims(reached, 2)
    cand = relax.op.where(hit, relax.const(table[None], dt), relax.const(np.asarray(start, dt), dt))
    best = relax.op.min(cand, axis=[1]) if agg == 2 else relax.op.max(cand, axis=[1])
    # A target no reached leaf votes for is 0, as onnxruntime gives it (onnx.reference leaves the start value).
    votes = relax.op.matmul(relax.op.astype(reached, "float32"), relax.const(one_hot.astype(np.float32), "float32"))
    return relax.op.where(relax.op.greater(votes, relax.const(0.0, "float32")), best, relax.const(0.0, dt))


# ------------------------------------------------------------------------------- float16 MatMul and Softmax


_ELEM_TYPES: list[tuple[Any, dict[str, int]]] = []  # (graph, {tensor name: elem_type}): the last graph asked about


def _elem_types(graph: Any) -> dict[str, int]:
    """Every tensor's ONNX elem_type in `graph`: declared, or from shape inference of the graph as exported."""
    if _ELEM_TYPES and _ELEM_TYPES[0][0] is graph:
        return _ELEM_TYPES[0][1]
    types = {t.name: t.data_type for t in graph.initializer}
    for vi in [*_inferred(graph), *graph.value_info, *graph.output, *graph.input]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    _ELEM_TYPES[:] = [(graph, types)]
    return types


def _half_input(node: Any, graph: Any) -> bool:
    """Only nodes whose first input the ONNX graph declares (or infers) as float16/bfloat16."""
    import onnx

    return _elem_types(graph).get(node.input[0], 0) in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def _in_float32(op_type: str) -> Converter:
    """A float16/bfloat16 `op_type` computed by TVM's own converter in float32, rounded once at the end.

    Why: TVM accumulates a float16 matmul (and the softmax sum) in float16, so long dot products drift by a few
    float16 ulps; onnxruntime and numpy accumulate half precision in float32. (The `_expanded` Attention cases
    are float16 MatMul + Softmax graphs and miss rtol 1e-3 by that drift.)
    """

    def convert(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
        relax = _relax()
        out_dt = _dtype(inputs[0])
        wide = [bb.emit(relax.op.astype(x, "float32")) if _dtype(x) == out_dt else x for x in inputs]
        y = bb.emit(_builtin(op_type, ctx)(bb, wide, attrs, ctx.params))
        return relax.op.astype(y, out_dt)

    convert.__name__ = f"{op_type.lower()}_in_float32"
    convert.applies_to = _half_input  # type: ignore[attr-defined]
    return convert


def softmax_half(bb: Any, inputs: list, attrs: dict, ctx: ConvertContext) -> Any:
    """float16/bfloat16 Softmax (opset 13+): exp and its float32-accumulated sum each rounded to the half type.

    Why: TVM computes exp and the sum in float16 (a 1000-term row drifts by tens of percent). A float32 pass
    rounded once is closer to the float64 softmax but one float16 ulp off the node suite's expected outputs
    (onnx.reference rounds exp and the sum to float16); rounding those two steps meets both, within two ulps of
    the float64 softmax (tests/frontend/test_pack_misc.py). x - max stays float32: rounding it too (as the
    reference does) costs up to 1% on small probabilities.
    """
    if ctx.opset < 13:  # the old flatten-to-2D semantics: TVM's converter, in float32
        return _in_float32("Softmax")(bb, inputs, attrs, ctx)
    relax = _relax()
    x = inputs[0]
    dt = _dtype(x)
    axis = int(attrs.get("axis", -1))

    def half(expr: Any) -> Any:  # round to the half type, continue in float32
        return bb.emit(relax.op.astype(relax.op.astype(expr, dt), "float32"))

    x32 = bb.emit(relax.op.astype(x, "float32"))
    shifted = bb.emit(relax.op.subtract(x32, relax.op.max(x32, axis=[axis], keepdims=True)))
    e = half(relax.op.exp(shifted))
    total = half(relax.op.sum(e, axis=[axis], keepdims=True))
    return relax.op.astype(relax.op.divide(e, total), dt)


softmax_half.applies_to = _half_input  # type: ignore[attr-defined]


CONVERTERS: dict[ConverterKey, Converter] = {
    ("", "RotaryEmbedding"): rotary_embedding,
    ("", "TensorScatter"): tensor_scatter,
    ("", "TfIdfVectorizer"): tfidf_vectorizer,
    ("", "Det"): det,
    ("", "BatchNormalization"): batch_norm_training,
    ("", "MelWeightMatrix"): mel_weight_matrix,
    ("ai.onnx.ml", "Binarizer"): binarizer,
    ("ai.onnx.ml", "ArrayFeatureExtractor"): array_feature_extractor,
    ("ai.onnx.ml", "TreeEnsemble"): tree_ensemble,
    ("", "MatMul"): _in_float32("MatMul"),
    ("", "Softmax"): softmax_half,
}

# Imported last: pack.py imports this module for CONVERTERS, so these resolve whichever module loads first.
from harmonizer_deploy.frontend.pack import (  # noqa: E402
    _builtin,
    _const_value,
    _dtype,
    _inferred,
    _ndim,
    _opt,
    _relax,
    _shape,
)
