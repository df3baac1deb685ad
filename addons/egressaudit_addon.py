"""egressaudit's mitmproxy addon.

    mitmdump -s addons/egressaudit_addon.py --set egressaudit_dir=audits/teams-call

Thin on purpose: the work is done by the installed package
(``egressaudit.http.addon``); ``egressaudit proxy`` runs the same addon.
"""

from egressaudit.http.addon import EgressAudit

addons = [EgressAudit()]
