"""Orderless-NADE training as in Coconet: random (time, voice) cells are masked, the net predicts them.

Per example the number of masked cells d is drawn uniformly from 1..T·V and d cells are chosen at random
(Coconet's "orderless" mask); the loss is the cross-entropy summed over masked cells divided by d, the
rescaling that turns one random mask into an unbiased estimate of the orderless NADE objective.
Everything random comes from one numpy generator (plus Keras' seeded init), so a run is reproducible and a
checkpoint stores the generator state to resume exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harmonizer_deploy.core.artifacts import atomic_file, write_json
from harmonizer_deploy.core.errors import HarmonizerError, reason
from harmonizer_deploy.core.extras import require
from harmonizer_deploy.music.config import ModelConfig, load_config
from harmonizer_deploy.music.data import dataset_digest, load_dataset, to_pianoroll
from harmonizer_deploy.music.encoding import NUM_PITCHES, NUM_VOICES, model_input
from harmonizer_deploy.music.model import build_model, get_weights, load_weights_npz, set_weights

CHECKPOINT = "checkpoint.npz"
LOSSES = "losses.json"


@dataclass
class TrainSettings:
    """Everything that determines a training run (recorded in the checkpoint and the model's json)."""

    dataset: str = "music21"
    split: str = "train"
    config: str = "default"
    steps: int = 2000
    batch_size: int = 16
    crop: int = 32
    learning_rate: float = 2e-3
    final_learning_rate: float = 2e-4
    seed: int = 0
    checkpoint_every: int = 100
    init: str | None = None  # optional Coconet-named .npz to start from

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list)


def orderless_mask(rng: np.random.Generator, time_steps: int) -> np.ndarray:
    """[time, voice] 0/1 mask with d ~ U{1..T·V} cells set, chosen uniformly (Coconet's orderless mask)."""
    cells = time_steps * NUM_VOICES
    d = int(rng.integers(1, cells + 1))
    flat = np.zeros(cells, dtype=np.float32)
    flat[rng.choice(cells, size=d, replace=False)] = 1.0
    return flat.reshape(time_steps, NUM_VOICES)


def sample_batch(rng: np.random.Generator, rolls: list[np.ndarray], batch: int,
                 crop: int) -> tuple[np.ndarray, np.ndarray]:
    """(model input [B,T,46,8], target = pianoroll ++ mask [B,T,46,8]) from random crops of random pieces."""
    xs, ys = [], []
    for _ in range(batch):
        roll = rolls[int(rng.integers(len(rolls)))]
        start = int(rng.integers(roll.shape[0] - crop + 1))
        piece = roll[start : start + crop]
        mask = np.broadcast_to(orderless_mask(rng, crop)[:, None, :], piece.shape)
        xs.append(model_input(piece, mask))
        ys.append(np.concatenate([piece, mask], axis=-1))
    return np.stack(xs), np.stack(ys).astype(np.float32)


def masked_nll(y_true: Any, y_pred: Any) -> Any:
    """Per-example cross-entropy over masked cells / number of masked cells (y_true = roll ++ mask)."""
    import keras

    ops = keras.ops
    roll, mask = y_true[..., :NUM_VOICES], y_true[..., NUM_VOICES:]
    ce = -ops.sum(roll * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=2)  # [B, T, V]
    cells = mask[:, :, 0, :]
    return ops.sum(ce * cells, axis=(1, 2)) / ops.maximum(ops.sum(cells, axis=(1, 2)), 1.0)


def _learning_rate(settings: TrainSettings, step: int) -> float:
    """Cosine decay from learning_rate to final_learning_rate over the run."""
    frac = min(1.0, step / max(1, settings.steps))
    lo, hi = settings.final_learning_rate, settings.learning_rate
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * frac))


