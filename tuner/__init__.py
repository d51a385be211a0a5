"""DeepEmoCluster Tuner: orchestration (Ray Tune + Optuna) and the command line.

Packages by job (docs/architecture.md): `storage` (URIs, the store's copy per node), `space` (the search space),
`runs` (a run folder and what is read from it), `search` (the Ray Tune driver and trainable), `answers`
(confirmation and report) and `commands` (one module per sub-command, dispatched by `cli`).

The modules' names before they moved into these packages still import, as forwarding stubs: Ray pickles a
condition's searcher, scheduler, loggers and trial-folder function into RUN/<condition>/tuner.pkl, and the
searcher pickles the space's sampler into its state file, by reference to the module that defines them, so
a run started before the move resumes only if those names still lead to the same objects.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old module name -> the module (or modules, when it was split) its names are in now
MOVED: dict[str, str | tuple[str, ...]] = {
    "tuner.uris": "tuner.storage.uris", "tuner.store_sync": "tuner.storage.store_sync",
    "tuner.space_schema": "tuner.space.schema", "tuner.search_space": ("tuner.space.parse", "tuner.space.schema"),
    "tuner.run_dir": "tuner.runs.run_dir", "tuner.optuna_studies": "tuner.runs.studies",
    "tuner.trial_records": "tuner.runs.trials", "tuner.trial_record": "tuner.runs.checkpoint_reports",
    "tuner.result_log": "tuner.runs.result_log", "tuner.tensorboard_log": "tuner.runs.tensorboard_log",
    "tuner.run_summary": "tuner.runs.summary", "tuner.export": "tuner.runs.export",
    "tuner.experiment": "tuner.search.experiment", "tuner.trainable": "tuner.search.trainable",
    "tuner.hold": "tuner.search.hold", "tuner.study_searcher": "tuner.search.study_searcher",
    "tuner.scheduler_state": "tuner.search.scheduler_state",
    "tuner.side_by_side": ("tuner.search.side_by_side", "tuner.search.run_limiter"),
    "tuner.stop_signals": "tuner.search.stop_signals",
    "tuner.confirm": ("tuner.answers.confirm.run", "tuner.answers.confirm.plan", "tuner.answers.confirm.trial",
                      "tuner.runs.confirm_files"),
    "tuner.confirm_results": ("tuner.answers.confirm.results", "tuner.answers.confirm.compare",
                              "tuner.answers.confirm.table", "tuner.runs.confirm_files"),
    "tuner.significance": "tuner.answers.confirm.significance", "tuner.report": "tuner.answers.report.page",
    "tuner.report_data": "tuner.answers.report.data", "tuner.report_figures": "tuner.answers.report.figures",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as a stub whose attributes are the new module's (PEP 562 __getattr__)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return None   # a plain, empty module

    def exec_module(self, module) -> None:
        targets = MOVED[module.__name__]
        targets = (targets,) if isinstance(targets, str) else targets

        def forward(attr: str):
            for target in targets:
                new = importlib.import_module(target)
                if hasattr(new, attr):
                    return getattr(new, attr)
            raise AttributeError(f"module {module.__name__!r} (moved to {', '.join(targets)}) has no attribute {attr!r}")

        module.__getattr__ = forward


sys.meta_path.insert(0, _MovedModules())   # before any other finder (an editable install of an older checkout)
