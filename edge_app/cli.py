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

from .errors import EXIT_INPUT, EdgeXrayError

TRAIN_EXTRA_MODULES = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "sklearn", "matplotlib")


@contextlib.contextmanager
def user_errors():
    """The project's errors (EdgeXrayError) carry a one-line message and an exit code: make them click's."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        raise click.ClickException(f"this needs the train extra ({e.name} is not installed): "
                                   "pip install 'edge-xray[train]'") from None
    except EdgeXrayError as e:
        err = click.ClickException(str(e))
        err.exit_code = e.exit_code
        raise err from None


def _echo_json(obj):
    click.echo(json.dumps(obj, indent=2, default=str))


def _print_versions(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    from .versions import version_lines, versions

    for line in version_lines(versions()):
        click.echo(line)
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_versions,
              help="Show the package's version and the versions of the models it ships, and exit.")
def cli():
    """Offline pediatric pneumonia screening from chest X-rays. A screening aid, not a diagnosis."""


model_option = click.option("--model", type=click.Path(dir_okay=False), default=None,
                             help="A .tflite model with its card (default: the bundled int8 model).")
site_option = click.option("--site", type=click.Path(dir_okay=False), default=None, envvar="EDGE_XRAY_SITE",
                            help="A site file from `edge-xray site calibrate`: its threshold replaces the card's "
                                 "(default: $EDGE_XRAY_SITE).")
threads_option = click.option("--threads", type=click.IntRange(1, 64), default=None,
                              help="Interpreter threads (default: the device's cores).")


allow_unverified_option = click.option(
    "--allow-unverified-model", "allow_unverified", is_flag=True, default=False,
    help="Run a model that is not one the package ships (rows then say model_verified: false; "
         "also EDGE_XRAY_ALLOW_UNVERIFIED_MODEL=1).")


no_gate_option = click.option(
    "--no-gate", "no_gate", is_flag=True, default=False,
    help="Run a screening model that has no out-of-distribution gate (every row and audit entry then says so).")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@model_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input per line.")
@threads_option
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write results to a .csv or .jsonl file, row by row (never replaces an existing file "
                   "without --resume or --overwrite).")
@click.option("--resume", is_flag=True, help="--output exists: keep its rows, skip their inputs, append the rest.")
@click.option("--overwrite", is_flag=True, help="--output exists: replace it.")
@click.option("--heatmap", "heatmap_dir", type=click.Path(file_okay=False), default=None,
              help="Write a heatmap overlay (NAME.heatmap.jpg) for each PNEUMONIA result into this folder.")
@click.option("--audit-log", type=click.Path(dir_okay=False), default=None,
              help="Append one JSON line per input (hashes and results, no pixels or patient data), chained.")
@site_option
@allow_unverified_option
@click.option("--lang", default=None, envvar="EDGE_XRAY_LANG",
              help="Language of the advice and reasons shown (en, fr, pt, es; default: $EDGE_XRAY_LANG, else "
                   "English). JSON and CSV keep their field names; the audit log stays in English.")
@no_gate_option
def classify(paths, model, as_json, threads, output, resume, overwrite, heatmap_dir, audit_log, site,
             allow_unverified, lang, no_gate):
    """Screen chest X-rays (files or folders: PNG, JPEG, DICOM, TIFF, BMP, GIF, WebP; a DICOMDIR).

    Exit code 0 when every input was screened, 3 when any could not be read or was refused
    (the rest are still reported), 4 when the model is missing, does not match its card, or is not
    one the package ships (without --allow-unverified-model), 1 when writing --output or --audit-log
    failed mid-batch (the rows written are kept). On a terminal, a progress line on stderr; at the
    end, one summary line on stderr.
    """
    from .batch import run
    from .i18n import normalize
    from .screen import load_model
    from .trust import warning

    if resume and overwrite:
        raise click.UsageError("give --resume or --overwrite, not both")
    if lang and not normalize(lang):
        raise click.UsageError(f"--lang: no catalogue for {lang!r}")
    lang = normalize(lang)
    if (resume or overwrite) and not output:
        raise click.UsageError("--resume and --overwrite need --output")
    with user_errors():
        screener = load_model(model, threads=threads, site=site, allow_unverified=allow_unverified, no_gate=no_gate)
        if not screener.model_verified:
            click.echo(warning(screener.model.path), err=True)
        _site_note(screener)
        try:
            tally = run(screener, paths, as_json=as_json, output=output, resume=resume, overwrite=overwrite,
                        heatmap_dir=heatmap_dir, audit_log=audit_log, echo=click.echo, lang=lang)
        except KeyboardInterrupt:
            raise click.ClickException("interrupted: every row reported so far has been written") from None
    if tally.bad:
        sys.exit(EXIT_INPUT)


@cli.group()
def audit():
    """Check an audit log written by `classify --audit-log`."""


@audit.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", type=click.Path(dir_okay=False), default=None,
              help="The public key (KEY.pub from `edge-xray key init`) to check signatures with "
                   "(default: this device's key, $EDGE_XRAY_KEY).")
def audit_verify(file, key):
    """Check the chain and signatures of an audit log: exit 0 when intact, 3 naming the first broken line."""
    from .audit import verify

    with user_errors():
        r = verify(file, key)
    if not r["signed"]:
        keyed = "unkeyed: no entry is signed (anyone who can write the file could have re-chained it)"
    elif r["checked_with"]:
        keyed = f"{r['signed']} signed by key {r['key_id']}, signatures verified"
    else:
        keyed = (f"{r['signed']} signed by key {r['key_id']}, signatures NOT checked (no key here: "
                 "give --key KEY.pub)")
    if r["signed"] and r["unkeyed"]:
        keyed += f"; the first {r['unkeyed']} entries, from before the key, are unkeyed"
    click.echo(f"{file}: OK, {r['entries']} entries, chain intact; last entry sha256 {r['last_sha256']}; {keyed}")
    for note in r["notes"]:
        click.echo(f"note: {note}")


@cli.group("key")
def key_group():
    """The device key that signs this device's site files and audit log lines."""