def _save_checkpoint(path: Path, model: Any, config: ModelConfig, optimizer: Any, step: int,
                     rng: np.random.Generator, settings: TrainSettings, losses: list[float]) -> None:
    arrays = {f"weights:{k}": v for k, v in get_weights(model, config).items()}
    arrays.update({f"optimizer:{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)})
    meta = {"step": step, "rng": rng.bit_generator.state, "settings": settings.to_dict(), "losses": losses}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def _load_checkpoint(path: Path) -> tuple[dict, dict[str, np.ndarray], list[np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            weights = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("weights:")}
            opt = [data[f"optimizer:{i}"] for i in range(sum(k.startswith("optimizer:") for k in data.files))]
    except (OSError, ValueError, KeyError) as exc:
        raise HarmonizerError(f"cannot read training checkpoint {path}: {reason(exc)}",
                              "delete it to start afresh") from exc
    return meta, weights, opt


def train(settings: TrainSettings, out_dir: str | Path, resume: bool = True,
          progress: Callable[[int, int, float], None] | None = None, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) into `out_dir`: checkpoint.npz every `checkpoint_every` steps, then model.npz/.toml/.json.

    `stop_after` ends this run after that many steps (checkpointed), to train in bounded sessions.
    """
    require("train", "tensorflow", *(["music21"] if settings.dataset == "music21" else []), extra="train")
    import keras

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    config = load_config(settings.config)
    pieces = [p for p in load_dataset(settings.dataset, settings.split) if p.shape[0] >= settings.crop]
    if not pieces:
        raise HarmonizerError(f"no piece in {settings.dataset} is {settings.crop} steps long", "lower --crop")
    rolls = [to_pianoroll(p) for p in pieces]

    checkpoint = _load_checkpoint(ckpt) if resume and ckpt.is_file() else None
    if checkpoint and checkpoint[0]["settings"] | {"steps": settings.steps} != settings.to_dict():
        raise HarmonizerError(
            f"checkpoint {ckpt} was written with different settings", "use the same options, or a new --out"
        )
    keras.utils.set_random_seed(settings.seed)
    model = build_model(config)
    if settings.init:
        set_weights(model, config, load_weights_npz(settings.init), source=settings.init)
    optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
    model.compile(optimizer=optimizer, loss=masked_nll)
    rng = np.random.default_rng(settings.seed)
    step, losses = 0, []
    if checkpoint:
        meta, weights, opt_values = checkpoint
        set_weights(model, config, weights, source=str(ckpt))
        optimizer.build(model.trainable_variables)
        if len(opt_values) != len(optimizer.variables):
            raise HarmonizerError(f"checkpoint {ckpt} optimizer state does not match", "delete it to start afresh")
        for var, value in zip(optimizer.variables, opt_values, strict=True):
            var.assign(value)
        rng.bit_generator.state = meta["rng"]
        step, losses = int(meta["step"]), list(meta["losses"])

    start = time.perf_counter()
    window: list[float] = []
    end = settings.steps if stop_after is None else min(settings.steps, step + stop_after)
    while step < end:
        optimizer.learning_rate.assign(_learning_rate(settings, step))
        x, y = sample_batch(rng, rolls, settings.batch_size, settings.crop)
        loss = float(model.train_on_batch(x, y))
        if not np.isfinite(loss):
            raise HarmonizerError(f"training diverged at step {step} (loss {loss})", "lower --learning-rate")
        step += 1
        window.append(loss)
        losses.append(loss)
        if progress:
            progress(step, settings.steps, float(np.mean(window[-50:])))
        if step % settings.checkpoint_every == 0 or step == end:
            _save_checkpoint(ckpt, model, config, optimizer, step, rng, settings, losses)
    seconds = time.perf_counter() - start

    final = float(np.mean(losses[-100:])) if losses else float("nan")
    weights = get_weights(model, config)
    with atomic_file(out / "model.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **weights)
    cfg_text = Path(config_path(settings.config)).read_text()
    with atomic_file(out / "model.toml") as tmp:
        tmp.write_text(cfg_text)
    write_json(out / LOSSES, {"loss": losses})
    plot_losses(losses, out / "loss.png", f"{config.name}: {settings.dataset} ({settings.split}), seed {settings.seed}")
    write_json(out / "model.json", {
        "label": f"trained: orderless-NADE, {step} steps of batch {settings.batch_size} on "
                 f"{settings.dataset} ({settings.split}), seed {settings.seed}",
        "trained": True,
        "settings": settings.to_dict(),
        "dataset_pieces": len(pieces),
        "dataset_digest": dataset_digest(pieces),
        "steps": step,
        "final_loss": final,
        "final_loss_definition": "mean training loss (masked-cell NLL per masked note) over the last 100 steps",
        "pitch_classes": NUM_PITCHES,
    })
    return TrainResult(out, step, final, seconds, losses)


def config_path(name_or_path: str) -> Path:
    from harmonizer_deploy.music.config import CONFIG_DIR

    p = Path(name_or_path)
    return p if p.suffix else CONFIG_DIR / f"{name_or_path}.toml"


def plot_losses(losses: list[float], png: str | Path, title: str = "") -> Path:
    """Training curve: every step's loss and its 50-step moving average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    k = min(50, len(losses))
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, color="0.75", lw=0.6, label="loss per step")
    ax.plot(steps[k - 1 :], smooth, color="C0", lw=1.5, label=f"{k}-step mean")
    ax.set_xlabel("step")
    ax.set_ylabel("masked-note NLL (nats)")
    ax.set_ylim(0, min(4.0, max(losses) * 1.05))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_file(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(png)
