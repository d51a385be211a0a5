"""`python -m tuner predict MODEL AUDIO... --out preds.csv`: attribute predictions (1..7) per audio file."""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from pathlib import Path

HELP = "predict emotional attributes (1..7) for audio files with a model file"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file (train's best_model.pt or import-reference's output)")
    parser.add_argument("audio", nargs="+", help="audio files, or folders (their audio files, sorted)")
    parser.add_argument("--out", required=True, help="the CSV to write: columns file, then one per attribute")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda or cuda:N")
    parser.add_argument("--batch-sentences", type=int, default=64, help="utterances per network batch")


def expand_inputs(items: list[str]) -> list[str]:
    """Files as given; a folder stands for its audio files (sorted, not recursive)."""
    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            out += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
        else:
            out.append(item)
    return out


def write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    """Write rows atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] if c == "file" else f"{row[c]:.6f}" for c in columns])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(args: argparse.Namespace) -> int:
    from model.errors import UserError
    from model.inference import predict_files, resolve_device, resolve_model

    if args.batch_sentences < 1:
        raise UserError(f"--batch-sentences={args.batch_sentences} is invalid: expected an integer >= 1")
    paths = expand_inputs(args.audio)
    if not paths:
        raise UserError("no audio files given (the folders named hold no " + "/".join(AUDIO_SUFFIXES) + " files)")
    network, info = resolve_model(args.model, resolve_device(args.device))
    rows, failures = predict_files((network, info), paths, args.device, args.batch_sentences)
    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not rows:
        print(f"error: none of the {len(paths)} audio file(s) could be read; nothing written to {args.out}",
              file=sys.stderr)
        return 1
    write_csv(args.out, rows, ["file", *info.config.attributes])
    summary = f"wrote {len(rows)} prediction(s) to {args.out}"
    if failures:
        summary += f"; {len(failures)} file(s) skipped (see above)"
    print(summary, file=sys.stderr)
    return 0
