"""The search: `loop` (the search loop), `objective` (one trial), `samplers` (samplers and
pruners), `study_setup` (what a study records and a resume must match), `warm_start` (what a new
study trains first), `workers` (worker processes), `reaper` (stale trials
failed and queued again), `progress` (counts, progress and what ends
or holds the loop), `time_budget` (the time limit), `confirm` (confirmation runs), `winner`
(which trial the search names best and how sure it is), `fidelity` (rank fidelity), `front`
(the Pareto front) and `choice` (opening a study and choosing its trial to retrain).

Imports: the foundations, `nas.arch`, `nas.data`, `nas.train` and `nas.costs`.
"""
