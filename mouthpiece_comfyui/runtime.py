"""The pack's only contact with ComfyUI itself: progress bars, Cancel, the VIDEO type, folders.

Every ComfyUI import happens inside a function, at run time, so the pack's modules import (and are
tested) in a Python without ComfyUI; inside ComfyUI they use its own objects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class Progress:
    """A node's progress bar (``comfy.utils.ProgressBar``, ``steps`` long) that also checks ComfyUI's
    Cancel: every report raises ComfyUI's ``InterruptProcessingException`` once Cancel was pressed, so
    a stage stops at its next progress report (stages report at least once a second)."""

    def __init__(self, steps: int = 1000) -> None:
        self.steps = steps
        self._bar: Any = None
        self._node: str | None = None
        try:
            import comfy.utils
            from comfy_execution.utils import get_executing_context

            context = get_executing_context()
            self._node = context.node_id if context is not None else None
            self._bar = comfy.utils.ProgressBar(steps, node_id=self._node)
        except ImportError:  # outside ComfyUI (the pack's own tests): no bar, no Cancel
            self._bar = None

    def check(self) -> None:
        """Raise ComfyUI's interrupt exception if Cancel was pressed."""
        if self._bar is None:
            return
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()

    def set(self, fraction: float) -> None:
        """Move the bar to ``fraction`` (0..1) of the node's work; raises when cancelled."""
        self.check()
        if self._bar is not None:
            self._bar.update_absolute(round(min(1.0, max(0.0, fraction)) * self.steps), self.steps)

    def part(self, start: float, end: float) -> Callable[[float, str], None]:
        """A stage's ``on_progress`` callback mapping its 0..1 onto ``start``..``end`` of this bar."""

        def report(fraction: float, note: str = "") -> None:
            self.set(start + (end - start) * fraction)

        return report


def is_interrupt(exc: BaseException) -> bool:
    """True for ComfyUI's Cancel exception (it must travel up untouched: ComfyUI reports it itself)."""
    return type(exc).__name__ == "InterruptProcessingException"


def video_from_file(path: Path) -> Any:
    """ComfyUI's ``VIDEO`` value for a file (``comfy_api``'s ``VideoFromFile``, what Load Video gives)."""
    from comfy_api.input_impl import VideoFromFile

    return VideoFromFile(str(path))


def video_path(video: Any, scratch: Path) -> Path:
    """A file holding a ``VIDEO`` value: its own file when it has one, else written out once (a video
    made from components by another node) into ``scratch``."""
    source = video.get_stream_source() if hasattr(video, "get_stream_source") else None
    if isinstance(source, str) and Path(source).is_file():
        return Path(source)
    scratch.mkdir(parents=True, exist_ok=True)
    dst = scratch / f"video-{id(video):x}.mp4"
    video.save_to(str(dst))
    return dst


def data_dir(configured: Path | None) -> Path:
    """Where the pack keeps its working data: ``comfyui_data_dir`` when set, else a ``mouthpiece`` folder
    in ComfyUI's temp folder (ComfyUI empties it when it starts). Never mouthpiece's own data folder: a
    running ``mouthpiece up`` there would take the nodes' jobs for its own."""
    if configured is not None:
        return configured.expanduser()
    try:
        import folder_paths

        return Path(folder_paths.get_temp_directory()) / "mouthpiece"
    except ImportError:
        import tempfile

        return Path(tempfile.gettempdir()) / "mouthpiece-comfyui"


def input_dir() -> Path:
    """ComfyUI's input folder (where its upload button puts files)."""
    import folder_paths

    return Path(folder_paths.get_input_directory())


def annotated_input(name: str) -> Path:
    """The file an input widget names (``folder_paths``' "name [input]" annotations understood)."""
    import folder_paths

    return Path(folder_paths.get_annotated_filepath(name))
