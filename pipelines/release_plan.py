"""The plan of a whole release: one ``ReleasePlan`` per table, composed sequentially.

Every table of a release reads the same privacy units, so the tables compose
sequentially: the release spends the sum of the tables' (epsilon, delta), each table
spends within its share, and each table's partitions compose in parallel inside it
(docs/privacy.md §8). Invariant: the release total is at most the release budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.config import JobConfig, ReleaseSpec, TableSpec
from pipelines.errors import ConfigError
from pipelines.plan import ReleasePlan, build_plan
from pipelines.plan_description import describe_plan

# Sequential composition across tables, as the manifest and README state it.
TABLES_STATEMENT = (
    "sequential composition across the tables (one privacy unit reaches every table): "
    "the release spends the sum of the tables' (epsilon, delta)"
)


@dataclass(frozen=True)
class TablePlan:
    """One table of the release and its plan."""

    spec: TableSpec
    plan: ReleasePlan

    @property
    def config(self) -> JobConfig:
        """The table as a job of its own."""
        return self.spec.config


@dataclass(frozen=True)
class ReleasePlans:
    """Every table's plan and the release total the ledger is charged."""

    spec: ReleaseSpec
    tables: tuple[TablePlan, ...]

    @property
    def config(self) -> JobConfig:
        """The release-level sections (equal in every table's config)."""
        return self.spec.config

    @property
    def epsilon(self) -> float:
        """The release's epsilon: the sum over its tables (sequential composition)."""
        return math.fsum(t.plan.composition.epsilon for t in self.tables)

    @property
    def delta(self) -> float:
        """The release's delta: the sum over its tables."""
        return math.fsum(t.plan.composition.delta for t in self.tables)


def build_release_plans(spec: ReleaseSpec) -> ReleasePlans:
    """Each table's plan (every single-table check applies to each table); a refusal
    names the table when there are several."""
    tables = []
    for table in spec.tables:
        try:
            tables.append(TablePlan(table, build_plan(table.config)))
        except ConfigError as error:
            if table.name is None:
                raise
            raise ConfigError(f"tables ({table.name}): {error}") from None
    plans = ReleasePlans(spec, tuple(tables))
    slack = 1 + 1e-9
    if plans.epsilon > spec.budget_epsilon * slack or plans.delta > spec.budget_delta * slack:
        raise ConfigError(
            f"budget: the tables compose to epsilon {plans.epsilon:.12g}, delta "
            f"{plans.delta:.3g}, more than the release budget"
        )
    return plans


def describe_release_totals(plans: ReleasePlans) -> dict[str, object]:
    """The release-level composition: each table's spend and the sum."""
    return {
        "statement": TABLES_STATEMENT,
        "epsilon": plans.epsilon,
        "delta": plans.delta,
        "budget": {"epsilon": plans.spec.budget_epsilon, "delta": plans.spec.budget_delta},
        "tables": [
            {
                "name": t.spec.label,
                "epsilon": t.plan.composition.epsilon,
                "delta": t.plan.composition.delta,
            }
            for t in plans.tables
        ],
    }


def describe_release_plans(plans: ReleasePlans) -> dict[str, object]:
    """The plan as JSON: one table's plan as today; several: one entry per table and the
    release totals."""
    if not plans.spec.multi:
        return describe_plan(plans.tables[0].plan)
    return {
        "release": plans.config.release.name,
        "tables": [{"name": t.spec.label} | describe_plan(t.plan) for t in plans.tables],
        "totals": describe_release_totals(plans),
    }
