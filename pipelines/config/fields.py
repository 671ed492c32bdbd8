"""Field types shared by the config models: paths, reader options, periods, the frozen base.

Invariant: relative paths in a config file mean paths relative to that file's folder
(resolved when the validation context names a ``base_dir``); YAML scalars where text is
expected are read as their text.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo

# A URI with a scheme (hdfs://, s3a://, file:/...): never resolved against the config folder.
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Resolve a relative path against ``base_dir`` from the validation context, if given.

    Invariant: absolute paths, URIs with a scheme and empty text are returned unchanged;
    without a ``base_dir`` (a mapping built in code) every path is returned unchanged. A
    resolved path is normalised lexically (``a/../b`` is ``b``), as Spark's Hadoop paths
    are, so Spark and the Python side (ledger, publishing) name the same file.
    """
    base = info.context.get("base_dir") if isinstance(info.context, dict) else None
    if base is None or not value or _URI.match(value) or Path(value).is_absolute():
        return value
    return os.path.normpath(Path(base) / value)


# Paths in a config file are relative to the file's folder, not the working directory.
ConfigPath = Annotated[str, AfterValidator(_resolve_path)]


def _option_text(value: object) -> object:
    """A YAML scalar option as the text Spark expects: true -> "true", 3 -> "3", 1.5 -> "1.5"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


OptionValue = Annotated[str, BeforeValidator(_option_text)]


def _period_text(value: object) -> object:
    """A YAML int or date as its text (2025 -> "2025", 2025-01-31 -> "2025-01-31")."""
    if isinstance(value, bool):
        raise ValueError("must be text such as 2026-W47, not true/false")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.date):  # also a datetime (a YAML timestamp)
        return value.isoformat()
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
