"""Reads the agent's flags with the OpenFeature Python SDK and its OFREP
provider from PyPI (openfeature-sdk, openfeature-provider-ofrep): a client
nobody on this project wrote. Prints one JSON line for the Rust test.

Usage: agent_ofrep_client.py http://127.0.0.1:PORT
       agent_ofrep_client.py http://127.0.0.1:PORT --until-false SECONDS
         prints "watching" once it has read new_checkout as true, then polls
         it every 20 ms and prints {"flipped_at": UNIX_SECONDS} when it reads
         false (or {"flipped_at": null} after SECONDS).
"""

import json
import sys
import time

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider

api.set_provider(OFREPProvider(sys.argv[1], timeout=5.0))
client = api.get_client()

if len(sys.argv) == 4 and sys.argv[2] == "--until-false":
    deadline = time.time() + float(sys.argv[3])
    while not client.get_boolean_value("new_checkout", False):
        time.sleep(0.02)
        if time.time() > deadline:
            sys.exit("new_checkout never read as true")
    print("watching", flush=True)
    flipped = None
    while time.time() < deadline:
        if not client.get_boolean_value("new_checkout", True):
            flipped = time.time()
            break
        time.sleep(0.02)
    print(json.dumps({"flipped_at": flipped}), flush=True)
    sys.exit(0)

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
