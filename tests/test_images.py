"""Images from the wild (nas.data.images, the one way the readers and `nas predict` open an
image): 16-bit greyscale scaled not clipped, palette and transparency flattened onto white, EXIF
orientation applied, a decompression bomb refused by name; an image folder skips what it cannot
read with one line naming it and refuses a folder of nothing readable in one sentence. Every
file is written here with PIL; expected pixels are worked out by hand in each test."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas.arch.architecture import Architecture
from nas.cli.main import main
from nas.config.data import DataConfig
from nas.config.machine import Machine
from nas.config.recipe import Recipe
from nas.data.counting import folder_image_sizes
from nas.data.images import read_rgb
from nas.data.loading import load_splits
from nas.errors import DataError
from nas.run.retrain import retrain

from helpers import run_in_process

pytestmark = pytest.mark.usefixtures("one_thread")


def write_bomb(path: Path, side: int = 20000) -> Path:
    """A real 1x1 PNG whose IHDR chunk is patched to claim side x side pixels (CRC fixed), so
    PIL reads the claim from a valid header; a few hundred bytes on disk."""
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    data = bytearray(path.read_bytes())
    start = 8  # after the PNG signature: length (4), b"IHDR" (4), 13 bytes of fields, CRC (4)
    assert data[start + 4 : start + 8] == b"IHDR"
    data[start + 8 : start + 16] = struct.pack(">II", side, side)
    crc = zlib.crc32(bytes(data[start + 4 : start + 21]))
    data[start + 21 : start + 25] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits_not_clipped(tmp_path):
    values = np.array([[65535, 32768], [257, 0]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # a 16-bit greyscale PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    pixels = read_rgb(tmp_path / "deep.png", 2)
    # 255/65535 per level: 65535 -> 255, 32768 -> 127.5 -> 128, 257 -> 1, 0 -> 0; grey in RGB
    assert pixels[..., 0].tolist() == [[255, 128], [1, 0]]
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_palette_and_alpha_are_flattened_onto_white(tmp_path):
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0: red, 1: blue
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png", transparency=0)  # red is the transparent colour
    # a transparent pixel is white whatever colour it hides; an opaque one keeps its colour
    assert read_rgb(tmp_path / "palette.png", 2)[0].tolist() == [[255, 255, 255], [0, 0, 255]]

    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # invisible red
    rgba.putpixel((1, 0), (0, 255, 0, 255))  # opaque green
    rgba.save(tmp_path / "rgba.png")
    assert read_rgb(tmp_path / "rgba.png", 2)[0].tolist() == [[255, 255, 255], [0, 255, 0]]

    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (0, 0))  # invisible black
    la.putpixel((1, 0), (60, 255))  # opaque grey 60
    la.save(tmp_path / "la.png")
    assert read_rgb(tmp_path / "la.png", 2)[0].tolist() == [[255, 255, 255], [60, 60, 60]]


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((8, 16, 3), np.uint8)  # 16 wide, 8 high: left half white, right black
    stored[:, :8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: shown rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    pixels = read_rgb(tmp_path / "photo.jpg", 16)
    # turned clockwise, the stored left (white) half is the shown top half, its right the bottom
    assert pixels[2, 3].min() > 230 and pixels[2, 12].min() > 230
    assert pixels[13, 3].max() < 25 and pixels[13, 12].max() < 25


def test_a_decompression_bomb_is_refused_by_name(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.png")
    with pytest.raises(DataError, match="decompression bomb") as refused:
        read_rgb(bomb, 8)
    assert str(bomb) in str(refused.value) and "400000000 pixels" in str(refused.value)  # 20000²


def write_folder_with(root: Path, bad: dict[str, object]) -> None:
    """Two classes, 3 train and 1 test image each, 8 px of one grey per class; `bad` adds files
    by name under train/a (bytes, or a callable writing the file)."""
    for split, count in (("train", 3), ("test", 1)):
        for name, grey in (("a", 50), ("b", 200)):
            (root / split / name).mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (8, 8), (grey,) * 3).save(root / split / name / f"{index}.png")
    for name, content in bad.items():
        path = root / "train" / "a" / name
        content(path) if callable(content) else path.write_bytes(content)


def test_an_image_folder_skips_a_bomb_and_a_broken_file_naming_each(tmp_path, capfd):
    write_folder_with(tmp_path, {"bomb.png": write_bomb, "broken.png": b"\x89PNG\r\n\x1a\nno"})
    config = DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=8)
    sizes, files = folder_image_sizes(tmp_path)
    assert files == 8 and sorted(sizes) == [(8, 8)] * 6  # the two unreadable left out
    splits = load_splits(config)
    assert len(splits.train) + len(splits.val) == 6 and len(splits.test) == 2
    err = capfd.readouterr().err.splitlines()
    skipped = [line for line in err if line.startswith("skipped: ")]
    assert len(skipped) == 2
    assert any(str(tmp_path / "train/a/bomb.png") in line and "bomb" in line for line in skipped)
    assert any(str(tmp_path / "train/a/broken.png") in line for line in skipped)


def test_a_folder_of_nothing_readable_is_one_sentence_exit_2(tmp_path):
    write_folder_with(tmp_path, {})
    for path in (tmp_path / "train").rglob("*.png"):
        write_bomb(path)
    argv = ["search", "--dataset", "imagefolder", "--data-dir", str(tmp_path),
            "--storage", f"sqlite:///{tmp_path / 's.db'}", "--study", "x", "--trials", "1",
            "--epochs", "1", "--device", "cpu"]  # fmt: skip
    status, _, err = run_in_process(main, argv)
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert "could not be read as an image" in err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    data = DataConfig(dataset="synthetic", synthetic_size=60, data_dir=str(run_dir.parent))
    recipe = Recipe(epochs=1, augment="none", batch_size=32)
    retrain(Architecture((8,), (1,), stem=8), data, recipe, Machine(device="cpu"), run_dir,
            progress=False)  # fmt: skip
    return run_dir


def test_predict_skips_a_bomb_and_goes_on_with_the_other_files(finished_run, tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(good)
    bomb = write_bomb(tmp_path / "bomb.png")
    status, out, err = run_in_process(main, ["predict", str(finished_run), str(bomb), str(good)])
    assert status == 0 and "Traceback" not in err
    assert str(good) in out and str(bomb) not in out
    skipped = [line for line in err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 1 and str(bomb) in skipped[0] and "decompression bomb" in skipped[0]


def test_predict_reads_an_image_as_the_folder_reader_does(finished_run, tmp_path):
    """The same 16-bit file gives the same pixels to training and to predict."""
    root = tmp_path / "data"
    write_folder_with(root, {})
    deep = np.full((8, 8), 32768, dtype=np.uint16)
    for path in [*(root / "test").rglob("*.png")]:
        Image.fromarray(deep).save(path)
    splits = load_splits(DataConfig(dataset="imagefolder", data_dir=str(root), image_size=8))
    assert splits.test.images.unique().tolist() == [128]
    copy = shutil.copy(next((root / "test").rglob("*.png")), tmp_path / "deep.png")
    from nas.run.inference import read_image

    assert np.unique(read_image(copy, 8)).tolist() == [128]


def test_many_unreadable_files_are_said_one_whole_line_each_in_the_files_order(tmp_path, capfd):
    # read by several threads at once: lines printed from the threads interleaved ("skipped: A
    # skipped: B" on one line), and came in the order the reads finished
    broken = {f"broken{index:02d}.png": b"\x89PNG\r\n\x1a\nno" for index in range(30)}
    write_folder_with(tmp_path, broken)
    load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), image_size=8))
    skipped = [line for line in capfd.readouterr().err.splitlines() if "skipped" in line]
    assert [line.count("skipped: ") for line in skipped] == [1] * 30
    named = [line.split()[1] for line in skipped]
    assert named == [str(tmp_path / "train" / "a" / name) for name in sorted(broken)]
