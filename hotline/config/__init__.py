"""The YAML configuration file, turned into the plain frozen values the core and the daemon use;
pydantic stays inside this package.

- `settings.py`: those values (Config and its sections), with no defaults of their own.
- `schema.py`: the pydantic model of the file, its field validators and every default.
- `checks.py`: the checks between sections (unknown queue or responder, secret sources...).
- `credentials.py`: reading secrets and credential files, which must be private to the daemon.
- `loading.py`: reading the YAML with the line of every node, `load_config`, `parse_config`,
  and turning the model into the settings.
- `problems.py`: ConfigError, its exit status, and one line per problem with path and line.
"""

from hotline.config.credentials import read_private_file
from hotline.config.loading import load_config, parse_config
from hotline.config.problems import EXIT_CONFIG, ConfigError
from hotline.config.settings import (
    AmiSettings,
    AmiTlsSettings,
    ApiToken,
    CallSettings,
    Config,
    DatabaseSettings,
    HttpSettings,
    HttpTlsSettings,
    PauseReason,
    PauseSettings,
    PrivacySettings,
    QueueService,
    ReconcileSettings,
    ReportSettings,
    RosterCheckSettings,
    SecretRef,
    SecretSection,
)

__all__ = [
    "EXIT_CONFIG",
    "AmiSettings",
    "AmiTlsSettings",
    "ApiToken",
    "CallSettings",
    "Config",
    "ConfigError",
    "DatabaseSettings",
    "HttpSettings",
    "HttpTlsSettings",
    "PauseReason",
    "PauseSettings",
    "PrivacySettings",
    "QueueService",
    "ReconcileSettings",
    "ReportSettings",
    "RosterCheckSettings",
    "SecretRef",
    "SecretSection",
    "load_config",
    "parse_config",
    "read_private_file",
]
