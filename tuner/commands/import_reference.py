"""`python -m tuner import-reference CKPT --norm-terms DIR --attribute act --out MODEL`."""
from __future__ import annotations

import argparse
import sys

HELP = "convert a published DeepEmoCluster checkpoint (+ its NormTerm folder) into a model file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the reference's .pth.tar checkpoint")
    parser.add_argument("--norm-terms", required=True, metavar="DIR",
                        help="the reference's NormTerm folder (feat_norm_*.mat, <attr>_norm_*.mat)")
    parser.add_argument("--attribute", metavar="ATTR",
                        help="act, dom or val: what the checkpoint predicts (default: from its file name, "
                             "e.g. ..._Act.pth.tar)")
    parser.add_argument("--out", required=True, metavar="MODEL", help="the model file to write")


def main(args: argparse.Namespace) -> int:
    from model.atomic_files import check_output_file
    from model.errors import UserError
    from model.model_file import save_model
    from model.reference import attribute_from_filename, import_reference

    check_output_file(args.out)
    named = attribute_from_filename(args.checkpoint)
    attribute = args.attribute or named
    if attribute is None:
        raise UserError(f"{args.checkpoint}: cannot tell the attribute from the file name; "
                        "pass --attribute act, dom or val")
    if named is not None and attribute.lower() != named:
        print(f"warning: {args.checkpoint} is named for {named!r} but --attribute is {attribute!r}; "
              f"using {attribute!r}", file=sys.stderr)
    network, info = import_reference(args.checkpoint, args.norm_terms, attribute)
    save_model(args.out, network, info)
    print(f"wrote {args.out}: reference DeepEmoCluster for {info.config.attributes[0]} "
          f"(K={info.config.num_clusters}, m={info.config.chunk_frames}, C={info.config.chunks_per_sentence}, "
          f"features {info.feature_spec['kind']!r})")
    return 0
