"""Whether a process is alive: for what a process leaves in an index directory while it works
(a half-made export, a server's record), which stays behind if it is killed."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