@key_group.command("init")
@click.option("--key", type=click.Path(dir_okay=False), default=None,
              help="Where to write the private key (default: $EDGE_XRAY_KEY, else "
                   "$XDG_CONFIG_HOME/edge-xray/device.key or ~/.config/edge-xray/device.key); "
                   "the public part goes beside it as KEY.pub.")
def key_init(key):
    """Make this device's key (Ed25519): from now on site files and audit lines are signed with it."""
    from .keys import init_key, public_path

    with user_errors():
        k = init_key(key)
    click.echo(f"private key: {k.path} (mode 600: keep it on this device, never copy it)")
    click.echo(f"public key: {public_path(k.path)} (copy it to check this device's logs elsewhere)")
    click.echo(f"fingerprint: {k.id}")


@cli.command()
@model_option
@click.option("--json", "as_json", is_flag=True)
def info(model, as_json):
    """Show the versions (package, models) and the model card, and the device's runtime and CPU."""
    from .platform_info import info_report, platform_lines
    from .runtime import Model

    with user_errors():
        m = Model(model)
    card = info_report(m)
    if as_json:
        _echo_json(card)
        return
    for k in ("package_version", "name", "version", "format", "model_path", "sha256", "size_bytes", "labels",
              "threshold", "temperature", "float_model", "model_verified"):
        if k in card:
            click.echo(f"{k}: {card[k]}")
    for aux in card["auxiliary_models"]:
        click.echo(f"auxiliary_model: {aux['name']} {aux['version']} ({aux['file']})")
    for line in platform_lines(card):  # issue 14
        click.echo(line)
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
@click.option("--qat-epochs", type=click.IntRange(0, 1000), default=None,
              help="Quantization-aware epochs (default 4; 0: a float-only run, not for conversion).")
@click.option("--image-size", type=click.IntRange(32, 1024), default=None,
              help="Input side in pixels, a multiple of 32 (default 128).")
@click.option("--arch", type=click.Choice(["xs", "s", "m"]), default=None, help="Network width and depth (default s).")
@click.option("--limit", type=click.IntRange(6, None), default=None, help="Stratified subset of N images.")
@click.option("--seed", type=int, default=None, help="Random seed of the split and training (default 0).")
@click.option("--split-seed", type=int, default=None,
              help="Seed of the patient-level split alone (default: --seed): runs that share it share a fold.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--strategy", type=click.Choice(["default", "mirrored", "multi-worker"]), default=None,
              help="tf.distribute strategy (default: default; multi-worker reads TF_CONFIG).")
