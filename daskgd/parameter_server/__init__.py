"""The parameter server: a scheduler plugin that holds each job's parameters and optimizer
state, closes synchronous rounds, bounds staleness and applies the stop rules."""

from daskgd.parameter_server.client import ParameterServerClient
from daskgd.parameter_server.server import (
    INLINE_MAX_PARAMS,
    MODES,
    PLUGIN_NAME,
    Job,
    JobConfig,
    ParameterServer,
    check_quorum,
)

__all__ = [
    "INLINE_MAX_PARAMS",
    "MODES",
    "PLUGIN_NAME",
    "Job",
    "JobConfig",
    "ParameterServer",
    "ParameterServerClient",
    "check_quorum",
]
