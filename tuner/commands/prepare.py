"""`python -m tuner prepare CORPUS --out STORE`: extract features into a feature store."""
from __future__ import annotations

import argparse

HELP = "extract features of a corpus into a feature store (no-op when the corpus is unchanged)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", help="MSP-Podcast folder (Labels/labels_consensus.csv + Audio/), a manifest "
                                       ".csv, or a folder of unlabeled audio")
    parser.add_argument("--out", required=True, help="the store folder to create or update")
    parser.add_argument("--features", choices=("logmel", "reference"), default="logmel",
                        help="logmel (dB, default) or reference (mel power, the reference implementation's)")
    parser.add_argument("--norm-terms", metavar="DIR", default=None,
                        help="normalise with the reference's NormTerm/*.mat instead of the Train split's terms")
    parser.add_argument("--workers", type=int, default=None, help="extraction processes (default: the CPUs available)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default=None,
                        help="frame storage type (default float16; see docs/store.md)")
    parser.add_argument("--unlabeled", metavar="DIR", action="append", default=[],
                        help="a folder of unlabeled audio to add to the pool (repeatable)")
    parser.add_argument("--label-range", nargs=2, type=float, metavar=("LOW", "HIGH"), default=None,
                        help="the label scale of the corpus (default 1 7, MSP-Podcast's); labels outside it, "
                             "or infinite, are reported and treated as missing")
    parser.add_argument("--force", action="store_true", help="rebuild even if the corpus is unchanged")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def duration(hours: float) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if hours < 1 / 60:
        return f"{hours * 3600:.1f} s"
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.2f} h"


def summary(report: dict) -> str:
    """The terminal summary of a prepare report."""
    lines = [f"store {report['store']}: {report['utterances']} utterances ({report['labeled']} labeled, "
             f"{report['unlabeled']} unlabeled), {duration(report['hours'])}, {report['frames']} frames, {report['dtype']}"]
    for split, c in report["by_split"].items():
        lines.append(f"  {split}: {c['utterances']} utterances, {c['labeled']} labeled, {duration(c['hours'])}")
    if report.get("realtime_factor") and report["status"] == "built":
        lines.append(f"  extraction: {report['extraction_seconds']:.1f} s with {report['workers']} workers "
                     f"({report['realtime_factor']:.0f}x real time)")
    problems = report["problems"]
    rejected = {r: p for r, p in problems.items() if not p["kept"] and not p.get("skipped")}
    kept = {r: p for r, p in problems.items() if p["kept"]}
    skipped = {r: p for r, p in problems.items() if p.get("skipped")}
    lines.append(f"  rejected: {report['rejected']}" + ("" if rejected else " (none)"))
    for title, group in (("rejected", rejected), ("kept", kept), ("skipped", skipped)):
        for reason, p in group.items():
            more = f" (+{p['count'] - len(p['examples'])} more)" if p["count"] > len(p["examples"]) else ""
            lines.append(f"    {reason} [{title}]: {p['count']}: {', '.join(p['examples'])}{more}")
    if report.get("audio_not_in_table"):
        lines.append(f"  audio files under Audio/ not named in the label table (ignored): {report['audio_not_in_table']}")
    lines.append(f"  full list: {report['store']}/report.json")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from model.corpora import LABEL_RANGE
    from model.store_build import DEFAULT_DTYPE, prepare_store

    if args.workers is not None and args.workers < 1:
        from model.errors import UserError
        raise UserError(f"--workers {args.workers}: expected an integer >= 1")
    report = prepare_store(args.corpus, args.out, features=args.features, norm_terms=args.norm_terms,
                           workers=args.workers, dtype=args.dtype or DEFAULT_DTYPE, unlabeled=args.unlabeled,
                           progress=not args.quiet, force=args.force,
                           label_range=tuple(args.label_range) if args.label_range else LABEL_RANGE)
    if report["status"] == "unchanged":
        print(f"store {args.out} is up to date with {args.corpus} (unchanged corpus and settings): nothing to do")
        return 0
    print(summary(report))
    return 0
