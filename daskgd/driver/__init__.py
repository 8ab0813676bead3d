"""The driver: ``fit_async`` (and ``fit``, its synchronous facade) opens the data, places the
training tasks, creates the job on the parameter server, watches it and builds the result."""

from daskgd.driver.engine import FitResult, fit, fit_async

__all__ = ["FitResult", "fit", "fit_async"]
