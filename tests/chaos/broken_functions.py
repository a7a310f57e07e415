"""A function module that raises while it is imported (the worker must say so and exit)."""

from stepstream import Stepstream

ss = Stepstream(app_id="broken")

raise RuntimeError("the feature-flag service is down; cannot build the functions")
