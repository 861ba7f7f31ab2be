"""Commands whose issue has not landed yet say so plainly instead of pretending."""

from __future__ import annotations

import sys

PENDING_EXIT_CODE = 3


def not_implemented(command: str, what: str) -> int:
    print(
        f"{command}: not implemented yet ({what}). See the project's open issues; nothing was done.",
        file=sys.stderr,
    )
    return PENDING_EXIT_CODE
