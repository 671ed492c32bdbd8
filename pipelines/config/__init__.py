"""The typed, frozen job configuration, loaded from YAML.

Invariants: every field is validated at load time; unknown keys and keys repeated in
one mapping are errors that name their field path; no numeric field accepts a boolean;
every numeric limit is a named constant of ``pipelines.config.limits``, re-exported
here (the release ceilings are read from here at validation time); relative paths in a
config file mean paths relative to that file's folder; nothing here is a sensitivity or
a noise scale (those are derived by code from the bounds and the budget, see
``pipelines.plan``).

The package: ``limits`` (numeric limits and number types), ``fields`` (path and text
field types), ``sections`` and ``privacy`` (the section models), ``model``
(``JobConfig``) and ``yaml_loading`` (parsing and validation of a config file).
"""

from __future__ import annotations

from pipelines.config.fields import ConfigPath as ConfigPath
from pipelines.config.fields import OptionValue as OptionValue
from pipelines.config.limits import DELTA_CEILING as DELTA_CEILING
from pipelines.config.limits import DELTA_MIN_POSITIVE as DELTA_MIN_POSITIVE
from pipelines.config.limits import EPSILON_MAX as EPSILON_MAX
from pipelines.config.limits import EPSILON_MIN as EPSILON_MIN
from pipelines.config.limits import MAX_PARTITIONS_PER_UNIT_LIMIT as MAX_PARTITIONS_PER_UNIT_LIMIT
from pipelines.config.limits import (
    MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT as MAX_ROWS_PER_UNIT_PER_PARTITION_LIMIT,
)
from pipelines.config.limits import MIN_UNITS_LIMIT as MIN_UNITS_LIMIT
from pipelines.config.limits import Delta as Delta
from pipelines.config.limits import Epsilon as Epsilon
from pipelines.config.limits import Integer as Integer
from pipelines.config.limits import LifetimeDelta as LifetimeDelta
from pipelines.config.limits import LifetimeEpsilon as LifetimeEpsilon
from pipelines.config.limits import Number as Number
from pipelines.config.model import JobConfig
from pipelines.config.model import config_digest as config_digest
from pipelines.config.privacy import BudgetConfig as BudgetConfig
from pipelines.config.privacy import ContributionBoundsConfig as ContributionBoundsConfig
from pipelines.config.privacy import LedgerConfig as LedgerConfig
from pipelines.config.privacy import LifetimeBudgetConfig as LifetimeBudgetConfig
from pipelines.config.privacy import MetricConfig as MetricConfig
from pipelines.config.privacy import MetricName as MetricName
from pipelines.config.privacy import PartitionSelectionConfig as PartitionSelectionConfig
from pipelines.config.privacy import PrivacyUnitConfig as PrivacyUnitConfig
from pipelines.config.privacy import SelectionMechanism as SelectionMechanism
from pipelines.config.registry import RegistryConfig as RegistryConfig
from pipelines.config.sections import ContractsConfig as ContractsConfig
from pipelines.config.sections import DeclaredType as DeclaredType
from pipelines.config.sections import EmptyInputRule as EmptyInputRule
from pipelines.config.sections import InputConfig as InputConfig
from pipelines.config.sections import PostProcessingConfig as PostProcessingConfig
from pipelines.config.sections import PublicKeysConfig as PublicKeysConfig
from pipelines.config.sections import ReleaseConfig as ReleaseConfig
from pipelines.config.sections import RowRule as RowRule
from pipelines.config.tables import MultiTableConfig as MultiTableConfig
from pipelines.config.tables import ReleaseSpec as ReleaseSpec
from pipelines.config.tables import TableSpec as TableSpec
from pipelines.config.tables import config_json_schema as config_json_schema
from pipelines.config.tables import single_table as single_table
from pipelines.config.yaml_loading import DuplicateKeyError as DuplicateKeyError
from pipelines.config.yaml_loading import config_from_mapping, load_config
from pipelines.config.yaml_loading import load_release as load_release
from pipelines.config.yaml_loading import parse_yaml as parse_yaml
from pipelines.config.yaml_loading import release_from_mapping as release_from_mapping
from pipelines.errors import ConfigError

__all__ = ["ConfigError", "JobConfig", "config_from_mapping", "load_config"]
