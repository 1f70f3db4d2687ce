"""Long work outside the web server's event loop: a worker subprocess with progress and Cancel.

The web app runs a segmentation the way the desktop module does: the module logic writes the CT and
returns the worker's command line (``SegmentationLogic.subprocessCommand``), the worker prints
``PROGRESS <0..1> <message>`` lines, and the logic reads its result. Here the process is an asyncio
subprocess, so the server keeps serving views and clicks while it runs; Cancel kills the worker's
whole process group.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["JobCancelled", "JobFailed", "WorkerJob"]


class JobCancelled(Exception):
    """The user cancelled the job."""


class JobFailed(RuntimeError):
    """The worker exited with an error; the message is its last error line."""


@dataclass
class WorkerJob:
    """One worker subprocess.

    Args:
        command: the command line (from the module logic).
        parse_progress: turns a stdout line into (fraction, message), or None for other lines.
        on_progress: called with (fraction, message) for each progress line.
    """

    command: Sequence[str]
    parse_progress: Callable[[str], tuple[float, str] | None]
    on_progress: Callable[[float, str], None]
    _process: asyncio.subprocess.Process | None = None
    _cancelled: bool = False

    async def run(self) -> None:
        """Run the worker to the end.

        Raises:
            JobCancelled: :meth:`cancel` was called.
            JobFailed: the worker exited with a non-zero status.
        """
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1)))
        self._process = await asyncio.create_subprocess_exec(
            *self.command,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=env,
        )
        if self._cancelled:  # Cancel came while the process was starting
            self.cancel()
        stderr_task = asyncio.create_task(self._process.stderr.read())
        assert self._process.stdout is not None
        async for raw in self._process.stdout:
            progress = self.parse_progress(raw.decode("utf-8", "replace"))
            if progress is not None:
                self.on_progress(*progress)
        status = await self._process.wait()
        stderr = (await stderr_task).decode("utf-8", "replace")
        if self._cancelled:
            raise JobCancelled()
        if status != 0:
            lines = [line for line in stderr.splitlines() if line.strip()]
            raise JobFailed(lines[-1] if lines else f"worker exited with status {status}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def cancel(self) -> None:
        """Kill the worker and everything it started (its process group)."""
        self._cancelled = True
        if self.running:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
