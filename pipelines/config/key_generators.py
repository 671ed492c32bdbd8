"""Public partition keys generated from the config: listed values, integer and ISO-week ranges.

``partition_selection.public_keys.values`` maps partition columns to a generator; the
public keys are the cross product of the generated columns (and of a keys file's keys,
which then cover the other partition columns). Every generated key is public by
construction: it is a function of the config alone, never of the private data
(docs/privacy.md §6).

Invariant: values of one column never differ only by surrounding whitespace or case (a
config error naming both), and the product holds at most ``PUBLIC_KEYS_LIMIT`` keys.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator, model_validator

from pipelines.config.fields import _Frozen

#: The most public keys a release may list (generated product, times the file's keys).
PUBLIC_KEYS_LIMIT = 10_000_000

_ISO_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def _key_text(value: object) -> object:
    """A YAML scalar key as its text: 3 -> "3", true -> "true", 2025-01-31 -> "2025-01-31"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


KeyText = Annotated[str, BeforeValidator(_key_text)]


def iso_week_start(text: str) -> datetime.date:
    """The Monday of ISO week ``text`` ("YYYY-Www"); ValueError if it is no such week."""
    match = _ISO_WEEK.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ISO week of the form YYYY-Www (e.g. 2025-W01)")
    year, week = int(match.group(1)), int(match.group(2))
    try:
        return datetime.date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ValueError(f"{text!r}: ISO year {year} has no week {week}") from None


def iso_week_text(day: datetime.date) -> str:
    """The ISO week holding ``day``, as "YYYY-Www"."""
    year, week, _ = day.isocalendar()
    return f"{year:04d}-W{week:02d}"


class IntegerRange(_Frozen):
    """Every integer from the first to the last bound, both included: ``{range: [1, 52]}``."""

    range: Annotated[list[int], Field(min_length=2, max_length=2)] = Field(
        description="[first, last], integers, first <= last; both are included."
    )

    @field_validator("range", mode="before")
    @classmethod
    def _integers(cls, value: object) -> object:
        if isinstance(value, list) and any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise ValueError("range bounds must be integers")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> IntegerRange:
        if self.range[0] > self.range[1]:
            raise ValueError(f"range: first {self.range[0]} is after last {self.range[1]}")
        return self

    def size(self) -> int:
        """How many values the range generates."""
        return self.range[1] - self.range[0] + 1

    def describe(self) -> str:
        return f"range {self.range[0]}..{self.range[1]}"


class IsoWeekRange(_Frozen):
    """Every ISO week from the first to the last, both included, as text "YYYY-Www"."""

    iso_weeks: Annotated[list[str], Field(min_length=2, max_length=2)] = Field(
        description='["YYYY-Www", "YYYY-Www"]: first and last ISO week, both included.'
    )

    @model_validator(mode="after")
    def _ordered(self) -> IsoWeekRange:
        first, last = (iso_week_start(t) for t in self.iso_weeks)
        if first > last:
            raise ValueError(
                f"iso_weeks: first {self.iso_weeks[0]} is after last {self.iso_weeks[1]}"
            )
        return self

    def values(self) -> list[str]:
        """The weeks in order (a 53-week ISO year contributes its week 53)."""
        first = iso_week_start(self.iso_weeks[0])
        return [iso_week_text(first + datetime.timedelta(weeks=i)) for i in range(self.size())]

    def size(self) -> int:
        """How many weeks the range generates."""
        first, last = (iso_week_start(t) for t in self.iso_weeks)
        return (last - first).days // 7 + 1

    def describe(self) -> str:
        return f"ISO weeks {self.iso_weeks[0]}..{self.iso_weeks[1]}"


KeyGenerator = Annotated[list[KeyText], Field(min_length=1)] | IntegerRange | IsoWeekRange


def check_listed_values(column: str, values: Sequence[str]) -> None:
    """Listed values of one column must not repeat, even up to surrounding whitespace and case."""
    seen: dict[str, str] = {}
    for value in values:
        folded = value.strip().casefold()
        if folded in seen:
            other = seen[folded]
            how = (
                "is repeated" if other == value else "differ only by surrounding whitespace or case"
            )
            raise ValueError(f"values.{column}: {other!r} and {value!r} {how}")
        seen[folded] = value


def generated_values(generator: KeyGenerator) -> list[str] | IntegerRange:
    """The values of one column: text for lists and ISO weeks, the range itself for integers."""
    if isinstance(generator, IntegerRange):
        return generator
    if isinstance(generator, IsoWeekRange):
        return generator.values()
    return list(generator)


def generator_size(generator: KeyGenerator) -> int:
    """How many values one column's generator yields."""
    if isinstance(generator, IntegerRange | IsoWeekRange):
        return generator.size()
    return len(generator)


def generated_key_count(values: Mapping[str, KeyGenerator]) -> int:
    """How many keys the cross product of the generated columns holds."""
    return math.prod(generator_size(g) for g in values.values())


def describe_generated(values: Mapping[str, KeyGenerator]) -> str:
    """The generators as text: "region (2 values) × week (range 1..52)"."""
    parts = []
    for column, generator in values.items():
        if isinstance(generator, IntegerRange | IsoWeekRange):
            parts.append(f"{column} ({generator.describe()})")
        else:
            parts.append(f"{column} ({len(generator)} values)")
    return " × ".join(parts)


def check_generated_values(values: Mapping[str, KeyGenerator]) -> None:
    """The generators are well formed: no clashing listed values, a product within the cap."""
    for column, generator in values.items():
        if isinstance(generator, list):
            check_listed_values(column, generator)
    count = generated_key_count(values)
    if count > PUBLIC_KEYS_LIMIT:
        raise ValueError(
            f"values: the product holds {count:,} keys, more than PUBLIC_KEYS_LIMIT "
            f"({PUBLIC_KEYS_LIMIT:,}); list fewer values"
        )


def check_key_columns(
    values: Mapping[str, KeyGenerator] | None, has_file: bool, partition_columns: Sequence[str]
) -> None:
    """Generated columns name partition columns; without a file they cover all of them."""
    generated = list(values or {})
    extra = [c for c in generated if c not in partition_columns]
    if extra:
        raise ValueError(
            f"partition_selection.public_keys.values: {extra} are not partition columns "
            f"{list(partition_columns)}"
        )
    uncovered = [c for c in partition_columns if c not in generated]
    if not has_file and uncovered:
        raise ValueError(
            f"partition_selection.public_keys.values: partition column(s) {uncovered} have no "
            "values (list them, or give a keys file 'path' or 'table' holding them)"
        )
    if has_file and generated and not uncovered:
        raise ValueError(
            "partition_selection.public_keys: 'values' covers every partition column, so the "
            "keys file would cover none; drop 'path'/'table' or the values of its columns"
        )
