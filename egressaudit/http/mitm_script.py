"""The addon as a mitmproxy script inside the package (``egressaudit proxy`` loads this file with ``-s``)."""

from egressaudit.http.addon import EgressAudit

addons = [EgressAudit()]