@click.option("--quiet", is_flag=True, help="No per-epoch lines.")
@click.option("--shift-swap", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of training images given the other class's acquisition look.")
def train(data_dir, out, epochs, qat_epochs, image_size, arch, limit, seed, split_seed, resume, strategy, quiet,
          shift_swap):
    """Train the compact CNN (float, then quantization-aware) on a NORMAL/PNEUMONIA folder."""
    from .train.train import train as run

    # with --resume the library refuses any setting that differs from the run's own
    options = dict(epochs=epochs, qat_epochs=qat_epochs, image_size=image_size, arch=arch, limit=limit, seed=seed,
                   split_seed=split_seed, strategy=strategy, shift_swap=shift_swap or None)
    with user_errors():
        try:
            run(data_dir, out, resume=resume, quiet=quiet, **{k: v for k, v in options.items() if v is not None})
        except KeyboardInterrupt:
            raise click.ClickException(f"interrupted: continue with `edge-xray train {data_dir} --out {out} "
                                       "--resume`") from None


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


def _floats(value: str | None, name: str):
    """'LOW,HIGH' -> (low, high), or None."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.UsageError(f"{name} takes two numbers, LOW,HIGH (e.g. 0,1 or -1,1 or 0,255)") from None
    return lo, hi


input_range_option = click.option(
    "--input-range", default=None, metavar="LOW,HIGH",
    help="The model's input values for black and white of the prepared scan (default 0,1; -1,1 for "
         "MobileNet's preprocess_input; 0,255 for a model that rescales itself).")
labels_option = click.option("--labels", default=None, metavar="A,B,...",
                             help="Class names in the order of the model's outputs.")


@cli.command()
@click.argument("source", type=click.Path())
@click.option("--int8", "mode", flag_value="int8", default=True, help="Full-integer model (default).")
@click.option("--float32", "mode", flag_value="float32", help="The float twin of the same network.")
@click.option("--float16", "mode", flag_value="float16", help="Float16 weights.")
@click.option("--calibration", type=click.Path(), default=None,
              help="The representative set: a folder of images (one sub-folder per class) or a file from "
                   "`edge-xray calibrate`. Needed for --int8 and for the gate.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="MODEL.tflite (card MODEL.json beside it).")
@click.option("--float-model", default=None, help="File name of the float twin, recorded in the card.")
@click.option("--version", "model_version", default=None, help="Model version recorded in the card.")
@click.option("--gate-data", type=click.Path(file_okay=False), default=None,
              help="Scans to fit the out-of-distribution gate on (a run's training folder, or any folder of "
                   "scans; default: the representative set).")
@click.option("--no-gate", "no_gate", is_flag=True, default=False,
              help="Fit no gate (the screening commands then refuse the model unless given --no-gate).")
@labels_option
@input_range_option
def convert(source, mode, calibration, out, float_model, model_version, gate_data, no_gate, labels, input_range):
    """Convert a model to TFLite with its card: an `edge-xray train` run (or its .h5), a Keras 3 .keras,
    a tf_keras .h5, or a SavedModel folder; any square grey or RGB image classifier."""
    from .convert.convert import convert as run

    if mode == "int8" and calibration is None:
        raise click.UsageError("--int8 needs --calibration (a folder of images, or a file from `edge-xray calibrate`)")
    with user_errors():
        card = run(source, out, mode=mode, calibration=calibration, float_model=float_model, gate_data=gate_data,
                   labels=labels, input_range=_floats(input_range, "--input-range"), gate=not no_gate,
                   **({"version": model_version} if model_version else {}))
    click.echo(f"{out}: {card['format']}, {card['size_bytes'] / 1024:.1f} KB, sha256 {card['sha256']}")
    click.echo(f"labels {', '.join(card['labels'])}; input {card['input']['shape'][1]}x{card['input']['shape'][2]}x"
               f"{card['input']['shape'][3]}, range {card['input']['range']}; output {card.get('output', 'logits')}")
    g = card.get("gate")
    if g:
        fit = g["fit"]
        click.echo(f"gate: fitted on {fit['train_images']} + {fit['val_images']} images ({g.get('data', 'the run')}); "
                   f"false refusals on the held-out ones: {fit['val_false_refusal_rate']:.1%}")
    else:
        from .decision import ScreeningLabels

        if ScreeningLabels.of(card["labels"]) is None:
            click.echo("gate: none (not a screening model: only screening uses one)")
            return
        why = ("--no-gate" if no_gate else "the model has no feature map" if "features" not in card["outputs"]
               else "no representative images")
        click.echo(f"gate: none ({why}): screening refuses this model unless given --no-gate", err=True)


output_kind_option = click.option(
    "--output-kind", type=click.Choice(["auto", "logits", "softmax", "sigmoid"]), default="auto", show_default=True,
    help="A .tflite without a card: what its class output is (auto: from its last op).")


def _device_line(d: dict) -> str:
    return f"{d['kind']}, {d['size_bytes'] / 1024:.1f} KB, {d['latency_ms']:.2f} ms per image ({d['runtime']})"


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("data_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for qat.h5, ptq-int8.tflite, qat-int8.tflite and qat_report.json.")
@click.option("--epochs", type=click.IntRange(1, 100), default=2, show_default=True, help="Fine-tuning epochs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-data", type=click.Path(file_okay=False), default=None,
              help="A labelled folder the model never saw, for the figures (default: a fifth of DATA_DIR held out).")
@labels_option
@input_range_option
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
def qat(model, data_dir, out, epochs, seed, eval_data, labels, input_range, as_json):
    """Fine-tune a Keras classifier quantization-aware on labelled folders, convert it to int8, and show
    it beside post-training quantization alone (on held-out images)."""
    from .convert.qat import qat as run

    with user_errors():
        r = run(model, data_dir, out, epochs=epochs, seed=seed, labels=labels,
                input_range=_floats(input_range, "--input-range"), eval_data=eval_data)
    if as_json:
        _echo_json(r)
        return
    click.echo(f"{r['train_images']} images fine-tuned for {r['epochs']} epochs (loss {r['loss_per_epoch']}); "
               f"figures on {r['held_out_images']} images ({r['figures_on']}):")
    for name, f in r["figures"].items():
        extra = (f", agreement with float {f['agreement_with_float']:.4f}, max |dp| {f['max_abs_delta_p']:.4f}"
                 if "agreement_with_float" in f else "")
        click.echo(f"{name}: accuracy {f['accuracy']:.4f}{extra}")


@cli.command()
@click.argument("model", type=click.Path())
@click.argument("data_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Every figure as JSON.")
@click.option("--report", type=click.Path(file_okay=False), default=None, help="Write report.md and plots here.")
@site_option
@labels_option
@input_range_option
@output_kind_option
def evaluate(model, data_dir, as_json, report, site, labels, input_range, output_kind):
    """Figures of a model (.tflite with or without a card, or a Keras model) on a labelled folder.

    A screening model's .tflite is evaluated through the screen (gate, orientation, site, trust): the
    scans it refuses are listed, not scored. Others: accuracy and per-class confusion."""
    from .convert.evaluate import evaluate as run

    with user_errors():
        r = run(model, data_dir, report=report, site=site, labels=labels,
                input_range=_floats(input_range, "--input-range"), output_kind=output_kind)
    if as_json:
        _echo_json(r)
        return
    click.echo(f"{r['n']} images scored ({r['road']}), threshold {r['threshold']:.3f}; {_device_line(r['device'])}")
    if "confusion" in r:
        click.echo(f"accuracy: {r['accuracy']:.4f}")
        _echo_confusion(r["confusion"])
    else:
        for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc", "ece",
                  "bacterial_vs_viral_accuracy"):
            if r.get(k) is not None:
                click.echo(f"{k}: {r[k]:.4f}")
        click.echo(f"type I errors (false positives): {r['type_I_errors']}  type II errors (missed): {r['type_II_errors']}")
    if r.get("refused"):
        click.echo(f"refused by the screen: {len(r['refused'])} (see --json)", err=True)
    if r["skipped"]:
        click.echo(f"unreadable: {len(r['skipped'])}", err=True)


def _echo_confusion(c: dict):
    width = max(len(n) for n in c["labels"]) + 2
    click.echo("true \\ predicted".ljust(width) + "".join(n.rjust(width) for n in c["labels"]))
    for n, row in zip(c["labels"], c["matrix"]):
        click.echo(n.ljust(width) + "".join(str(v).rjust(width) for v in row))


@cli.command()
@click.argument("float_model", type=click.Path())
@click.argument("int8_model", type=click.Path())
@click.argument("data_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Every figure as JSON.")
@labels_option
@input_range_option
@output_kind_option
def compare(float_model, int8_model, data_dir, as_json, labels, input_range, output_kind):
    """Compare two versions of a model (e.g. float and int8; .tflite or Keras) on a labelled folder."""
    from .convert.evaluate import compare as run

    with user_errors():
        r = run(float_model, int8_model, data_dir, labels=labels, input_range=_floats(input_range, "--input-range"),
                output_kind=output_kind)
    if as_json:
        _echo_json(r)
        return
    click.echo(f"{r['n']} images ({r['road']}): agreement {r['agreement']:.4f}, max |dp| {r['max_abs_delta_p']:.4f}, "
               f"mean |dp| {r['mean_abs_delta_p']:.5f}")
    for side in ("float", "int8"):
        click.echo(f"{side}: {_device_line(r[side])}")
    for k, v in r["delta"].items():
        click.echo(f"{k}: float {r['float'][k]:.4f}  int8 {r['int8'][k]:.4f}  delta {v:+.4f}")
    for side in ("float", "int8"):
        click.echo(f"{side} confusion:")
        _echo_confusion(r[side]["confusion"])
    for side, files in r["refused"].items():
        if files:
            click.echo(f"refused by the screen ({side}): {len(files)}", err=True)
    for d in r["disagreements"]:
        click.echo(f"disagree: {d['file']} float {d['float_p']:.3f} int8 {d['int8_p']:.3f}")


@cli.group()
def site():
    """Set the operating point on a clinic's own labelled scans, and check a site's scans for drift."""


@site.command("calibrate")
@click.argument("labelled_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The site file to write (SITE.json).")
@model_option
@click.option("--sensitivity", type=float, default=0.95, show_default=True,
              help="Target sensitivity on the site's new scans.")
@click.option("--overwrite", is_flag=True, help="Replace an existing site file.")
@click.option("--key", type=click.Path(dir_okay=False), default=None,
              help="The device key to sign the site file with (default: $EDGE_XRAY_KEY, else this user's "
                   "edge-xray key, when there is one).")
@allow_unverified_option
def site_calibrate(labelled_dir, out, model, sensitivity, overwrite, key, allow_unverified):
    """Screen a labelled folder (NORMAL/ and PNEUMONIA/) and write the site's threshold to SITE.json.

    Counts distinct scans: identical files and the same scan re-encoded or resized count once (one line
    each); the same scan under both labels is refused (exit 3)."""
    from pathlib import Path

    from .keys import load_key
    from .output import terminal
    from .screen import load_model
    from .site import calibrate_site, read_sample, write_site

    if Path(out).exists() and not overwrite:
        raise click.UsageError(f"{out} exists: give --overwrite to replace it")
    with user_errors():
        signer = load_key(key)
        screener = load_model(model, allow_unverified=allow_unverified)
        sample = read_sample(screener, labelled_dir)
        for s in sample.refused:
            click.echo(f"not used: {terminal(s.path)}: {s.status.upper()} - {terminal(s.error)}", err=True)
        for line in sample.lines():
            click.echo(line)
        data = calibrate_site(screener, sample, sensitivity)
        data = write_site(out, data, signer or False)
    c, se, sp = data["counts"], data["sensitivity"], data["specificity"]
    click.echo(f"{out}: threshold {data['threshold']:.4f} (card {data['card_threshold']:.4f}) for "
               f"{data['target_sensitivity']:.0%} sensitivity on new scans of this site")
    click.echo(f"sample: {c['NORMAL']} NORMAL, {c['PNEUMONIA']} PNEUMONIA distinct scans screened; {c['refused']} "
               f"refused and {c['unreadable']} unreadable not used"
               + (f"; {c['duplicate_files']} duplicate files counted once" if c["duplicate_files"] else ""))
    click.echo(f"sensitivity {se['estimate']:.3f} (95 % CI {se['ci95'][0]:.3f}-{se['ci95'][1]:.3f}), "
               f"specificity {sp['estimate']:.3f} (95 % CI {sp['ci95'][0]:.3f}-{sp['ci95'][1]:.3f}) on the sample")
    click.echo(f"signed by key {signer.id}" if signer else
               "not signed: this device has no key (`edge-xray key init` makes one)")
    if data["threshold"] > data["card_threshold"]:
        click.echo(f"note: this raises the threshold from {data['card_threshold']:.4f} to {data['threshold']:.4f}: "
                   "scans scoring between the two are no longer referred; the fewer the pneumonia scans in the "
                   "sample, the less sure this is (see the sensitivity interval above)")


@site.command("check")
@click.argument("folder", type=click.Path())
@model_option
@site_option
@click.option("--json", "as_json", is_flag=True)
@allow_unverified_option
def site_check(folder, model, site, as_json, allow_unverified):
    """Compare a folder of a site's scans (no labels) with the model's reference data: drift or not.

    Exit code 3 when it cannot tell: nothing could be screened, or fewer than 20 scans were (50 or more
    are needed for the full verdict; from 20, a large shift only)."""
    from .screen import load_model
    from .site import check_site

    with user_errors():
        screener = load_model(model, site=site, allow_unverified=allow_unverified)
        _site_note(screener)
        r = check_site(screener, folder)
    if as_json:
        _echo_json(r)
    else:
        click.echo(f"{r['screened']} screened, {r['refused']} refused, {r['unreadable']} unreadable; "
                   f"flagged PNEUMONIA: {r['flagged_pneumonia_share']}")
        for c in r["comparisons"] if r["enough"] else ():
            click.echo(f"{c['what']}: median {c['site_median']} against {c['reference_median']}; KS "
                       f"{c['ks_statistic']} (p={c['ks_p_value']:.3g}), PSI {c['psi']}{' - shifted' if c['shifted'] else ''}")
        click.echo(f"verdict: {r['verdict']}")
    if not r["enough"]:
        sys.exit(EXIT_INPUT)


def _site_note(screener):
    """Say on stderr when the site file in use is not verified by a signature."""
    note = getattr(screener.site, "note", None)
    if note:
        click.echo(f"note: {note}", err=True)


@cli.command("train-orientation")
@click.argument("data_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="MODEL.tflite (card MODEL.json beside it), e.g. edge_app/models/edge-xray-orientation-int8.tflite.")
@click.option("--run", type=click.Path(file_okay=False), default=None,
              help="The run folder (Keras model, evaluation views); default runs/MODEL-NAME. Must be new or empty.")
@click.option("--epochs", type=click.IntRange(1, 1000), default=None, help="Float epochs (default 4).")
@click.option("--seed", type=int, default=0, show_default=True, help="Also the split's seed (0: the main model's).")
def train_orientation(data_dir, out, run, epochs, seed):
    """Train the int8 orientation model (0/90/180/270 degrees) on a NORMAL/PNEUMONIA folder."""
    from pathlib import Path

    from .convert.auxiliary import convert_orientation, orientation_summary
    from .train.orientation import EPOCHS
    from .train.orientation import train_orientation as train

    if not out.endswith(".tflite"):
        raise click.UsageError(f"--out must end in .tflite (got {out})")
    run = run or str(Path("runs") / Path(out).stem)
    with user_errors():
        train(data_dir, run, epochs=epochs or EPOCHS, seed=seed)
        card = convert_orientation(run, out)
    for line in orientation_summary(card):
        click.echo(line)
    click.echo(f"{out}: {card['size_bytes'] / 1024:.1f} KB, sha256 {card['sha256']}")


@cli.command("train-intended-use")
@click.argument("data_dir", type=click.Path())
@click.option("--negatives", required=True, multiple=True, type=click.Path(),
              help="Folder with adult_frontal/, lateral/ and/or other_body/, and labels.csv (patient ids, "
                   "collections). Repeat for more folders.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="MODEL.tflite (card MODEL.json beside it), e.g. edge_app/models/edge-xray-intended-use-int8.tflite.")
@click.option("--run", type=click.Path(file_okay=False), default=None,
              help="The run folder (Keras model, evaluation set); default runs/MODEL-NAME. Must be new or empty.")
@click.option("--fullres", type=click.Path(file_okay=False), default=None,
              help="Full-resolution scans for the false-refusal check (default: DATA_DIR/../fullres if present).")
@click.option("--epochs", type=click.IntRange(1, 1000), default=None, help="Float epochs (default: the bundled recipe's).")
@click.option("--views", type=click.IntRange(64, 10**6), default=None,
              help="Augmented views per epoch, half positives (default 4096).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(10, 10**6), default=None, help="Use about this many positives (tests).")
@click.option("--hold-out-collection", "hold_out_collections", multiple=True,
              help="Hold out every negative of this collection (labels.csv `collection`): a measure on a collection "
                   "never learnt from. Repeatable.")
def train_intended_use(data_dir, negatives, out, run, fullres, epochs, views, seed, limit, hold_out_collections):
    """Train the int8 intended-use model (child frontal chest / adult / lateral / other body part / non-X-ray)."""
    from pathlib import Path

    from .convert.auxiliary import convert_intended_use, summary
    from .train.intended_use import EPOCHS, VIEWS_PER_EPOCH
    from .train.intended_use import train_intended_use as train

    if not out.endswith(".tflite"):
        raise click.UsageError(f"--out must end in .tflite (got {out})")
    run = run or str(Path("runs") / Path(out).stem)
    if fullres is None and (Path(data_dir).parent / "fullres").is_dir():
        fullres = str(Path(data_dir).parent / "fullres")
    with user_errors():
        train(data_dir, negatives, run, fullres=fullres, epochs=epochs or EPOCHS, views=views or VIEWS_PER_EPOCH,
              seed=seed, limit=limit, hold_out_collections=hold_out_collections)
        card = convert_intended_use(run, out)
    for line in summary(card):
        click.echo(line)
    click.echo(f"{out}: {card['size_bytes'] / 1024:.1f} KB, sha256 {card['sha256']}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any other than 127.0.0.1, localhost or ::1 needs an access code.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free port.")
@model_option
@site_option
@click.option("--audit-log", type=click.Path(dir_okay=False), default=None,
              help="Append one JSON line per screening (hashes and results, no pixels or patient data).")
@click.option("--pin", default=None, envvar="EDGE_XRAY_PIN",
              help="The access code (default: $EDGE_XRAY_PIN; else none on this device's own addresses, "
                   "a new random one, printed at start, on any other).")
@click.option("--pin-file", type=click.Path(dir_okay=False), default=None,
              help="Read the access code from the first line of this file (it then never shows in `ps`).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="The worklist's folder (default: $XDG_DATA_HOME/edge-xray or ~/.local/share/edge-xray).")
@click.option("--retention-days", type=click.IntRange(1, 3650), default=90, show_default=True,
              help="Results older than this are deleted from the worklist (the audit log keeps its record).")
@click.option("--lang", default=None, envvar="EDGE_XRAY_LANG",
              help="The page's language when the browser asks for none available (en, fr, pt, es; "
                   "default: $EDGE_XRAY_LANG, else English).")
@allow_unverified_option
@no_gate_option
def serve(host, port, model, site, audit_log, pin, pin_file, data_dir, retention_days, lang, allow_unverified, no_gate):
    """Serve the screening page, its worklist and the JSON API to a browser, offline. Stop with Ctrl+C."""
    from .i18n import normalize
    from .serve import serve as run

    if lang and not normalize(lang):
        raise click.UsageError(f"--lang: no catalogue for {lang!r}")
    with user_errors():
        run(model, host=host, port=port, site=site, audit_log=audit_log, pin=pin, pin_file=pin_file, data_dir=data_dir,
            retention_days=retention_days, lang=normalize(lang), allow_unverified=allow_unverified, no_gate=no_gate,
            echo=lambda line: click.echo(line) or sys.stdout.flush())


def main():
    cli(prog_name="edge-xray")


if __name__ == "__main__":
    main()
