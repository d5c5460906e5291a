"""mouthpiece as ComfyUI nodes (MIT): ``mouthpiece_comfyui.nodes`` holds them, ``install`` puts them into a
ComfyUI. Nothing here imports ComfyUI at import time (see ``runtime``)."""
