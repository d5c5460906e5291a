"""Scratch folders name their process: a living process's folders are kept, a dead one's are known."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.owner import dead_scratch, scratch_folder, scratch_name, scratch_root


def test_scratch_folders_live_in_the_data_directorys_tmp(tmp_path: Path) -> None:
    """``scratch_folder`` makes a new private folder under ``DATA_DIR/tmp`` (created on demand) each call."""
    first, second = scratch_folder(tmp_path, "mp-console"), scratch_folder(tmp_path, "mp-console")
    assert first.parent == second.parent == scratch_root(tmp_path) == tmp_path / "tmp"
    assert first != second and first.is_dir() and second.is_dir()
    assert first.name.startswith(scratch_name("mp-console"))


def test_this_processs_folders_are_alive_and_a_finished_processs_are_dead(tmp_path: Path) -> None:
    """The name carries pid and start time: ours reads alive; one made by a process that has exited
    reads dead, so the next start removes it."""
    assert not dead_scratch(scratch_folder(tmp_path, "mp-inbox").name)
    code = (
        "import sys; from pathlib import Path; from pipeline.owner import scratch_folder; "
        "print(scratch_folder(Path(sys.argv[1]), 'mp-discord').name)"
    )
    made = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert dead_scratch(made.stdout.strip())
    assert not dead_scratch("mp-console-notapid-x")  # not ours to judge: left alone
