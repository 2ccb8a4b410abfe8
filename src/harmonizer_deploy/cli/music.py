"""Coconet-only commands: train, evaluate, harmonize."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from harmonizer_deploy.cli.common import HELP, JsonOpt, NoBuildOpt, cli_command, deprecated, emit_json, err, out
from harmonizer_deploy.cli.progress import progress_bar
from harmonizer_deploy.music.model import BUNDLED_MODEL, REFERENCE_MODEL


class MelodyVoice(StrEnum):
    """`--melody-voice`: a choice, checked before any work (building an artifact, loading a model)."""

    auto = "auto"
    soprano = "soprano"
    alto = "alto"
    tenor = "tenor"
    bass = "bass"


class VoiceLeading(StrEnum):
    """`--voice-leading`: strict (weigh every drawn note against parallel 5ths/8ves and crossings) or off."""

    strict = "strict"
    off = "off"


VOICE_LEADING_HELP = ("strict: the sampler weighs each drawn note against parallel perfect fifths/octaves and "
                      "voice crossings with the other voices' current notes (x1e-6 per broken rule); off: notes "
                      "drawn from the network alone.")

music_app = typer.Typer(context_settings=HELP)


@music_app.command()
@cli_command
def train(
    dataset: Annotated[str, typer.Option(help="'music21' (Bach chorales shipped with music21) or a JSB-style .npz.")]
    = "music21",
    split: Annotated[str, typer.Option(help="Split of the .npz to train on.")] = "train",
    config: Annotated[str, typer.Option(help="Model config name or TOML path.")] = "default",
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps in total (a resumed run continues to it).")] = 2000,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    crop: Annotated[int, typer.Option(min=4, help="Training crop length in 16th-note steps.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="Initial Adam learning rate (cosine-decayed).")] = 2e-3,
    final_learning_rate: Annotated[float, typer.Option(help="Learning rate at the last step.")] = 2e-4,
    seed: Annotated[int, typer.Option(help="Seeds the init and every mask/crop draw.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(min=1)] = 100,
    init: Annotated[str | None, typer.Option(help="Start from these Coconet-named weights (.npz).")] = None,
    out_dir: Annotated[Path, typer.Option("-o", "--output", help="Run directory: checkpoint, model.npz/.toml/.json.")]
    = Path("runs/train"),
    force: Annotated[bool, typer.Option("--force", help="Start over: ignore an existing checkpoint in --output.")]
    = False,
    old_out: Annotated[Path | None, typer.Option("--out", hidden=True)] = None,
    old_fresh: Annotated[bool, typer.Option("--fresh", hidden=True)] = False,
    log_every: Annotated[int, typer.Option(help="Without a terminal, print the loss every N steps.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Train a Coconet model (orderless NADE) with checkpoints; rerunning the same command resumes."""
    from harmonizer_deploy.music.train import TrainSettings
    from harmonizer_deploy.music.train import train as run_training

    out_dir = deprecated("--out", "-o/--output", old_out, out_dir)
    force = deprecated("--fresh", "--force", old_fresh, force)

    settings = TrainSettings(dataset=dataset, split=split, config=config, steps=steps, batch_size=batch_size,
                             crop=crop, learning_rate=learning_rate, final_learning_rate=final_learning_rate,
                             seed=seed, checkpoint_every=checkpoint_every, init=init)
    with progress_bar("training", not as_json) as update:
        def report(done: int, total: int, loss: float) -> None:
            update(done, total)
            if not err.is_terminal and (done % log_every == 0 or done == total):
                err.print(f"step {done}/{total} loss {loss:.4f}", highlight=False)

        result = run_training(settings, out_dir, resume=not force, progress=report)
    summary = {"out": str(result.out_dir), "steps": result.steps, "final_loss": result.final_loss,
               "seconds_this_run": round(result.seconds, 1)}
    if as_json:
        emit_json(summary)
        return
    out.print(f"trained {result.steps} steps, final loss {result.final_loss:.4f} "
              f"({result.seconds:.0f} s this run) → {result.out_dir}/model.npz")


