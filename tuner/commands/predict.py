"""`python -m tuner predict MODEL AUDIO... --out preds.csv`: attribute predictions (1..7) per audio file.

MODEL is a model file or a folder of model files (a CV run's fold models: their predictions are
averaged). `--attribute-from act=MODEL_A val=MODEL_B` (or a YAML file mapping attributes to models,
paths relative to the YAML's folder) takes each attribute from its own model; MODEL is left out then.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

HELP = "predict emotional attributes (1..7) for audio files with a model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="MODEL_THEN_AUDIO",
                        help="a model file (train's best_model.pt, import-reference's output) or a folder of "
                             "model files (an ensemble), then audio files or folders (their audio files, sorted); "
                             "without MODEL when --attribute-from is given")
    parser.add_argument("--attribute-from", nargs="+", metavar="ATTR=MODEL",
                        help="take each attribute from its own model: act=MODEL_A val=MODEL_B, or a YAML file "
                             "{act: MODEL_A, val: MODEL_B}")
    parser.add_argument("--out", required=True, help="the CSV to write: columns file, then one per attribute")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda or cuda:N")
    parser.add_argument("--batch-sentences", type=int, default=64, help="utterances per network batch")


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given; a folder stands for its audio files (sorted, not recursive)."""
    from model.corpora import AUDIO_EXTENSIONS

    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            out.append(item)
    return out


def write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """Write rows atomically (temporary file in the same folder, then rename)."""
    from model.atomic_files import atomic_write

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] if c == "file" else f"{row[c]:.6f}" for c in columns])
    atomic_write(path, buf.getvalue())


def attribute_choice(specs: list[str]) -> tuple[dict[str, str], list[str]]:
    """--attribute-from's items as {attribute: model}, plus the items that are audio (argparse's nargs
    also takes the audio files that follow the option)."""
    from model.corpora import ATTRIBUTES
    from model.errors import UserError
    from tuner.storage.uris import display_uri, is_uri
    from model.yaml_files import read_yaml

    choice: dict[str, str] = {}
    audio: list[str] = []

    def add(attr: str, model: str, where: str) -> None:
        if is_uri(model):
            raise UserError(f"--attribute-from {where}: {attr}: {display_uri(model)} is a URI; predict reads local "
                            "model files: copy the model to this machine and give its path")
        if attr not in ATTRIBUTES:
            raise UserError(f"--attribute-from {where}: unknown attribute {attr!r}; expected one of "
                            f"{', '.join(ATTRIBUTES)}")
        if attr in choice:
            raise UserError(f"--attribute-from: {attr} is given twice ({choice[attr]} and {model})")
        choice[attr] = model

    for item in specs:
        attr, sep, model = item.partition("=")
        if sep and (attr in ATTRIBUTES or not Path(item).exists()):
            if not model:
                raise UserError(f"--attribute-from {item}: expected ATTR=MODEL, e.g. act=runs/a/best_model.pt")
            add(attr.strip(), model, item)
        elif Path(item).suffix.lower() in (".yaml", ".yml"):
            table = read_yaml(item)
            if not isinstance(table, dict) or not table or not all(isinstance(v, str) for v in table.values()):
                raise UserError(f"--attribute-from {item}: expected a mapping of attribute to model file, "
                                "e.g. {act: runs/a/best_model.pt, val: runs/b/best_model.pt}")
            for attr, model in table.items():
                add(str(attr), model if is_uri(model) else str(Path(item).parent / model), item)
        else:
            audio.append(item)
    if not choice:
        raise UserError("--attribute-from: no ATTR=MODEL given (e.g. --attribute-from act=MODEL_A val=MODEL_B)")
    return choice, audio


def refuse_models(audio: list[str]) -> None:
    """With --attribute-from every attribute comes from its own model: a model among the audio is a mistake
    (it was read as audio and skipped, and the attributes it should have given were left out)."""
    from model.errors import UserError

    for item in audio:
        path = Path(item)
        if path.suffix == ".pt" or (path.is_dir() and any(path.glob("*.pt"))):
            raise UserError(f"{item}: a model given with --attribute-from; there each attribute comes from its own "
                            "model: name this one there too (e.g. --attribute-from dom=MODEL act=OTHER), audio only "
                            "before it")


def main(args: argparse.Namespace) -> int:
    from model.atomic_files import check_output_file
    from model.errors import UserError
    from model.corpora import ATTRIBUTES, AUDIO_EXTENSIONS
    from model.devices import resolve_device
    from model.inference import predict_by_attribute, predict_files, resolve_models

    if args.batch_sentences < 1:
        raise UserError(f"--batch-sentences={args.batch_sentences} is invalid: expected an integer >= 1")
    check_output_file(args.out)   # before any prediction is computed
    if args.attribute_from:
        choice, more_audio = attribute_choice(args.attribute_from)
        audio = list(args.inputs) + more_audio
        refuse_models(audio)
    else:
        if not args.inputs:
            raise UserError("give MODEL (a model file or a folder of model files), then audio files or folders")
        choice, audio = None, list(args.inputs[1:])
    paths = expand_inputs(audio)
    if not paths:
        raise UserError("no audio files given (give MODEL, then audio files or folders; the folders named hold no "
                        + "/".join(AUDIO_EXTENSIONS) + " files)")
    device = resolve_device(args.device, "--device")
    notes: dict[str, str] = {}   # files prepare would list as implausible: predicted, with a warning
    if choice is None:
        members = resolve_models(args.inputs[0], device)
        attributes = list(members[0][1].config.attributes)
        rows, failures = predict_files(members, paths, device, args.batch_sentences, notes)
    else:
        rows, failures = predict_by_attribute(choice, paths, device, args.batch_sentences, notes)
        attributes = [a for a in ATTRIBUTES if a in choice]
    for path, note in notes.items():
        print(f"warning: {path}: {note}; predicted anyway (doubtful)", file=sys.stderr)
    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not rows:
        raise UserError(f"none of the {len(paths)} audio file(s) could be read (reasons above); "
                        f"nothing written to {args.out}")
    write_csv(args.out, rows, ["file", *attributes])
    summary = f"wrote {len(rows)} prediction(s) to {args.out}"
    if failures:
        summary += f"; {len(failures)} file(s) skipped (see above)"
    print(summary, file=sys.stderr)
    return 0
