"""What is done with a trained run: rotor energy profiles (:mod:`eqbench.evaluate.profile`), molecular
dynamics (:mod:`eqbench.evaluate.md`) and IR spectra (:mod:`eqbench.evaluate.spectrum`).

Evaluation sits above the task and the run directory in the import order and below sweeps and
reports: it loads trained runs, predicts, and writes its results into the run directory.
"""

from eqbench.evaluate.profile import ProfileEvaluation, evaluate_profile, write_profile_report

__all__ = ["ProfileEvaluation", "evaluate_profile", "write_profile_report"]
