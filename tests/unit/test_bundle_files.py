"""BundleFiles keeps the directory of the last file open and lists it once: what it answers
is what a lookup of each file answers (absent, read, refused), in a small directory and in
one over the listed size, and a file swapped for a link after the listing is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flannel_bot.errors import BundleFileRefused
from flannel_bot.executors.bundle.files import CHUNK, LISTED, BundleFiles
from flannel_bot.executors.bundle.limits import Budget, Limits


def files(root: Path) -> BundleFiles:
    return BundleFiles(root, Budget(Limits(), lambda: 0.0))


@pytest.mark.parametrize("many", [3, LISTED + 10])
def test_a_listed_directory_answers_as_each_lookup(tmp_path: Path, many: int) -> None:
    node = tmp_path / "probes" / "w1"
    node.mkdir(parents=True)
    for i in range(many):
        (node / f"p{i}.txt").write_text(f"out {i}\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    (node / "link.txt").symlink_to(tmp_path / "outside.txt")
    os.mkfifo(node / "fifo.txt")
    reader = files(tmp_path)
    assert reader.read("probes/w1/p0.txt", 1 << 20, "probe output") == b"out 0\n"
    assert reader.read("probes/w1/p2.exit", 1 << 20, "exit code") is None
    assert reader.read(f"probes/w1/p{many - 1}.txt", 1 << 20, "probe output") == (
        f"out {many - 1}\n".encode()
    )
    with pytest.raises(BundleFileRefused, match="symbolic link"):
        reader.read("probes/w1/link.txt", 1 << 20, "probe output")
    with pytest.raises(BundleFileRefused, match="FIFO"):
        reader.read("probes/w1/fifo.txt", 1 << 20, "probe output")
    assert reader.size("probes/w1/p1.txt") == len("out 1\n")
    assert reader.read("probes/w2/p0.txt", 1 << 20, "probe output") is None


def test_a_file_swapped_for_a_link_after_the_listing_is_refused(tmp_path: Path) -> None:
    node = tmp_path / "probes" / "w1"
    node.mkdir(parents=True)
    (node / "a.txt").write_text("a\n")
    (node / "b.txt").write_text("b\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    reader = files(tmp_path)
    assert reader.read("probes/w1/a.txt", 1 << 20, "probe output") == b"a\n"  # listed now
    (node / "b.txt").unlink()
    (node / "b.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(BundleFileRefused, match="symbolic link"):
        reader.read("probes/w1/b.txt", 1 << 20, "probe output")


@pytest.mark.parametrize("length", [0, 1, 4097, CHUNK + 1])
def test_a_file_is_read_whole_across_reads(tmp_path: Path, length: int) -> None:
    """A file ends at the first read that gives less than asked (one read for a probe file),
    and a larger one is read in CHUNK reads to its last byte."""
    data = (bytes(range(251)) * (length // 251 + 1))[:length]
    (tmp_path / "f.txt").write_bytes(data)
    assert files(tmp_path).read("f.txt", 1 << 30, "probe output") == data


def test_the_time_budget_is_checked_between_the_reads_of_a_large_file(tmp_path: Path) -> None:
    """The clock moves a second at each look: a one-read file is read within a 1.5 s budget,
    a file of several reads is refused part-way, as before."""
    (tmp_path / "small.txt").write_bytes(b"x" * 100)
    (tmp_path / "large.txt").write_bytes(b"x" * (CHUNK + 1))
    ticks = iter(range(1000))
    limits = Limits(seconds=1.5)
    assert (
        BundleFiles(tmp_path, Budget(limits, lambda: float(next(ticks)))).read(
            "small.txt", 1 << 30, "probe output"
        )
        == b"x" * 100
    )
    ticks = iter(range(1000))
    reader = BundleFiles(tmp_path, Budget(limits, lambda: float(next(ticks))))
    with pytest.raises(BundleFileRefused, match="took more than"):
        reader.read("large.txt", 1 << 30, "probe output")
