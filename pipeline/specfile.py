"""Reading a job spec a person wrote (YAML or JSON), with every refusal in plain words.

Used wherever a spec file enters: validate (the inputs bucket) and the watched folder. A spec is at most
``MAX_SPEC_BYTES``; YAML is read with the safe loader; a parse error says where (line and column), and a
spec that does not fit the contract says which field and what it must be, never the validation library's
own wording. Refusals are ``InvalidInput`` naming the spec file as the user named it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.contracts import JobOptions, JobSpec
from pipeline.errors import InvalidInput

MAX_SPEC_BYTES = 1024 * 1024
SPEC_HINT = "see the job spec example in the README"
_DESTINATION_KINDS = ("folder", "discord_interaction", "discord_webhook")


def parse_spec(raw: bytes, name: str) -> JobSpec:
    """The job spec in ``raw`` (YAML when ``name`` ends in .yaml/.yml, else JSON); ``InvalidInput``."""
    if len(raw) > MAX_SPEC_BYTES:
        raise InvalidInput(
            f"job spec {name} is {len(raw) // 1024} KB; a spec is a small JSON or YAML file (at most "
            f"{MAX_SPEC_BYTES // 1024} KB)",
            code="spec_too_large",
        )
    data = load_spec_data(raw, name)
    if not isinstance(data, dict):
        raise InvalidInput(
            f"job spec {name} must be a set of fields (audio, avatars, options, destinations): {SPEC_HINT}",
            code="spec_invalid",
        )
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            f"job spec {name} is not valid: {describe_validation_error(exc)}", code="spec_invalid"
        ) from None
    except RecursionError:
        raise InvalidInput(
            f"job spec {name} is nested too deeply: {SPEC_HINT}", code="spec_invalid"
        ) from None


def load_spec_data(raw: bytes, name: str) -> Any:
    """The YAML or JSON data in a spec file, unchecked; ``InvalidInput`` when it cannot be parsed."""
    is_yaml = name.lower().endswith((".yaml", ".yml"))
    kind = "YAML" if is_yaml else "JSON"
    try:
        text = raw.decode("utf-8-sig")
        return yaml.safe_load(text) if is_yaml else json.loads(text)
    except UnicodeDecodeError:
        raise InvalidInput(
            f"job spec {name} is not text (UTF-8): save it as a plain {kind} file", code="spec_unreadable"
        ) from None
    except yaml.MarkedYAMLError as exc:
        where = _yaml_where(exc)
        raise InvalidInput(
            f"job spec {name} is not valid YAML{where}: fix it, or {SPEC_HINT}", code="spec_unreadable"
        ) from None
    except json.JSONDecodeError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})"
        raise InvalidInput(
            f"job spec {name} is not valid JSON{where}: fix it, or {SPEC_HINT}", code="spec_unreadable"
        ) from None
    except (yaml.YAMLError, ValueError, RecursionError):
        raise InvalidInput(
            f"job spec {name} is not valid {kind}: fix it, or {SPEC_HINT}", code="spec_unreadable"
        ) from None


def _yaml_where(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def job_options(fields: dict[str, Any]) -> JobOptions:
    """Job options typed in a form or on the command line; ``InvalidInput`` in plain words otherwise."""
    try:
        return JobOptions(**fields)
    except ValidationError as exc:
        raise InvalidInput(
            f"the options cannot be used: {describe_validation_error(exc)}", code="options_invalid"
        ) from None


# --- validation errors in plain words ------------------------------------------------------------------


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a validation error as a plain clause: which field, what it must be."""
    errors = exc.errors(include_url=False)
    if not errors:
        return "it does not fit the job spec format"
    return _describe(errors[0])


def _where(loc: tuple[Any, ...]) -> str:
    """``destinations[1].url`` (items counted from 1; union tags such as ``discord_webhook`` left out)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif part not in _DESTINATION_KINDS and not str(part).startswith(("function-", "union[")):
            out += f".{part}" if out else str(part)
    return out


def _describe(err: Any) -> str:
    where = _where(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    field = f"'{where}'" if where else "the spec"
    if kind == "value_error":
        return f"{field}: {ctx.get('error', 'it is not allowed')}" if where else str(ctx.get("error", ""))
    if kind == "missing":
        return f"{field} is missing"
    if kind == "extra_forbidden":
        return f"{field} is not a field of a job spec (check its spelling)"
    if kind == "string_too_long":
        size = len(given) if isinstance(given, str) else "too many"
        return f"{field} is {size} characters long; the limit is {ctx.get('max_length')}"
    if kind == "too_long":
        return f"{field} has too many items; the limit is {ctx.get('max_length')}"
    if kind in ("literal_error", "enum"):
        return f"{field} must be one of {ctx.get('expected', 'the documented values')}"
    if kind == "union_tag_invalid":
        return f"the kind of {field} must be one of {', '.join(_DESTINATION_KINDS)}"
    if kind == "union_tag_not_found":
        return f"{field} needs a 'kind' ({', '.join(_DESTINATION_KINDS)})"
    return f"{field} {_MUST.get(kind.split('_')[0], 'has a value mouthpiece cannot use')}"


_MUST = {
    "string": "must be text",
    "int": "must be a whole number",
    "float": "must be a number",
    "bool": "must be true or false",
    "list": "must be a list",
    "dict": "must be a set of fields",
    "model": "must be a set of fields",
    "greater": "is too small",
    "less": "is too large",
    "datetime": "must be a date and time",
}
