"""Fault injection for crash tests: kill this process (SIGKILL, no clean-up) at a named moment.

``MOUTHPIECE_FAULTS='{"render.start": 2}'`` kills the process the first 2 times any worker of this data
directory reaches the point ``render.start``; a count kept in ``DATA_DIR/faults/<point>`` makes the
count survive the kills. Points (documented in docs/architecture.md):

- ``<stage>.start``: the claim and the running record are written, the stage has not started;
- ``<stage>.halfway``: the stage reported half of its progress (a render half drawn, say);
- ``<stage>.after_manifest``: the stage's manifests are written, its done record is not;
- ``publish.after_copy``: the video is in the output folder, the destination's marker is not written;
- ``publish.after_post``: a channel webhook post was answered, the destination's marker is not written.

This is a test hook; a production setting leaves ``faults`` empty and the check costs a dict lookup.
"""

from __future__ import annotations

import os
import signal

from pipeline.config import Settings


def fault(settings: Settings, point: str) -> None:
    """Kill this process at ``point`` while the configured count for it is not used up."""
    limit = settings.faults.get(point, 0)
    if limit <= 0:
        return
    counter = settings.data_dir / "faults" / point
    done = int(counter.read_text() or 0) if counter.exists() else 0
    if done >= limit:
        return
    counter.parent.mkdir(parents=True, exist_ok=True)
    with counter.open("w") as f:
        f.write(str(done + 1))
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
