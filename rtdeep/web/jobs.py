"""The segmentation worker as an asyncio subprocess, so the web server's event loop stays free.

The module logic prepares the run (``SegmentationLogic.startJob``: the CT in a private temporary
folder and the worker's command line) and reads or discards its result (``SegmentationJob.finish`` /
``cancel``, which kills the process tree and deletes the folder). :class:`WorkerProcess` only runs
the command without blocking the loop and hands each ``PROGRESS <0..1> <message>`` line on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["WorkerProcess"]


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
    cancelled: bool = False
    pid: int | None = None
    #: the process has ended (and been waited for): its pid may belong to another process now
    finished: bool = False

    async def run(self) -> tuple[int, str]:
        """Run to the end; returns (exit status, the worker's stderr)."""
        from rtdeep.slicer.processes import kill_process_tree

        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
        process = await asyncio.create_subprocess_exec(
            *self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
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
