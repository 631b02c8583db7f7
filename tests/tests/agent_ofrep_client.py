"""Reads the agent's flags with the OpenFeature Python SDK and its OFREP
provider from PyPI (openfeature-sdk, openfeature-provider-ofrep): a client
nobody on this project wrote. Prints one JSON line for the Rust test.

Usage: agent_ofrep_client.py http://127.0.0.1:PORT
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider

api.set_provider(OFREPProvider(sys.argv[1], timeout=5.0))
client = api.get_client()
flag = client.get_boolean_details("new_checkout", False)
missing = client.get_boolean_details("no_such_flag", True)


def code(details):
    return None if details.error_code is None else str(getattr(details.error_code, "value", details.error_code))


def reason(details):
    return None if details.reason is None else str(getattr(details.reason, "value", details.reason))


print(
    json.dumps(
        {
            "new_checkout": flag.value,
            "reason": reason(flag),
            "variant": flag.variant,
            "error": code(flag),
            "metadata": dict(flag.flag_metadata or {}),
            "missing": missing.value,
            "missing_error": code(missing),
        }
    )
)
