"""The driver: ``fit_async`` (and ``fit``, its synchronous facade) checks the settings once,
opens the data, places the training tasks where the data lives, creates the job on the
parameter server, watches it and builds the result."""

from daskgd.driver.api import fit, fit_async, fit_with_settings, fit_with_settings_async
from daskgd.driver.result import FitResult
from daskgd.driver.settings import FitSettings

__all__ = [
    "FitResult",
    "FitSettings",
    "fit",
    "fit_async",
    "fit_with_settings",
    "fit_with_settings_async",
]
