"""Model hyper-parameters live in TOML files (model_configs/), never in code."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harmonizer_deploy.core.errors import HarmonizerError, reason

CONFIG_DIR = Path(__file__).parent / "model_configs"


@dataclass(frozen=True)
class ModelConfig:
    """Coconet architecture: a 3×3 conv in→F, L−3 3×3 convs F→F, a 2×2 conv F→F, a 2×2 conv F→4."""

    name: str
    num_layers: int = 16
    num_filters: int = 64
    # Depthwise-separable convolutions after the first `num_initial_regular_conv_layers` layers.
    separable: bool = False
    num_initial_regular_conv_layers: int = 0
    sep_conv_depth_multiplier: int = 1
    # Dilation (time, pitch) per layer, cycled over the 3×3 layers after the first; empty = no dilation.
    dilations: tuple[tuple[int, int], ...] = ()
    # Layers whose pointwise convolution is split into `num_pointwise_splits` dense groups (Bach Doodle).
    pointwise_split_layers: tuple[int, ...] = ()
    num_pointwise_splits: int = 4
    batch_norm_epsilon: float = 1e-7
    # Bach Doodle convention: the network is fed 1 - mask (mask marks known context).
    mask_indicates_context: bool = False
    use_residual: bool = True
    # Custom layers of the harmonizer variants (custom_ops/layers.py); -1 = not used.
    melody_attention_after: int = -1  # MelodyHarmonyAttention after this conv layer
    attention_key_dim: int = 8
    logsumexp_pool_after: int = -1  # CausalLogSumExpPool (TF CumulativeLogsumexp) after this conv layer
    pitch_range_softmax: bool = False  # PitchMaskedSoftmax instead of the plain pitch softmax
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_layers < 4:
            raise HarmonizerError(
                f"model config {self.name!r}: num_layers must be at least 4 (got {self.num_layers})",
                "set num_layers >= 4 in the config file",
            )
        if self.num_filters < 1 or self.num_filters % max(1, self.num_pointwise_splits):
            raise HarmonizerError(
                f"model config {self.name!r}: num_filters={self.num_filters} must be positive and divisible "
                f"by num_pointwise_splits={self.num_pointwise_splits}",
                "fix num_filters in the config file",
            )

        for key in ("melody_attention_after", "logsumexp_pool_after"):
            value = getattr(self, key)
            if not -1 <= value <= self.num_layers - 2:
                raise HarmonizerError(
                    f"model config {self.name!r}: {key}={value} must be -1 (off) or a layer index below "
                    f"{self.num_layers - 1}", f"fix {key} in the config file",
                )

    def layer_specs(self) -> list[dict]:
        """One dict per conv layer: kernel, in/out channels, dilation, kind (regular/separable/split)."""
        specs = []
        n, f = self.num_layers, self.num_filters
        for i in range(n):
            kernel = 3 if i < n - 2 else 2
            cin = 8 if i == 0 else f
            cout = 4 if i == n - 1 else f
            dilation = (1, 1)
            if self.dilations and 0 < i < n - 2:
                dilation = tuple(self.dilations[(i - 1) % len(self.dilations)])
            if not self.separable or i < self.num_initial_regular_conv_layers:
                kind = "regular"
            elif i in self.pointwise_split_layers:
                kind = "split"
            else:
                kind = "separable"
            specs.append(
                {"index": i, "kernel": kernel, "in": cin, "out": cout, "dilation": dilation, "kind": kind,
                 "activation": i != n - 1, "residual": self.use_residual and i % 2 == 0 and 0 < i < n - 1}
            )
        return specs

    def to_dict(self) -> dict:
        data = asdict(self)
        data["dilations"] = [list(d) for d in self.dilations]
        data["pointwise_split_layers"] = list(self.pointwise_split_layers)
        return data


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Load a bundled config by name (`default`, `coconet-64x128`, ...) or any TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise HarmonizerError(
            f"model config not found: {name_or_path}",
            f"use one of {', '.join(available_configs())} or a path to a .toml file",
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise HarmonizerError(f"model config {path} is not valid TOML ({reason(exc)})", "fix the file") from exc
    known = set(ModelConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise HarmonizerError(
            f"model config {path}: unknown keys {', '.join(unknown)}", f"valid keys: {', '.join(sorted(known))}"
        )
    data.setdefault("name", path.stem)
    data["dilations"] = tuple(tuple(d) for d in data.get("dilations", ()))
    data["pointwise_split_layers"] = tuple(data.get("pointwise_split_layers", ()))
    return ModelConfig(**data)
