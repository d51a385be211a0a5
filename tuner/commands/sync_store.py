"""`python -m tuner sync-store URI [--cache DIR]`: copy a feature store to this node's disk once; print its path.

`python -m tuner sync-store LOCAL_STORE --upload s3://bucket/stores/name` uploads a prepared store instead.
"""
from __future__ import annotations

import argparse

HELP = "copy a feature store from a bucket to this node's local disk once (or --upload one) and print the path"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="the store: s3://, gs://, file:// URI or a local/shared path "
                                    "(with --upload: the local store folder to upload)")
    parser.add_argument("--cache", default=None,
                        help="local folder for store copies (default $DEEPEMOCLUSTER_STORE_CACHE "
                             "or ~/.cache/deepemocluster/stores)")
    parser.add_argument("--upload", metavar="DEST_URI", default=None,
                        help="upload the local store URI to this bucket URI (with a sha256 manifest) instead")


def main(args: argparse.Namespace) -> int:
    from model.atomic_files import check_output_dir
    from tuner.storage.store_sync import ensure_local_store, upload_store

    if args.cache is not None:
        check_output_dir(args.cache, "--cache")
    if args.upload:
        upload_store(args.uri, args.upload)
        print(args.upload)
    else:
        print(ensure_local_store(args.uri, args.cache))
    return 0
