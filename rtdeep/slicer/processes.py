"""Stop a worker process and everything it started (the panel's Cancel).

In Slicer the worker runs as ``PythonSlicer -m rtdeep.slicer.worker``; ``PythonSlicer`` is a
launcher that starts the real Python as a child, so killing only the process Qt started leaves the
segmentation running. :func:`kill_process_tree` finds the descendants first (``/proc`` on Linux,
``pgrep -P`` on macOS, ``taskkill /T`` on Windows), then kills them all. No third-party package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["child_pids", "kill_process_tree", "process_alive"]


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (empty when it has none or is gone)."""
    proc = Path("/proc")
    if proc.is_dir():
        children = []
        for task in proc.glob(f"{int(pid)}/task/*/children"):
            try:
                children += [int(child) for child in task.read_text().split()]
            except OSError:
                continue
        return children
    done = subprocess.run(["pgrep", "-P", str(int(pid))], capture_output=True, text=True, check=False)
    return [int(line) for line in done.stdout.split()]


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [int(pid)]
    while pending:
        children = child_pids(pending.pop())
        found += children
        pending += children
    return found


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    stat = Path(f"/proc/{int(pid)}/stat")
    if stat.parent.parent.is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(int(pid), 0)
    except OSError:
        return False
    return True


def kill_process_tree(pid: int, timeout_s: float = 5.0) -> list[int]:
    """Kill ``pid`` and all its descendants; returns the process IDs that were signalled.

    Descendants are collected before anything is killed (an orphaned grandchild would be
    re-parented and lost otherwise). Waits up to ``timeout_s`` for them to disappear.
    """
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/PID", str(int(pid)), "/T", "/F"], capture_output=True, check=False)
        return [int(pid)]
    tree = [*_descendants(pid), int(pid)]
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except OSError:
            continue
    deadline = time.monotonic() + timeout_s
    while any(process_alive(member) for member in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    return tree
