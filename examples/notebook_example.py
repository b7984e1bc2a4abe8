"""The Python API, as a notebook uses it (docs/python-api.md): a search on tiny synthetic data
on the CPU (about a minute), its winner and front, the report's figures, a retrain of the
winner and the trained model loaded back. Run it as is: python examples/notebook_example.py
(in a notebook, paste it cell by cell; a figure shows itself as a cell's last value)."""

import torch

import nas
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig

# the same configuration as `nas search --smoke --storage sqlite:///studies/example.db`
config = SearchConfig(
    study="example",
    storage="sqlite:///studies/example.db",  # or journal:///studies/example.log, PostgreSQL
    space="tiny",
    budget=20_000,
    trials=4,
)
data = DataConfig(dataset="synthetic", subset=48)
recipe = Recipe(epochs=2, batch_size=32, augment="none")
machine = Machine(device="cpu")

result = nas.search(config, data, recipe, machine)  # rerun: resumes, trains nothing more
best = result.winner
print(f"winner: trial {best.number}, {best.user_attrs['arch']}")
print("front:", [(t.number, t.user_attrs["params"]) for t in result.front])

figures = result.figures()  # plotly figures: figures["history"].show() in a notebook
print("figures:", sorted(figures))

metrics = nas.retrain(result, epochs=1, machine=machine, out="runs/example")
print(f"test accuracy {metrics.test_accuracy:.2%}")

model = nas.load_model("runs/example")
print("logits:", tuple(model(torch.zeros(1, 3, 32, 32)).shape))
