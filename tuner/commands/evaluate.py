"""`python -m tuner evaluate MODEL --store STORE [--split Test1]`: CCC per attribute as JSON."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "CCC per attribute of a model file (or a folder of fold models, averaged) on a store split (prints JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model file, or a folder of model files (e.g. a cv_folds run's best_model/)")
    parser.add_argument("--store", required=True, help="a feature store prepared with the model's features")
    parser.add_argument("--split", default="Test1", help="the split to evaluate on (default Test1)")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda or cuda:N")
    parser.add_argument("--batch-sentences", type=int, default=64, help="utterances per network batch")


def main(args: argparse.Namespace) -> int:
    from model.errors import UserError
    from model.inference import evaluate_store

    if args.batch_sentences < 1:
        raise UserError(f"--batch-sentences={args.batch_sentences} is invalid: expected an integer >= 1")
    result = evaluate_store(args.model, args.store, args.split, args.device, args.batch_sentences)
    if result["utterances"] < 2:
        print(f"warning: split {args.split!r} has {result['utterances']} labeled utterance(s); a CCC needs at "
              "least 2 and is reported as 0", file=sys.stderr)
    print(json.dumps(result))
    return 0
