"""The console's files: a job's outputs (with byte ranges) and its inputs, served as what their bytes are."""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    PlainTextResponse,
    Response,
)

from pipeline.console.base import ConsoleBase, _valid_id
from pipeline.console.views import input_key, output_names
from pipeline.errors import InvalidKey, MouthpieceError
from pipeline.media.sniff import HEAD_BYTES, sniff


class Files(ConsoleBase):
    """The console's files."""

    async def output_file(self, request: Request) -> Response:
        job_id, name = request.path_params["job_id"], request.path_params["name"]
        if not _valid_id(job_id) or name not in await asyncio.to_thread(
            output_names, self.store, self.settings, job_id
        ):
            return PlainTextResponse("no such file", 404)
        path = await asyncio.to_thread(self._local_copy, self.settings.bucket_outputs, f"{job_id}/{name}")
        media_type = {".vtt": "text/vtt", ".srt": "text/plain", ".json": "application/json"}.get(
            Path(name).suffix, mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        download = request.query_params.get("download") == "1"
        return FileResponse(
            path,
            media_type=media_type,
            filename=name if download else None,
            content_disposition_type="attachment" if download else "inline",
            headers={"Cache-Control": "private, max-age=60"},
        )

    async def input_file(self, request: Request) -> Response:
        """An input shown as a thumbnail or a player: served only if its bytes are media (an upload is
        never served as a page of this site), as the type its bytes say."""
        job_id, which = request.path_params["job_id"], request.path_params["which"]
        if not _valid_id(job_id):
            return PlainTextResponse("no such file", 404)
        key = await asyncio.to_thread(input_key, self.store, self.settings, job_id, which)
        if key is None:
            return PlainTextResponse("no such file", 404)
        try:
            path = await asyncio.to_thread(self._local_copy, self.settings.bucket_inputs, key)
        except MouthpieceError:
            return PlainTextResponse("no such file", 404)
        with path.open("rb") as f:
            sniffed = sniff(f.read(HEAD_BYTES))
        if sniffed is None:
            return PlainTextResponse("not media", 404)
        media_type = mimetypes.guess_type(f"x{sniffed.ext}")[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})

    def _local_copy(self, bucket: str, key: str) -> Path:
        """A file on this machine holding the object: the local store's own file, else a cached copy."""
        store: Any = self.store
        for _ in range(5):
            if hasattr(store, "path_of") and hasattr(store, "root"):
                path = Path(store.path_of(bucket, key))
                if path.is_file():
                    return path
                break
            store = getattr(store, "inner", None)
            if store is None:
                break
        info = self.store.stat(bucket, key)
        if info is None:
            raise InvalidKey(f"{bucket}/{key} does not exist", key=key)
        cache = self.settings.data_dir / "tmp" / "console-cache" / bucket / f"{info.etag}-{Path(key).name}"
        if not cache.is_file():
            self.store.download(bucket, key, cache)
        return cache
