"""mouthpiece: talking-avatar videos from a voice clip and a photo or video.

The core: settings (``config``), contracts (``contracts``), object storage (``storage``), the bus
(``bus``), the stage runner (``runner``), ingresses (``ingress``) and the command line (``cli``).
"""

from pathlib import Path

__version__ = "0.1.0"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""Bundled public-domain sample media (the default avatar, the demo's voice)."""

DISTRIBUTION = "mouthpiece-avatar"
"""The distribution's name, what pip installs (``mouthpiece`` on PyPI is an unrelated project). The
command stays ``mouthpiece``; the import packages stay ``pipeline`` and ``stages``."""


def install_hint(extra: str | None = None) -> str:
    """The command that installs mouthpiece, with ``extra`` (``voice``, ``neural``), into the environment
    it runs in: every hint in a message comes from here. In an environment where mouthpiece is installed
    (from a clone too) pip finds the requirement satisfied by it and adds only the extra's packages."""
    requirement = f"{DISTRIBUTION}[{extra}]" if extra else DISTRIBUTION
    return f"pip install '{requirement}'"
