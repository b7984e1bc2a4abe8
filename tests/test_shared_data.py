"""One copy of the data for a search's workers (nas.data.shared): the splits written once and
mapped back hold the same tensors, mapped from their files (read from /proc/self/maps, the
kernel's own list of this process's mappings); a write in one process never reaches the files;
the folder goes when the workers are done; where it cannot be written, one line and each worker
loads its own; and a worker trains on the shared copy without reading its dataset."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.config.search import SearchConfig
from nas.data.loading import load_splits
from nas.data.shared import SHARED_DATA_ENV, share_splits, shared_copy, shared_splits
from nas.search.workers import SETTINGS_ENV, worker_environment, worker_main
from nas.trial_view import is_trained

TINY = Path(__file__).resolve().parent.parent / "search_spaces" / "tiny.yaml"
SYNTHETIC = DataConfig(dataset="synthetic", subset=48, synthetic_size=80)


def _mapped_files() -> dict[Path, list[tuple[int, int]]]:
    """This process's file mappings: file -> [(start, end)] addresses."""
    maps: dict[Path, list[tuple[int, int]]] = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            start, end = (int(address, 16) for address in fields[0].split("-"))
            maps.setdefault(Path(fields[5]), []).append((start, end))
    return maps


def test_shared_splits_are_the_same_tensors_mapped_from_their_files(tmp_path):
    if not Path("/proc/self/maps").exists():
        pytest.skip("no /proc/self/maps on this platform to see the mappings")
    splits = load_splits(SYNTHETIC)
    shared = shared_splits(share_splits(splits, tmp_path))
    for part in ("train", "val", "test"):
        mine, theirs = getattr(splits, part), getattr(shared, part)
        assert torch.equal(mine.images, theirs.images) and torch.equal(mine.labels, theirs.labels)
        assert theirs.images.dtype == torch.uint8 and theirs.labels.dtype == torch.int64
    assert (shared.classes, shared.mean, shared.std) == (splits.classes, splits.mean, splits.std)
    maps = _mapped_files()
    for name, tensor in (
        ("train.images", shared.train.images),
        ("test.labels", shared.test.labels),
    ):
        ranges = maps.get(tmp_path / f"{name}.bin", [])
        assert any(start <= tensor.data_ptr() < end for start, end in ranges), name


def test_a_write_to_a_mapped_split_never_reaches_the_files(tmp_path):
    splits = load_splits(SYNTHETIC)
    share_splits(splits, tmp_path)
    first = shared_splits(tmp_path)
    first.train.images.zero_()  # a worker that changed its data in place
    second = shared_splits(tmp_path)  # what every other worker maps
    assert torch.equal(second.train.images, splits.train.images)
    assert second.train.images.sum() > 0


def test_the_shared_folder_goes_when_the_workers_are_done_however_they_end(tmp_path):
    splits = load_splits(SYNTHETIC)
    said: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with shared_copy(splits, said.append) as folder:
            assert (folder / "splits.json").is_file() and folder.parent == Path("/dev/shm")
            raise KeyboardInterrupt  # Ctrl-C while the workers run
    assert not folder.exists() and said == []


def test_no_room_to_share_is_one_line_and_each_worker_loads_its_own(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    said: list[str] = []
    with shared_copy(load_splits(SYNTHETIC), said.append, where=not_a_folder) as folder:
        assert folder is None
    assert said == [
        "data: no room to share one copy between the workers (Not a directory); each loads its own"
    ]


def test_a_worker_trains_on_the_shared_copy_without_reading_its_dataset(tmp_path, monkeypatch):
    share_splits(load_splits(SYNTHETIC), tmp_path)
    store = tmp_path / "s.db"
    config = SearchConfig(
        budget=8000, trials=1, space=str(TINY), study="t", storage=f"sqlite:///{store}",
        pruner="none", confirm=0, warm_start=False,
    )  # fmt: skip
    # the dataset the worker is told of is not there: it can only train on the shared copy
    missing = DataConfig(dataset="imagefolder", data_dir=str(tmp_path / "gone"), image_size=32)
    recipe = Recipe(epochs=1, batch_size=16, augment="none")
    env = worker_environment(config, missing, recipe, Machine(device="cpu"), 0, "cpu")
    monkeypatch.setenv(SETTINGS_ENV, env[SETTINGS_ENV])
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path))
    assert worker_main() == 0
    trials = optuna.load_study(study_name="t", storage=f"sqlite:///{store}").trials
    assert sum(is_trained(t) for t in trials) == 1
    assert json.loads(env[SETTINGS_ENV])["data"]["data_dir"] == str(tmp_path / "gone")
