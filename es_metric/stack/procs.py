"""Process helpers for the local stack: pid files, process identities, and stopping by pid (never
by name).

A pid alone is not a process: once the process exits, the kernel hands its number to the next
one, and a stale pid file or ``stack.json`` entry then names a stranger (as root, anything).
So ``esm stack up`` records each process's identity (boot id, start time in clock ticks since
boot, executable), and nothing is signalled unless the process behind the pid still has it; a
record without an identity falls back to the pid file its process wrote (a process that
started after its pid file was written did not write it).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import time
from pathlib import Path

from ..pids import pid_alive, stat_fields

log = logging.getLogger(__name__)


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(Path(pidfile).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def identity(pid: int | None) -> dict | None:
    """What tells process ``pid`` apart from a later one with the same number, or None."""
    fields = stat_fields(pid) if pid else None
    if not fields:
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:  # another user's process when we are not root, or a zombie
        exe = None
    return {"pid": pid, "boot_id": _boot_id(), "start_ticks": int(fields[19]), "exe": exe}


def _started_at(ident: dict) -> float:
    """Wall-clock start of a process (a lower bound: /proc/stat's btime is whole seconds)."""
    return _boot_time() + ident["start_ticks"] / os.sysconf("SC_CLK_TCK")


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def mismatch(pid: int, recorded: dict | None = None, pidfile: Path | None = None) -> str | None:
    """None when ``pid`` is still the ``recorded`` process (without a record: the process that
    wrote ``pidfile``); otherwise why it is not, in words."""
    now = identity(pid)
    if now is None:
        return "its /proc entry cannot be read"
    what = f"it is {now['exe'] or 'another program'}, started {_when(_started_at(now))}"
    if recorded and recorded.get("start_ticks") is not None:
        if recorded.get("boot_id") != now["boot_id"]:
            return f"the machine has rebooted since it was recorded ({what})"
        if recorded["start_ticks"] != now["start_ticks"]:
            return f"the recorded process started {_when(_started_at(recorded))}; {what}"
        if recorded.get("exe") and now["exe"] and recorded["exe"] != now["exe"]:
            return f"the recorded process ran {recorded['exe']}; {what}"
        return None
    if pidfile is None:
        return f"nothing was recorded to check it against ({what})"
    try:
        written = Path(pidfile).stat().st_mtime
    except OSError:
        return f"no identity was recorded and its pid file {pidfile} is gone ({what})"
    if _started_at(now) > written:
        return f"it started after {pidfile} was written ({what})"
    return None


def stop_pid(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 30, *,
             recorded: dict | None = None, pidfile: Path | None = None, name: str = "") -> bool:
    """Send ``sig`` to ``pid`` and wait for it to exit (SIGKILL after ``timeout``), but only if
    it is still the process ``recorded`` (or the writer of ``pidfile``): see ``mismatch``.

    Returns True when a live process was stopped, False when there was nothing to stop or the
    pid now belongs to another process (then a warning says which and why)."""
    if pid is None or not pid_alive(pid):
        return False
    why = mismatch(pid, recorded, pidfile)
    if why:
        log.warning("not stopping pid %d%s: it is no longer the process esm recorded: %s",
                    pid, f" ({name})" if name else "", why)
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


def still_running(pid: int | None, recorded: dict | None = None, pidfile: Path | None = None) -> bool:
    """``pid`` is alive and still the recorded process (what ``status`` calls managed)."""
    return pid is not None and pid_alive(pid) and mismatch(pid, recorded, pidfile) is None
