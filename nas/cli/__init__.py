"""The `nas` command line: `main` (the command tree), one module per command (`search`,
`retrain`, `report`, `describe`: params and space, `export`: export and predict, `doctor`),
the shared flag groups (`flags`, `arch`, `budgets`), printing (`common`, `progress`,
`summary`) and the search's settings from its flags (`search_settings`).

Imports: anything; nothing imports it. Building a parser loads no torch or optuna: each
handler imports the work it runs.
"""
