"""`python -m tuner train --store STORE [--config FILE.yaml] [--set key=value ...] --out DIR [--resume]`.

Trains one DeepEmoCluster model. DIR receives config.yaml, metrics.jsonl (one JSON object per
epoch), TensorBoard events, checkpoint/ (every epoch), best_model.pt (a cv_folds run: best_model/, the
fold models) and status.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from tuner.commands.common import add_set_argument

HELP = "train one DeepEmoCluster model on a feature store (resumable)"
RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoint", "best_model.pt", "best_model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, help="a feature store made by `python -m tuner prepare`")
    parser.add_argument("--config", help="a YAML file of TrainConfig keys (defaults for the rest)")
    add_set_argument(parser)
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last complete epoch (with --set only "
                             "epochs, num_threads, device or embed_batch_chunks may change)")


def tensorboard_tag(key: str) -> str | None:
    """TensorBoard tag of a metrics key, the same as a search trial's (None: not logged)."""
    from tuner.runs.metric_tags import tag_for

    return None if key in ("epoch", "is_best", "train_sentences", "ssl_sentences") else tag_for(key)


def format_line(metrics: dict[str, Any], epochs: int, attributes: list[str]) -> str:
    """The one line printed per epoch."""
    ccc = " ".join(f"{a} {metrics[f'val_ccc_{a}']:.3f}" for a in attributes)
    parts = [f"epoch {metrics['epoch']}/{epochs}", f"val ccc {ccc} (mean {metrics['val_ccc_mean']:.3f})",
             f"loss {metrics['loss_total']:.3f} (ce {metrics['loss_ce']:.3f} ccc {metrics['loss_ccc']:.3f}"
             + (f" triplet {metrics['loss_triplet']:.3f}" if "loss_triplet" in metrics else "") + ")"]
    if "ssl_loss_ce" in metrics:
        parts.append(f"ssl ce {metrics['ssl_loss_ce']:.3f}")
    parts.append(f"nmi {metrics['nmi']:.3f}" if math.isfinite(metrics["nmi"]) else "nmi -")
    parts.append(f"{metrics['time_epoch_s']:.1f} s ({metrics['chunks_per_s']:.0f} chunks/s)")
    if metrics["is_best"]:
        parts.append("best")
    return "  ".join(parts)


def _write_status(out: Path, state: str, epoch: int, message: str = "") -> None:
    from model.atomic_files import atomic_write

    atomic_write(out / "status.json", json.dumps({"state": state, "epoch": epoch, "message": message}) + "\n")


def main(args: argparse.Namespace) -> int:
    from model.atomic_files import check_output_dir
    from model.locks import describe_holder, writer_lock

    out = check_output_dir(args.out)
    with writer_lock(out, "run folder (--out)") as previous:
        if previous:
            print(f"note: took over the lock of a process that is gone ({describe_holder(previous)})",
                  file=sys.stderr)
        for stale in out.glob(".*.tmp"):   # temporary files of a killed run (we hold the lock: nobody writes them)
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        return _train(args, out)


def _train(args: argparse.Namespace, out: Path) -> int:
    """The training run, with the lock on `out` held."""
    from torch.utils.tensorboard import SummaryWriter

    from model.trainer import TrainingDiverged
    from tuner.search.stop_signals import held

    config = _config(args, out)
    trainer, best, checkpoint_dir = _start(args, out, config)
    writer = SummaryWriter(log_dir=str(out))
    resume_hint = f"python -m tuner train --store {args.store} --out {out} --resume"
    try:
        _write_status(out, "running", trainer.epoch)
        summary = trainer.fit(_epoch_records(out, trainer, best, config, writer), checkpoint_dir)
    except KeyboardInterrupt:   # Ctrl+C or SIGTERM (tuner.search.stop_signals)
        from tuner.search.stop_signals import exit_code

        done = _checkpoint_epoch(checkpoint_dir)
        _write_status(out, "interrupted", done, f"continue with: {resume_hint}")
        kept = (f"the checkpoint of the last complete epoch ({done}) is in {checkpoint_dir}" if done
                else "no complete epoch was checkpointed yet")
        print(f"interrupted: {kept}; continue with:\n  {resume_hint}", file=sys.stderr, flush=True)
        return exit_code()   # 130 Ctrl+C, 143 SIGTERM
    except TrainingDiverged as exc:
        _write_status(out, "failed", trainer.epoch, str(exc))
        raise
    finally:
        with held(act_after=False):   # joins TensorBoard's writer thread; the outcome is decided already
            writer.close()
    if not best.exists():
        trainer.save_best_model(best)
    _write_status(out, "completed", trainer.epoch)
    print(f"done: {summary['epochs']} epochs, best val_ccc_mean {summary['best_val_ccc_mean']:.4f} "
          f"at epoch {summary['best_epoch']}; model: {best}", flush=True)
    return 0


