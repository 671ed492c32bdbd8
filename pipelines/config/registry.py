"""The registry fields of a job: why a release is made, who owns it, who approved it.

Recorded with every charge in the ledger (``pipelines.ledger.Registration``) and stated in
the manifest; a policy tier may require any of them (docs/privacy.md §12). Invariant:
each is one line of at most 500 characters, or absent.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from pipelines.config.fields import _Frozen

_MAX_TEXT = 500


def _one_line(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        raise ValueError("must not be blank (leave the field out instead)")
    if len(text) > _MAX_TEXT or "\n" in text or "\r" in text:
        raise ValueError(f"must be one line of at most {_MAX_TEXT} characters")
    return text


RegistryText = Annotated[str | None, AfterValidator(_one_line)]


class RegistryConfig(_Frozen):
    """What the release registry records about this job's releases."""

    purpose: RegistryText = Field(
        default=None, description="Why the statistics are released (one line)."
    )
    owner: RegistryText = Field(
        default=None, description="The team or person accountable for the release."
    )
    approval: RegistryText = Field(
        default=None,
        description="Reference of the approval (ticket, board decision) the release rests on.",
    )
