"""mouthpiece's ComfyUI nodes (MIT). This folder is what `mouthpiece comfyui install` puts into
ComfyUI's custom_nodes/; the nodes themselves come from the mouthpiece package installed into
ComfyUI's Python by the same command."""

try:
    from mouthpiece_comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError as exc:  # said once, in ComfyUI's log, instead of a traceback per start
    raise ImportError(
        f"mouthpiece's nodes need the mouthpiece package in ComfyUI's Python ({exc}); "
        "run `mouthpiece comfyui install /path/to/ComfyUI` again"
    ) from exc

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
