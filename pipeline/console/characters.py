"""The console's Characters page: the default library (shared with the CLI and the inbox) with thumbnails.

    GET  /characters                      the characters, each with its picture (or clip), defaults, who
                                          added it and when; a form to add one; a Remove button each
    POST /characters                      add one (name, image, optional voice and style)
    POST /characters/{handle}/remove      remove one
    GET  /characters/{handle}/picture     its picture or clip, served as what its bytes are
    GET  /api/characters                  the library as JSON

The picture goes through the same checks as the New job page's uploads (size, content sniffed) and then
``pipeline.characters.add_character``'s (decodable, within the size limits); every refusal is a sentence
on the page, with what was typed kept.
"""

from __future__ import annotations

import asyncio
import mimetypes
import shutil
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from pipeline import characters
from pipeline.config import Settings
from pipeline.console.base import _field, _sentence, log
from pipeline.console.files import Files
from pipeline.console.upload import FACE
from pipeline.console.upload import _save as save_upload
from pipeline.contracts import Character, Style
from pipeline.discord.fetch import sniff
from pipeline.errors import InvalidInput, MouthpieceError
from pipeline.keys import DEFAULT_LIBRARY
from pipeline.owner import scratch_folder
from pipeline.storage.base import ObjectStore

NOTES = {
    "added": "The character was added.",
    "removed": "The character was removed (videos made with it stay).",
}


class CharacterPages(Files):
    """The Characters page and its actions."""

    async def characters_page(self, request: Request) -> Response:
        note = NOTES.get(request.query_params.get("note", ""))
        return self._render(request, "characters.html", await self._characters_context({}, None, note))

    async def add_character(self, request: Request) -> Response:
        form: FormData = request.state.form
        try:
            added = await self._add_from_form(form)
        except MouthpieceError as exc:
            reason = _sentence(exc.reason)
            if request.state.api:
                return JSONResponse({"error": reason}, status_code=422)
            values = {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}
            context = await self._characters_context(values, reason, None)
            return self._render(request, "characters.html", context, status=422)
        log.info("console_character_added", character=added.name)
        if request.state.api:
            return JSONResponse(added.model_dump(mode="json"), status_code=201)
        return RedirectResponse("/characters?note=added", status_code=303)

    async def remove_character(self, request: Request) -> Response:
        found = await self._by_handle(request.path_params["handle"])
        if found is None:
            return self._refused(request, 404, "There is no such character.")
        await asyncio.to_thread(
            characters.remove_character, self.store, self.settings, DEFAULT_LIBRARY, found.name
        )
        log.info("console_character_removed", character=found.name)
        if request.state.api:
            return JSONResponse({"removed": found.name})
        return RedirectResponse("/characters?note=removed", status_code=303)

    async def character_picture(self, request: Request) -> Response:
        found = await self._by_handle(request.path_params["handle"])
        if found is None:
            return PlainTextResponse("no such character", 404)
        try:
            path = await asyncio.to_thread(self._local_copy, self.settings.bucket_inputs, found.media)
        except MouthpieceError:
            return PlainTextResponse("no such file", 404)
        with path.open("rb") as f:
            sniffed = sniff(f.read(64))
        if sniffed is None:  # never serve anything but media from this site
            return PlainTextResponse("not media", 404)
        media_type = mimetypes.guess_type(f"x{sniffed.ext}")[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})

    async def api_characters(self, request: Request) -> Response:
        found = await asyncio.to_thread(
            characters.list_characters, self.store, self.settings, DEFAULT_LIBRARY
        )
        return JSONResponse({"characters": [_as_json(c) for c in found]})

    # --- helpers -------------------------------------------------------------------------------------------
    async def _characters_context(
        self, values: dict[str, str], error: str | None, note: str | None
    ) -> dict[str, Any]:
        found = await asyncio.to_thread(
            characters.list_characters, self.store, self.settings, DEFAULT_LIBRARY
        )
        return {
            "characters": [_as_json(c) for c in found],
            "values": values,
            "error": error,
            "note": note,
            "styles": [s.value for s in Style],
            "limit": self.settings.characters_per_library,
            "batch_limit": self.settings.character_batch_limit,
            "max_mb": self.settings.max_input_bytes // (1024 * 1024),
        }

    async def _add_from_form(self, form: FormData) -> Character:
        name = characters.check_name(_field(form, "name") or "")  # before reading the file
        defaults = characters.defaults_from(voice=_field(form, "voice"), style=_field(form, "style"))
        image = form.get("image")
        if not isinstance(image, UploadFile) or not image.filename:
            raise InvalidInput("choose a photo or video of the character's face", code="invalid_input")
        folder = scratch_folder(self.settings.data_dir, "mp-character")
        try:
            path = await save_upload(image, folder / "image", "photo", FACE, self.settings)
            return await asyncio.to_thread(
                characters.add_character, self.store, self.settings, DEFAULT_LIBRARY, name, path,
                shown=image.filename, added_by="console", defaults=defaults,
            )  # fmt: skip
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _by_handle(self, handle: str) -> Character | None:
        found = await asyncio.to_thread(
            characters.list_characters, self.store, self.settings, DEFAULT_LIBRARY
        )
        return next((c for c in found if characters.handle(c.name) == handle), None)


def picked_characters(store: ObjectStore, settings: Settings, wanted: str | None) -> tuple[str, ...]:
    """The names the New job form's ``character`` field stands for (``all``: the capped library);
    ``InvalidInput`` for a name not in the library."""
    if not wanted or not wanted.strip():
        return ()
    picked = characters.pick(store, settings, DEFAULT_LIBRARY, wanted.strip())
    return tuple(c.name for c in picked.characters)


def character_names(store: ObjectStore, settings: Settings) -> list[str]:
    """The default library's names for the New job form (none when the store cannot be read)."""
    try:
        return [c.name for c in characters.list_characters(store, settings, DEFAULT_LIBRARY)]
    except MouthpieceError:
        return []


def _as_json(character: Character) -> dict[str, Any]:
    data = character.model_dump(mode="json", exclude={"media"})
    data["handle"] = characters.handle(character.name)
    data["picture"] = f"/characters/{data['handle']}/picture"
    return data
