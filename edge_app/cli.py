"""The `edge-xray` command. Thin click commands over the library functions.

Edge commands (classify, info, bench) import only numpy, Pillow and the TFLite runtime. The others
(train, calibrate, convert, evaluate, compare) import TensorFlow when they run.

Exit codes: 0 success; 1 other failure; 2 usage error; 3 one or more inputs could not be read or
were refused; 4 the model is missing, unreadable, or differs from its card.
"""

from __future__ import annotations

import contextlib
import json
import sys

import click

from . import __version__

EXIT_INPUT = 3  # the exit codes of ImageError, DataError, CalibrationError, EvaluateError
EXIT_MODEL = 4  # of ModelError and ConvertError
TRAIN_EXTRA_MODULES = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "sklearn", "matplotlib")


@contextlib.contextmanager
def user_errors():
    """The project's errors carry a one-line message and an `exit_code`: turn them into click errors."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        raise click.ClickException(f"this needs the train extra ({e.name} is not installed): "
                                   "pip install 'edge-xray[train]'") from None
    except Exception as e:
        code = getattr(e, "exit_code", None)
        if code is None:
            raise
        err = click.ClickException(str(e))
        err.exit_code = code
        raise err from None


def _echo_json(obj):
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-xray")
def cli():
    """Offline pediatric pneumonia screening from chest X-rays. A screening aid, not a diagnosis."""


model_option = click.option("--model", type=click.Path(dir_okay=False), default=None,
                             help="A .tflite model with its card (default: the bundled int8 model).")
threads_option = click.option("--threads", type=click.IntRange(1, 64), default=None,
                              help="Interpreter threads (default: the device's cores).")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input per line.")
@threads_option
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write results to a .csv or .jsonl file, row by row.")
@click.option("--heatmap", "heatmap_dir", type=click.Path(file_okay=False), default=None,
              help="Write a class activation map overlay PNG per scan into this folder.")
@click.option("--audit-log", type=click.Path(dir_okay=False), default=None,
              help="Append one JSON line per input (hashes and results, no pixels or patient data).")
def classify(paths, model, as_json, threads, output, heatmap_dir, audit_log):
    """Screen chest X-rays (files or folders: PNG, JPEG, DICOM, TIFF).

    Exit code 0 when every input was screened, 3 when any could not be read or was refused
    (the rest are still reported), 4 when the model is missing or does not match its card.
    """
    from .classify import RowWriter, classify as run, human_line
    from .runtime import Model

    with user_errors():
        m = Model(model, threads=threads)
    writer = audit = None
    try:
        writer = RowWriter(output) if output else None
    except (ValueError, OSError) as e:
        raise click.UsageError(str(e)) from None
    if audit_log:
        from .audit import AuditLog

        audit = AuditLog(audit_log, m)
    bad = 0
    try:
        for row in run(paths, m, heatmap_dir=heatmap_dir):
            if row["status"] != "ok":
                bad += 1
                click.echo(f"error: {row['path']}: {row['error']}", err=True)
            if as_json:
                click.echo(json.dumps(row))
            elif row["status"] == "ok":
                click.echo(human_line(row))
            if writer:
                writer.write(row)
            if audit:
                audit.write(row)
    except KeyboardInterrupt:
        raise click.ClickException("interrupted: every row reported so far has been written") from None
    finally:
        if writer:
            writer.close()
        if audit:
            audit.close()
    if bad:
        sys.exit(EXIT_INPUT)


@cli.command()
@model_option
@click.option("--json", "as_json", is_flag=True)
def info(model, as_json):
    """Show the model card."""
    from .runtime import Model

    with user_errors():
        m = Model(model)
    card = dict(m.card)
    card["model_path"] = str(m.path)
    if card.get("float_model"):
        card["float_model"] = str((m.path.parent / card["float_model"]).resolve())
    card["runtime"] = m.runtime
    if as_json:
        _echo_json(card)
        return
    card.pop("cam", None)
    card.pop("gate", None)
    for k in ("name", "version", "format", "model_path", "sha256", "size_bytes", "labels", "threshold",
              "temperature", "float_model", "runtime"):
        if k in card:
            click.echo(f"{k}: {card[k]}")
    click.echo(f"input: {json.dumps(card.get('input'))}")
    for k in ("metrics", "training", "calibration"):
        if k in card:
            click.echo(f"{k}: {json.dumps(card[k])}")


@cli.command()
@model_option
@threads_option
@click.option("--image", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A full-resolution scan to time decode and preprocess on (default: a synthetic one).")
@click.option("--runs", type=click.IntRange(10, 100000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench(model, threads, image, runs, as_json):
    """Measure model latency, decode + preprocess time, peak memory and model size on this device."""
    from .bench import bench as run

    with user_errors():
        r = run(model, threads=threads, image=image, runs=runs)
    if as_json:
        _echo_json(r)
    else:
        for k, v in r.items():
            click.echo(f"{k}: {v}")


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The run folder to write.")
@click.option("--epochs", type=click.IntRange(1, 1000), default=None, help="Float-phase epochs (default 24).")
@click.option("--qat-epochs", type=click.IntRange(1, 1000), default=None, help="Quantization-aware epochs (default 4).")
@click.option("--image-size", type=click.IntRange(32, 1024), default=None, help="Input side in pixels.")
@click.option("--arch", type=click.Choice(["xs", "s", "m"]), default=None, help="Network width and depth.")
@click.option("--limit", type=click.IntRange(6, None), default=None, help="Stratified subset of N images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi-worker"]), default="default",
              show_default=True, help="tf.distribute strategy (multi-worker reads TF_CONFIG).")
@click.option("--quiet", is_flag=True, help="No per-epoch lines.")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(file_okay=False),
              help="A finished run to distil from (repeat for an ensemble).")
@click.option("--shift-swap", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of training images given the other class's acquisition look.")
def train(data_dir, out, epochs, qat_epochs, image_size, arch, limit, seed, resume, strategy, quiet, teachers,
          shift_swap):
    """Train the compact CNN (float, then quantization-aware) on a NORMAL/PNEUMONIA folder."""
    from .train.model import DEFAULT_ARCH, DEFAULT_SIZE
    from .train.train import train as run

    with user_errors():
        try:
            run(data_dir, out, epochs=epochs, qat_epochs=qat_epochs, image_size=image_size or DEFAULT_SIZE, arch=arch or DEFAULT_ARCH, limit=limit, seed=seed,
                resume=resume, strategy=strategy, quiet=quiet, teachers=teachers, shift_swap=shift_swap)
        except KeyboardInterrupt:
            raise click.ClickException(f"interrupted: continue with `edge-xray train {data_dir} --out {out} --resume`") from None


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CALIB.npz (manifest CALIB.json beside it).")
@click.option("--size", type=int, default=300, show_default=True, help="Number of images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-size", type=click.IntRange(32, 1024), default=None,
              help="The model's input side (default: the training default).")
def calibrate(data_dir, out, size, seed, image_size):
    """Build the representative calibration set for int8 conversion."""
    from .calibration.calibrate import calibrate as run
    from .train.model import DEFAULT_SIZE

    with user_errors():
        m = run(data_dir, out, size=size, seed=seed, image_size=image_size or DEFAULT_SIZE)
    click.echo(f"calibration set: {m['count']} images {m['per_label']} -> {out}")


@cli.command()
@click.argument("source", type=click.Path())
@click.option("--int8", "mode", flag_value="int8", default=True, help="Full-integer model (default).")
@click.option("--float32", "mode", flag_value="float32", help="The float twin of the same network.")
@click.option("--float16", "mode", flag_value="float16", help="Float16 weights.")
@click.option("--calibration", type=click.Path(), default=None, help="Calibration set from `edge-xray calibrate`.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="MODEL.tflite (card MODEL.json beside it).")
@click.option("--float-model", default=None, help="File name of the float twin, recorded in the card.")
@click.option("--version", "model_version", default=None, help="Model version recorded in the card.")
@click.option("--gate-data", type=click.Path(file_okay=False), default=None,
              help="The run's training folder: fit the out-of-distribution gate on its scans.")
def convert(source, mode, calibration, out, float_model, model_version, gate_data):
    """Convert a training run (or its .h5) to TFLite, with its card."""
    from .convert.convert import convert as run

    if mode == "int8" and calibration is None:
        raise click.UsageError("--int8 needs --calibration CALIB (make one with `edge-xray calibrate`)")
    with user_errors():
        card = run(source, out, mode=mode, calibration=calibration, float_model=float_model, gate_data=gate_data,
                   **({"version": model_version} if model_version else {}))
    click.echo(f"{out}: {card['format']}, {card['size_bytes'] / 1024:.1f} KB, sha256 {card['sha256']}")


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("data_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
@click.option("--report", type=click.Path(file_okay=False), default=None, help="Write report.md and plots here.")
def evaluate(model, data_dir, as_json, report):
    """Screening metrics of a model (.tflite or a run's Keras model) on a NORMAL/PNEUMONIA folder."""
    from .convert.evaluate import evaluate as run

    with user_errors():
        r = run(model, data_dir, report=report)
    if as_json:
        _echo_json(r)
        return
    click.echo(f"{r['n']} images, threshold {r['threshold']:.3f}")
    for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece",
              "bacterial_vs_viral_accuracy"):
        click.echo(f"{k}: {r[k]:.4f}")
    click.echo(f"type I errors (false positives): {r['type_I_errors']}  type II errors (missed): {r['type_II_errors']}")
    if r["skipped"]:
        click.echo(f"unreadable: {len(r['skipped'])}", err=True)


@cli.command()
@click.argument("float_model", type=click.Path())
@click.argument("int8_model", type=click.Path())
@click.argument("data_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
def compare(float_model, int8_model, data_dir, as_json):
    """Compare a float model and its int8 version on a labelled folder."""
    from .convert.evaluate import compare as run

    with user_errors():
        r = run(float_model, int8_model, data_dir)
    if as_json:
        _echo_json(r)
        return
    click.echo(f"{r['n']} images: agreement {r['agreement']:.4f}, max |dp| {r['max_abs_delta_p']:.4f}, "
               f"mean |dp| {r['mean_abs_delta_p']:.5f}")
    for k, v in r["delta"].items():
        click.echo(f"{k}: float {r['float'][k]:.4f}  int8 {r['int8'][k]:.4f}  delta {v:+.4f}")
    for d in r["disagreements"]:
        click.echo(f"disagree: {d['file']} float {d['float_p']:.3f} int8 {d['int8_p']:.3f}")


def main():
    cli(prog_name="edge-xray")


if __name__ == "__main__":
    main()
