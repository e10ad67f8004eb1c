"""The queue's allowlist (bluesky-queueserver's ``user_group_permissions.yaml``).

Only the registered plans, only the instrument ``xrm`` as a device, and no function
(``function_execute`` runs nothing): a queue item naming anything else is refused when it
is added. The same rules for every group, ``root`` (the filter applied first) included.
"""

from __future__ import annotations

import copy
import re

import yaml

from ..plans import PLANS

INSTRUMENT_NAME = "xrm"


def permissions() -> dict:
    """The permissions document: one group, ``primary`` (the API's default), behind ``root``'s filter."""
    rules = {
        "allowed_plans": [f":^{re.escape(name)}$" for name in sorted(PLANS)],
        "forbidden_plans": [None],
        "allowed_devices": [f":^{INSTRUMENT_NAME}$"],
        "forbidden_devices": [None],
        "allowed_functions": [],
        "forbidden_functions": [":.*"],
    }
    return {"user_groups": {"root": rules, "primary": copy.deepcopy(rules)}}


def permissions_yaml() -> str:
    return yaml.safe_dump(permissions(), sort_keys=False)
