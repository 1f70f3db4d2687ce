"""The segmentation worker as an asyncio subprocess, so the web server's event loop stays free.

The module logic prepares the run (``SegmentationLogic.startJob``: the CT in a private temporary
folder and the worker's command line) and reads or discards its result (``SegmentationJob.finish`` /
``cancel``, which kills the process tree and deletes the folder). :class:`WorkerProcess` only runs
the command without blocking the loop and hands each ``PROGRESS <0..1> <message>`` line on.

A click on Run should not wait for Python to import torch and MONAI (3-4 s on 2 cores): the page
keeps one :class:`SpareWorker`, a worker started ahead with ``--wait`` that has imported them and
reads its job's arguments from stdin. A run takes it when it is alive and was started with the
job's interpreter, otherwise starts the command as it is; each run's end starts the next spare.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["SpareWorker", "WorkerProcess"]

#: the worker's module: its command line is ``<python> -m rtdeep.slicer.worker <arguments>``
_MODULE = "rtdeep.slicer.worker"


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
    return env


class SpareWorker:
    """One worker started ahead of the next run (``python -m rtdeep.slicer.worker --wait``).

    Args:
        python: the interpreter the module logic's commands use.
    """

    def __init__(self, python: str) -> None:
        self.python = python
        self._process: asyncio.subprocess.Process | None = None
        self._starting = False  # two callers at once (page ready, site changed) start one spare

    async def start(self) -> None:
        """Start a spare unless one is alive or starting."""
        from rtdeep.slicer.worker import WAIT_FLAG

        if self._starting or (self._process is not None and self._process.returncode is None):
            return
        self._starting = True
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.python, "-m", _MODULE, WAIT_FLAG, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_environment(),
            )  # fmt: skip
        finally:
            self._starting = False

    def take(self, command: Sequence[str]) -> tuple[asyncio.subprocess.Process, list[str]] | None:
        """The spare and the arguments to send it for ``command``; None when there is no live spare
        or ``command`` is not this interpreter's worker (it then runs as a new process)."""
        process = self._process
        if process is None or process.returncode is not None or list(command[:3]) != [self.python, "-m", _MODULE]:
            return None
        self._process = None
        return process, list(command[3:])

    @property
    def pid(self) -> int | None:
        """The spare's process id (None when there is none)."""
        return None if self._process is None or self._process.returncode is not None else self._process.pid

    def stop(self) -> None:
        """Kill the spare (server exit)."""
        from rtdeep.slicer.processes import kill_process_tree

        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            kill_process_tree(process.pid)


@dataclass
class WorkerProcess:
    """One run of the worker's command line.

    Args:
        command: the command line (from the module logic).
        parse_progress: turns a stdout line into (fraction, message), or None for other lines.
        on_progress: called with (fraction, message) for each progress line.
    """

    command: Sequence[str]
    parse_progress: Callable[[str], tuple[float, str] | None]
    on_progress: Callable[[float, str], None]
    #: a spare worker to run the command in (a new process when it has none to give)
    spare: SpareWorker | None = None
    cancelled: bool = False
    pid: int | None = None
    #: the process has ended (and been waited for): its pid may belong to another process now
    finished: bool = False

    async def _job_to_spare(self) -> asyncio.subprocess.Process | None:
        """The spare, given this run's arguments; None when there is none or it died meanwhile."""
        taken = None if self.spare is None else self.spare.take(self.command)
        if taken is None:
            return None
        process, arguments = taken
        try:
            process.stdin.write((json.dumps(arguments) + "\n").encode())
            await process.stdin.drain()
            process.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            return None
        return process

    async def run(self) -> tuple[int, str]:
        """Run to the end; returns (exit status, the worker's stderr)."""
        from rtdeep.slicer.processes import kill_process_tree

        process = await self._job_to_spare()
        if process is None:
            process = await asyncio.create_subprocess_exec(
                *self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_environment()
            )
        self.pid = process.pid
        if self.cancelled:  # Cancel came while the process was starting
            kill_process_tree(process.pid)
        stderr_task = asyncio.create_task(process.stderr.read())
        async for raw in process.stdout:
            progress = self.parse_progress(raw.decode("utf-8", "replace"))
            if progress is not None:
                self.on_progress(*progress)
        status = await process.wait()
        self.finished = True
        return status, (await stderr_task).decode("utf-8", "replace")
