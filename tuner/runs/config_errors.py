"""A trial whose configuration cannot train on the store (a UserError while the trial sets up: an invalid
TrainConfig, num_clusters above the store's chunks, ...) fails the same way on every try, so it is not retried.

Ray Tune retries every exception a trial raises (FailureConfig.max_failures applies to all), so the trial does
not raise it: it writes the message to `config_error.txt` in its folder of the run (RUN/<experiment>/trial_<id>/,
local or bucket) and returns without reporting; Ray ends it at once. What reads the run then treats that trial
as failed on that error: the study marks its Optuna trial FAIL (user attribute `config_error`), `status` counts
it as an error and names it, and a `run` or `resume` in which no trial reported a result exits 2 with one
`error:` line per distinct message (tuner.commands.common.finish). In a confirmation (experiment `confirm`) the
seed is `failed` on that message in confirm.json and confirm.md, and `confirm` exits 2 with one `error:` line per
distinct message naming its configurations and seeds (tuner.answers.confirm.results.config_error_lines).
"""
from __future__ import annotations

from dataclasses import dataclass

from tuner.runs.run_dir import RunDir

CONFIG_ERROR = "config_error.txt"


@dataclass(frozen=True)
class ConfigErrorRecorder:
    """Records the configuration error of a trial of experiment `experiment` (a condition's label, or `confirm`)
    of a run, in the trial's folder."""
    storage: str
    run_name: str
    experiment: str

    def record(self, trial_folder: str, message: str) -> None:
        RunDir(self.storage, self.run_name).write_text(message + "\n", self.experiment, trial_folder, CONFIG_ERROR)


def read_config_error(run: RunDir, experiment: str, trial_folder: str) -> str | None:
    """The configuration error a trial recorded (None: it recorded none)."""
    if not run.exists(experiment, trial_folder, CONFIG_ERROR):
        return None
    return run.read_text(experiment, trial_folder, CONFIG_ERROR).strip()


def error_lines(errors: list[dict[str, str]]) -> list[str]:
    """One line per distinct message of `errors` ({condition, trial_id, error}), naming the trials that hit it."""
    by_message: dict[str, dict[str, list[str]]] = {}
    for e in errors:
        by_message.setdefault(e["error"], {}).setdefault(e["condition"], []).append(e["trial_id"])
    lines = []
    for message, trials in by_message.items():
        where = "; ".join(f"condition {c}: {', '.join(ids)}" for c, ids in trials.items())
        count = sum(len(ids) for ids in trials.values())
        lines.append(f"{message} ({count} trial(s) failed on it, not retried: {where})")
    return lines