def _config(args: argparse.Namespace, out: Path):
    """The run's TrainConfig: --config and --set for a new run, the run's config.yaml and --set to resume."""
    from model.config import TrainConfig
    from model.errors import UserError

    present = [name for name in RUN_MARKERS if (out / name).exists()]
    if args.resume:
        if not (out / "config.yaml").is_file():
            raise UserError(f"--resume: {out} holds no run to continue (no {out / 'config.yaml'})")
        if args.config:
            raise UserError("--config cannot be combined with --resume: the run keeps its config.yaml "
                            "(use --set epochs=N to extend it)")
        return TrainConfig.load(out / "config.yaml", args.set)
    if present:
        raise UserError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                        "or choose another --out")
    return TrainConfig.load(args.config, args.set)


def _start(args: argparse.Namespace, out: Path, config) -> tuple[Any, Path, Path]:
    """The trainer (restored from the run's checkpoint with --resume), its best model's path and the
    checkpoint folder; config.yaml and metrics.jsonl written to match the checkpoint."""
    import yaml

    from model.atomic_files import atomic_write
    from model.checkpoint import best_model_name, find_checkpoint
    from model.cv import make_trainer
    from model.metrics import json_metrics

    trainer = make_trainer(config, args.store)   # checks the store before anything is written to --out
    best = out / best_model_name(config)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = out / "checkpoint"
    if args.resume and find_checkpoint(checkpoint_dir) is not None:
        trainer.load_checkpoint(checkpoint_dir)
        trainer.save_best_model(best)
        print(f"resuming {out} after epoch {trainer.epoch}", flush=True)
    atomic_write(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    # metrics.jsonl always matches the checkpoint: an epoch interrupted before its checkpoint is dropped
    atomic_write(out / "metrics.jsonl", "".join(json.dumps(json_metrics(m)) + "\n" for m in trainer.history))
    return trainer, best, checkpoint_dir


def _epoch_records(out: Path, trainer, best: Path, config, writer) -> Callable[[dict[str, Any]], bool]:
    """Trainer.fit's per-epoch callback: the epoch's metrics.jsonl line, TensorBoard scalars, best model,
    status.json and printed line, all before a Ctrl+C or SIGTERM acts."""
    from model.metrics import finite_metrics, json_metrics
    from tuner.search.stop_signals import held

    attributes = list(config.attributes)

    def on_epoch(metrics: dict[str, Any]) -> bool:
        with held():   # Ctrl+C or SIGTERM acts after the epoch's records (TensorBoard's flush waits on its thread)
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(json_metrics(metrics)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            for key, value in finite_metrics(metrics).items():
                tag = tensorboard_tag(key)
                if tag is not None:
                    writer.add_scalar(tag, value, metrics["epoch"])
            writer.flush()
            if metrics["is_best"]:
                trainer.save_best_model(best)
            _write_status(out, "running", metrics["epoch"])
            print(format_line(metrics, config.epochs, attributes), flush=True)
        return False

    return on_epoch


def _checkpoint_epoch(checkpoint_dir: Path) -> int:
    """Epoch of the checkpoint on disk, 0 when there is none (the trainer may be mid-epoch or mid-save)."""
    from model.checkpoint import read_checkpoint
    from model.errors import UserError

    try:
        return int(read_checkpoint(checkpoint_dir)["epoch"])
    except UserError:
        return 0
