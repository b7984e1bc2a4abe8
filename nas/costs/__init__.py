"""What a candidate or a run costs, before it trains: `budgets` (the budgets and the gate that
checks them), `latency` (measured inference latency), `memory` (a training step's peak memory,
measured on CUDA, estimated elsewhere), `run_plan` (how much training a run asks for),
`step_timing` (timing one training step), `estimate` (the estimate printed before a run) and
`doctor` (`nas doctor`'s checks of this machine).

Imports: the foundations, `nas.arch`, `nas.data` and `nas.train`.
"""
