"""`write_atomic`: the content, no temporary file left behind, failures keep the old file, and
the file's mode follows the umask (not mkstemp's 0o600)."""

import os
import stat

import pytest

import nas.files
from nas.errors import UserError
from nas.files import write_atomic


def leftovers(folder):
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".tmp"))


@pytest.fixture
def umask():
    """Set the umask for one test and put the old one back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def test_bytes_and_text_are_written_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "deep" / "er" / "model.bin"  # missing parents are created
    assert write_atomic(path, b"\x00\x01payload") == path
    assert path.read_bytes() == b"\x00\x01payload"
    assert write_atomic(str(path), "naïve text\n") == path  # replaces; str encodes as UTF-8
    assert path.read_bytes() == "naïve text\n".encode()
    assert leftovers(path.parent) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.bin"]


class Unwritable:
    """Not bytes: the write fails after the temporary file exists."""


def test_data_that_cannot_be_written_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_atomic(path, Unwritable())
    assert path.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_failure_before_the_rename_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path, monkeypatch
):
    path = tmp_path / "checkpoint.ckpt"
    path.write_bytes(b"last good")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nas.files.os, "fsync", full_disk)
    with pytest.raises(UserError, match="no space left on the device to write .*checkpoint.ckpt"):
        write_atomic(path, b"x" * 100_000)  # one sentence naming the path, not an OSError
    assert path.read_bytes() == b"last good"
    assert leftovers(tmp_path) == []


def test_a_parent_that_is_a_file_fails_and_creates_nothing(tmp_path):
    blocker = tmp_path / "run"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OSError):
        write_atomic(blocker / "model.safetensors", b"weights")
    assert blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_mode_follows_the_umask_and_the_umask_is_left_as_it_was(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_atomic(tmp_path / "model.safetensors", b"weights")
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert os.umask(mask) == mask  # reading it inside write_atomic did not change it
