"""Process helpers for the local stack: pid files and stopping by pid (never by name)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(Path(pidfile).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def stop_pid(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 30) -> bool:
    """Send ``sig`` to ``pid`` and wait for it to exit (SIGKILL after ``timeout``).

    Returns True when a live process was stopped, False when there was nothing to stop.
    """
    if not pid_alive(pid):
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.1)
    return True
