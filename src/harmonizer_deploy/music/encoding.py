"""The pianoroll encoding Coconet uses: 46 pitches (MIDI 36–81), four voices SATB, 16th-note steps."""

from __future__ import annotations

import numpy as np

MIN_PITCH = 36
MAX_PITCH = 81
NUM_PITCHES = MAX_PITCH - MIN_PITCH + 1  # 46
VOICES = ("soprano", "alto", "tenor", "bass")
NUM_VOICES = len(VOICES)
INPUT_CHANNELS = 2 * NUM_VOICES  # masked pianoroll + mask
STEPS_PER_QUARTER = 4

# Typical SATB ranges (MIDI), used to make realistic test inputs and to check harmonizations.
VOICE_RANGES = {
    "soprano": (60, 81),
    "alto": (53, 74),
    "tenor": (48, 69),
    "bass": (36, 64),
}

# Each voice's range in the JSB chorales' train split (Jsb16thSeparated.npz, 229 pieces): lowest-highest
# pitch, and the 1st-99th percentile (where the voice really lives). VOICE_RANGES above lie inside the former.
DATA_VOICE_RANGES = {"soprano": (60, 81), "alto": (52, 74), "tenor": (46, 69), "bass": (36, 66)}
TYPICAL_VOICE_RANGES = {"soprano": (62, 78), "alto": (57, 71), "tenor": (52, 67), "bass": (39, 60)}

INPUT_NAME = "pianoroll_mask"
OUTPUT_NAME = "probs"

ENCODING = {
    "min_pitch": MIN_PITCH,
    "num_pitches": NUM_PITCHES,
    "voices": list(VOICES),
    "steps_per_quarter": STEPS_PER_QUARTER,
    "input": f"{INPUT_NAME}[batch, time, {NUM_PITCHES}, {INPUT_CHANNELS}]: channels 0-3 are the one-hot "
    "pianoroll per voice with masked positions zeroed, channels 4-7 the mask (1 = to be predicted)",
    "output": f"{OUTPUT_NAME}[batch, time, {NUM_PITCHES}, {NUM_VOICES}]: softmax over the pitch axis per voice",
}


def random_chorale(rng: np.random.Generator, time_steps: int) -> np.ndarray:
    """A plausible four-voice pianoroll [time, pitch, voice]: stepwise random walks inside each voice's range,
    notes held for whole beats, so inputs look like music rather than uniform noise."""
    roll = np.zeros((time_steps, NUM_PITCHES, NUM_VOICES), dtype=np.float32)
    for v, voice in enumerate(VOICES):
        low, high = VOICE_RANGES[voice]
        pitch = int(rng.integers(low + 3, high - 3))
        t = 0
        while t < time_steps:
            duration = int(rng.choice([2, 4, 4, 8]))
            pitch = int(np.clip(pitch + rng.choice([-4, -2, -1, 0, 1, 2, 3]), low, high))
            roll[t : t + duration, pitch - MIN_PITCH, v] = 1.0
            t += duration
    return roll


def random_mask(rng: np.random.Generator, time_steps: int) -> np.ndarray:
    """A Coconet-style mask [time, pitch, voice]: a random fraction of (time, voice) cells to predict,
    constant along pitch."""
    fraction = rng.uniform(0.1, 0.9)
    cells = (rng.random((time_steps, 1, NUM_VOICES)) < fraction).astype(np.float32)
    return np.broadcast_to(cells, (time_steps, NUM_PITCHES, NUM_VOICES)).copy()


def model_input(pianoroll: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Concatenate the masked pianoroll with its mask along channels: the network's 8-channel input."""
    return np.concatenate([pianoroll * (1.0 - mask), mask], axis=-1).astype(np.float32)


def realistic_inputs(seed: int, batch: int, time_steps: int) -> np.ndarray:
    """Seeded batch of valid model inputs [batch, time, 46, 8]."""
    rng = np.random.default_rng(seed)
    items = [model_input(random_chorale(rng, time_steps), random_mask(rng, time_steps)) for _ in range(batch)]
    return np.stack(items)
