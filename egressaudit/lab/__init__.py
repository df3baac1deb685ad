"""The conference lab (issue 14): a local world of network namespaces with Janus, DNS and telemetry sinks, and a
conference page with real telemetry SDKs, for calls whose truth is known.  :class:`World` builds it."""

from egressaudit.lab.world import PLANTED, LabError, World, cleanup, unavailable

__all__ = ["PLANTED", "LabError", "World", "cleanup", "unavailable"]