@music_app.command()
@cli_command
def evaluate(
    dataset: Annotated[str, typer.Option(help="JSB-style .npz (../shared/data/Jsb16thSeparated.npz) or 'music21'.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "test",
    model: Annotated[str | None, typer.Option(help="Bundled model name, .keras file or SavedModel.")] = None,
    backend: Annotated[str, typer.Option(help="tensorflow, onnxruntime or tvm-<dir>.")] = "tensorflow",
    build_dir: Annotated[Path, typer.Option(help="Where onnxruntime/TVM artifacts live.")] = Path("build"),
    masks: Annotated[int, typer.Option(min=1, help="Random orderless-NADE masks (orderings sampled) per piece.")] = 16,
    seed: Annotated[int, typer.Option()] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N pieces.")] = None,
    compare_with: Annotated[str | None, typer.Option(
        help="Also score this bundled model on the same pieces and masks (TensorFlow). Default: "
             f"'{REFERENCE_MODEL}' when --model names another bundled model; 'none' to skip.")] = None,
    musical: Annotated[bool, typer.Option(
        "--musical", help="Instead of NLL: harmonize every soprano line of the split and count parallel fifths/"
                          "octaves, voice crossings, notes out of range and repeated notes, next to Bach's own.")]
    = False,
    steps: Annotated[int, typer.Option(min=1, help="Gibbs steps per harmonization (--musical).")] = 32,
    voice_leading: Annotated[VoiceLeading, typer.Option(help=f"(--musical) {VOICE_LEADING_HELP}")]
    = VoiceLeading.strict,
    no_build: NoBuildOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Note-wise NLL on held-out chorales (orderless NADE estimate), next to Coconet's published figure;
    with --musical, the musical quality of harmonized test sopranos next to Bach's own."""
    from harmonizer_deploy.music.model import bundled_models
    from harmonizer_deploy.run.backends import check_backend_name
    from harmonizer_deploy.run.ensure import ensure_backend
    from harmonizer_deploy.run.jobs import evaluate_dataset, evaluate_musical_dataset

    check_backend_name(backend, build_dir)
    if not no_build:
        ensure_backend(backend, build_dir, model)

    if musical:
        from harmonizer_deploy.music.evaluate import musical_table

        with progress_bar(f"harmonizing {split} sopranos", not as_json) as update:
            report = evaluate_musical_dataset(dataset, split, backend, build_dir, model, steps, seed, limit,
                                              progress=update, voice_leading=voice_leading.value)
        if as_json:
            emit_json(report)
            return
        out.print(musical_table({str(model or "bundled"): report}), highlight=False, markup=False)
        within = report["within_2x_of_bach"]
        out.print("within 2x of Bach: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in within.items()),
                  highlight=False)
        return

    if compare_with is None:
        named_bundled = model is not None and not Path(model).exists() and model in bundled_models()
        compare_with = REFERENCE_MODEL if named_bundled and model != REFERENCE_MODEL else "none"
    with progress_bar(f"scoring {split} pieces", not as_json) as update:
        result = evaluate_dataset(dataset, split, backend, build_dir, model, masks, seed, limit=limit,
                                  progress=update, compare_with=None if compare_with == "none" else compare_with)
    if as_json:
        emit_json(result)
        return
    out.print(f"note-wise NLL {result['nll_per_note']:.4f} ± {result['stderr']:.4f} nats on {result['pieces']} "
              f"{split} pieces ({result['notes']} notes, {masks} masks/piece, {result['seconds']:.0f} s); "
              "published Coconet: {}-{}".format(*result["published"]["coconet_nll_per_note"]), highlight=False)
    if "baseline" in result:
        base = result["baseline"]
        out.print(f"{base['model']} on the same pieces and masks: {base['nll_per_note']:.4f} ± {base['stderr']:.4f}",
                  highlight=False)
    if result.get("model_info", {}).get("caveat"):
        out.print(f"caveat: {result['model_info']['caveat']}", highlight=False)


@music_app.command()
@cli_command
def harmonize(
    melody: Annotated[Path, typer.Argument(help="Melody as MIDI (.mid) or MusicXML (.xml/.musicxml/.mxl).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Four-part chorale to write: .mid, or "
                                         ".musicxml/.xml for MusicXML.")] = Path("chorale.mid"),
    backend: Annotated[str, typer.Option(help="tvm-<dir> (e.g. tvm-cpu, built in --build-dir on first use), "
                                         "onnxruntime, openvino or tensorflow.")] = "tvm-cpu",
    build_dir: Annotated[Path, typer.Option(help="Where model.onnx and the TVM artifacts live (built there on "
                                            "first use).")] = Path("build"),
    model: Annotated[str | None, typer.Option(help=f"Bundled model ({BUNDLED_MODEL} by default; 'default' is the "
                                              "small 16x64 one), .keras file or SavedModel. Other backends than "
                                              "tensorflow run --build-dir's model.onnx, which must come from it.")]
    = None,
    seed: Annotated[int, typer.Option(help="Same seed + backend → same chorale.")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Gibbs steps (the Bach Doodle uses 96).")] = 96,
    png: Annotated[Path | None, typer.Option(help="Also draw the pianoroll to this PNG.")] = None,
    melody_voice: Annotated[MelodyVoice, typer.Option(
        help="Which voice sings the melody: auto (the voice whose range in the chorales fits it best), soprano, "
             "alto, tenor or bass. The other three are infilled.")] = MelodyVoice.auto,
    keep_voices: Annotated[bool, typer.Option(
        "--keep-voices", help="The file holds 2-3 single-line tracks: keep each as a voice, note for note "
                              "(by track name S/A/T/B, else by register), and infill the rest.")] = False,
    voice_leading: Annotated[VoiceLeading, typer.Option(help=VOICE_LEADING_HELP)] = VoiceLeading.strict,
    no_build: NoBuildOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Harmonize a melody into a four-part chorale (the melody kept exactly, in the voice that fits it); builds
    a missing model.onnx or tvm-<target> artifact in --build-dir first (unless --no-build)."""
    from harmonizer_deploy.music.midi import read_score
    from harmonizer_deploy.run.backends import check_backend_name
    from harmonizer_deploy.run.ensure import ensure_backend
    from harmonizer_deploy.run.jobs import harmonize_file

    check_backend_name(backend, build_dir)
    read_score(melody, keep_voices=keep_voices)  # a bad melody fails in one line before anything is built
    if not no_build:
        ensure_backend(backend, build_dir, model)

    with progress_bar(f"Gibbs sampling on {backend}", not as_json) as update:
        result = harmonize_file(melody, output, backend, build_dir, model, seed, steps, png, progress=update,
                                melody_voice=melody_voice.value, keep_voices=keep_voices,
                                voice_leading=voice_leading.value)
    if as_json:
        emit_json(result)
        return
    shift = result["transposed_semitones"]
    shifted = f", transposed {shift:+d} for the model" if shift else ""
    given = ", ".join(result["given_voices"])
    out.print(f"wrote {output} (4 voices, given: {given}; {result['time_steps']} 16th-note steps, "
              f"{result['model']} on {backend}, seed {seed}, "
              f"{steps} Gibbs steps, {result['seconds']:.1f} s{shifted})" + (f"; pianoroll {png}" if png else ""),
              highlight=False)
