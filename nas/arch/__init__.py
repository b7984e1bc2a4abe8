"""The model family and the search space, as data: `architecture` (`Architecture`, its two
stems, its JSON and printed form), `counts` (exact parameter and MAC counts, the per-layer
table), `presets` (the reference study's models and their recipes), `space` (the search space
and sampling from it) and `space_format` (the space file's YAML format and its validation).

Imports: the foundations only. No torch, no optuna: counting a candidate costs microseconds and
`nas params` / `nas space` start instantly.
"""
