"""The input contract's rules, derived from the config once (no Spark).

Each row rule names a column, the config field that names it and what a breaking row
does (``drop_row`` or ``fail``); ``empty_input`` says what an input with no usable row
does (docs/privacy.md §9). ``pipelines.contracts`` turns these into Spark conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipelines.config import JobConfig

RuleName = Literal["null_privacy_unit", "null_partition_key", "non_finite_value"]


@dataclass(frozen=True)
class InputRule:
    """One row rule of the input contract, on one column."""

    rule: RuleName
    column: str
    field: str  # the config field(s) naming the column
    action: Literal["drop_row", "fail"]

    @property
    def figure(self) -> str:
        """Name of the rule's row count among the contract figures."""
        return f"{self.rule}.{self.column}"


@dataclass(frozen=True)
class ContractRules:
    """The input contract: its row rules in config order, and the empty-input rule."""

    rules: tuple[InputRule, ...]
    empty_input: Literal["publish", "fail"]
    source: str  # the input's path or table, for messages


def _rules(config: JobConfig) -> list[InputRule]:
    rules = config.contracts
    out = [
        InputRule(
            "null_privacy_unit",
            config.privacy_unit.column,
            "privacy_unit.column",
            rules.null_privacy_unit,
        )
    ]
    for index, name in enumerate(config.partition_columns):
        out.append(
            InputRule(
                "null_partition_key", name, f"partition_columns[{index}]", rules.null_partition_key
            )
        )
    for column in config.measured_columns:
        fields = [
            f"metrics[{i}].column" for i, m in enumerate(config.metrics) if m.column == column
        ]
        out.append(InputRule("non_finite_value", column, ", ".join(fields), rules.non_finite_value))
    return out


def contract_rules(config: JobConfig) -> ContractRules:
    """The input contract of ``config``."""
    source = config.input.path if config.input.path is not None else config.input.table
    return ContractRules(tuple(_rules(config)), config.contracts.empty_input, str(source))
