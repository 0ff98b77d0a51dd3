"""BundleFiles keeps the directory of the last file open and lists it once: what it answers
is what a lookup of each file answers (absent, read, refused), in a small directory and in
one over the listed size, and a file swapped for a link after the listing is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flannel_bot.errors import BundleFileRefused
from flannel_bot.executors.bundle.files import LISTED, BundleFiles
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
