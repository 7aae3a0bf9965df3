"""Reading the YAML policy files (agents, the router policy) and reporting what is wrong with them.

A policy file is configuration: a bad one stops the service at startup with one line naming the
file and the reason (:class:`PolicyFileError`), never a traceback, never a half-loaded policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

MAX_POLICY_FILE_BYTES = 1_048_576  # a policy is a page of YAML; anything bigger is a mistake


class PolicyFileError(ValueError):
    """A policy file is missing or invalid; the message is the one line to show the operator."""


def read_yaml_mapping(path: Path, *, flag: str) -> dict[str, Any]:
    """The file's top-level YAML mapping, or a :class:`PolicyFileError` naming ``flag`` and ``path``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise PolicyFileError(f"{flag}: {path}: no such file") from None
    except OSError as exc:
        raise PolicyFileError(f"{flag}: {path}: cannot read: {exc.strerror}") from None
    if not path.is_file():
        raise PolicyFileError(f"{flag}: {path}: not a file")
    if size > MAX_POLICY_FILE_BYTES:
        raise PolicyFileError(f"{flag}: {path}: larger than {MAX_POLICY_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise PolicyFileError(f"{flag}: {path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PolicyFileError(f"{flag}: {path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise PolicyFileError(f"{flag}: {path}: expected a mapping at the top level, found {kind}")
    return data


def describe(error: ValidationError) -> str:
    """Pydantic's report as one line: ``rules[2].target: Value error, ...; ...``."""
    parts = []
    for item in error.errors(include_url=False):
        where = ""
        for key in item.get("loc", ()):
            if isinstance(key, int):
                where += f"[{key}]"
            else:
                where += ("." if where else "") + str(key)
        message = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
