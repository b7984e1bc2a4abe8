"""The configuration: what a run is asked to do, as dataclasses and tables with documented
defaults. `recipe` (the training recipe a study records and a retrain inherits), `machine` (the
machine a run is on: device, precision, workers, chunk sizes; which GPU each worker gets),
`data` (the data settings and the table of datasets), `search` (the search's settings),
`costs` (the table of costs a budget can bound), `outputs` (the defaults of the commands on a
finished run) and `fields` (how a setting is declared kept on resume; the checks every setting
gets).

Imports: only the foundations (`nas.errors`) and itself; never torch or optuna, so every parser
of the command line is built from these names without loading either.
"""
