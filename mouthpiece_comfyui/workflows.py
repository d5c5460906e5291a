"""Example workflows in both of ComfyUI's formats: the API format (what ``POST /prompt`` takes, written
by hand in ``examples/*.api.json``) and the UI format (what ComfyUI's page loads and saves: nodes with
positions, widget values and links), made from the API format and ComfyUI's ``/object_info``.

``python -m mouthpiece_comfyui.workflows http://127.0.0.1:8188`` rewrites ``examples/*.json`` from the
API files against a running ComfyUI with the pack installed.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent / "examples"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
COLUMN, ROW = 360, 300


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _is_widget(spec: list[Any]) -> bool:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def _depths(api: dict[str, Any]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in depth:
            sources = [v[0] for v in api[node]["inputs"].values() if _is_link(v)]
            depth[node] = 1 + max((of(s) for s in sources), default=-1)
        return depth[node]

    for node in api:
        of(node)
    return depth


def api_to_ui(api: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The UI-format graph of an API-format workflow (nodes laid out in columns by their depth)."""
    depths = _depths(api)
    rows: dict[int, int] = {}
    links: list[list[Any]] = []
    nodes: list[dict[str, Any]] = []
    outputs: dict[tuple[str, int], list[int]] = {}
    for node_id in sorted(api, key=int):
        entry, info = api[node_id], object_info[api[node_id]["class_type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
        inputs: list[dict[str, Any]] = []
        widgets: list[Any] = []
        for name in order:
            spec, value = specs[name], entry["inputs"].get(name)
            if _is_widget(spec) and not _is_link(value):
                widgets.append(value if value is not None else (spec[1] or {}).get("default"))
                if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("image_upload"):
                    widgets.append("image")
                continue
            link = None
            if _is_link(value):
                link = len(links) + 1
                kind = object_info[api[value[0]]["class_type"]]["output"][value[1]]
                links.append([link, int(value[0]), value[1], int(node_id), len(inputs), kind])
                outputs.setdefault((value[0], value[1]), []).append(link)
            kind = spec[0] if isinstance(spec[0], str) else "COMBO"
            inputs.append({"name": name, "type": kind, "link": link})
        depth = depths[node_id]
        row = rows.get(depth, 0)
        rows[depth] = row + 1
        nodes.append({
            "id": int(node_id), "type": entry["class_type"], "pos": [40 + depth * COLUMN, 40 + row * ROW],
            "size": [320, 120 + 26 * len(widgets)], "flags": {}, "order": 0, "mode": 0,
            "title": entry.get("_meta", {}).get("title", info["display_name"]),
            "inputs": inputs, "outputs": [], "properties": {"Node name for S&R": entry["class_type"]},
            "widgets_values": widgets,
        })  # fmt: skip
    for node in nodes:
        info = object_info[node["type"]]
        node["outputs"] = [
            {
                "name": name,
                "type": kind,
                "slot_index": slot,
                "links": outputs.get((str(node["id"]), slot), []),
            }
            for slot, (name, kind) in enumerate(zip(info["output_name"], info["output"], strict=True))
        ]
    for index, node in enumerate(sorted(nodes, key=lambda n: (depths[str(n["id"])], n["id"]))):
        node["order"] = index
    return {
        "last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
        "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }  # fmt: skip


def write_ui_files(object_info: dict[str, Any], folder: Path = EXAMPLES) -> list[Path]:
    """``<name>.json`` (UI format) beside each ``<name>.api.json``."""
    written = []
    for api_file in sorted(folder.glob("*.api.json")):
        ui = api_to_ui(json.loads(api_file.read_text()), object_info)
        dst = api_file.with_name(api_file.name.replace(".api.json", ".json"))
        dst.write_text(json.dumps(ui, indent=1) + "\n")
        written.append(dst)
    return written


if __name__ == "__main__":
    with urllib.request.urlopen(sys.argv[1].rstrip("/") + "/object_info", timeout=60) as answer:
        for path in write_ui_files(json.load(answer)):
            print(path)
