"""Which configurations report which metric: the metrics a Trainer reports only under some settings.

Every epoch reports val_ccc_mean, loss_total, loss_ce and loss_ccc; the others below exist only when one
config key allows it (model/trainer.py run_epoch). A metric that picks the best model or ranks a search must
be reported by every configuration, so the search space (tuner.space.reported) and the Trainer
(Trainer.select_best_by) refuse one that some configuration never reports. `nmi` has no value in epoch 1
(NOT_IN_FIRST_EPOCH): whatever judges trials by it waits for epoch 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Needs:
    """A metric is reported only when the config key `key` satisfies `holds`; `text` says so in messages."""
    key: str
    holds: Callable[[Any], bool]
    text: str


def _attribute(name: str) -> Needs:
    return Needs("attributes", lambda value: name in value, f"attributes that include {name}")


REPORTED_WHEN = {
    "loss_triplet": Needs("temporal", lambda value: value == "triplet",
                          "temporal: triplet (the other variants have no triplet loss)"),
    "val_ccc_act": _attribute("act"),
    "val_ccc_dom": _attribute("dom"),
    "val_ccc_val": _attribute("val"),
    "ssl_loss_ce": Needs("unlabeled_pool", lambda value: value != 0,
                         "an unlabeled pool for the SSL stage (unlabeled_pool other than 0)"),
    "nmi": Needs("epochs", lambda value: value >= 2,
                 "at least 2 epochs (nmi compares an epoch's clusters with the previous epoch's)"),
}


# Metrics without a value in epoch 1 (NaN: left out of that epoch's report)
NOT_IN_FIRST_EPOCH = ("nmi",)


def unreported(metric: str, config: Any) -> str | None:
    """Why a run of `config` (a TrainConfig) never reports `metric`; None when it does (or may: the SSL
    metric also needs unlabeled utterances in the store, which only the Trainer knows)."""
    needs = REPORTED_WHEN.get(metric)
    if needs is None or needs.holds(getattr(config, needs.key)):
        return None
    return f"{needs.key}={getattr(config, needs.key)!r}; it is reported only with {needs.text}"
