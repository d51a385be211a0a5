"""`python -m tuner synth OUT`: write the bundled synthetic emotional speech corpus."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "Write a synthetic emotional speech corpus in MSP-Podcast layout (Audio/, Labels/, Unlabeled/)."


def _int_at_least(low: int):
    """An argparse type: an integer >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options of `synth`."""
    parser.add_argument("out", type=Path, metavar="OUT",
                        help="folder to create (must not exist, or be empty)")
    parser.add_argument("--utterances", type=_int_at_least(1), default=600, metavar="N",
                        help="labelled utterances (default 600; at least --speakers)")
    parser.add_argument("--unlabeled", type=_int_at_least(0), default=200, metavar="N",
                        help="utterances in the unlabeled pool (default 200)")
    parser.add_argument("--speakers", type=_int_at_least(3), default=30, metavar="S",
                        help="labelled speakers, split about 70/15/15 into Train/Validation/Test1 "
                             "(default 30)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, metavar="X",
                        help="random seed (default 0)")
    parser.add_argument("--workers", type=_int_at_least(1), default=None, metavar="W",
                        help="worker processes (default: 2 for big corpora, else 1); "
                             "does not change the output")


def main(args: argparse.Namespace) -> int:
    """Write the corpus and print a one-line summary."""
    import json

    from model.atomic_files import check_output_dir
    from model.synth import synthesize_corpus

    check_output_dir(args.out, "OUT")
    existed = (args.out / "synth.json").is_file()
    started = time.perf_counter()
    out = synthesize_corpus(args.out, utterances=args.utterances, unlabeled=args.unlabeled,
                            speakers=args.speakers, seed=args.seed, workers=args.workers)
    info = json.loads((out / "synth.json").read_text())
    if existed:
        print(f"{out}: already holds this synthetic corpus (seed {args.seed}); nothing to do")
        return 0
    hours = (info["labelled_seconds"] + info["unlabeled_seconds"]) / 3600
    splits = ", ".join(f"{k} {v}" for k, v in info["splits"].items())
    print(f"wrote {out}: {args.utterances} labelled utterances ({splits}) from {args.speakers} speakers, "
          f"{args.unlabeled} unlabeled, {hours:.2f} h of audio in {time.perf_counter() - started:.1f} s")
    return 0
