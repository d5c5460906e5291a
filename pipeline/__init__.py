"""mouthpiece: talking-avatar videos from a voice clip and a photo or video.

The core: settings (``config``), contracts (``contracts``), object storage (``storage``), the bus
(``bus``), the stage runner (``runner``), ingresses (``ingress``) and the command line (``cli``).
"""

from pathlib import Path

__version__ = "0.1.0"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""Bundled public-domain sample media (the default avatar, the demo's voice)."""
