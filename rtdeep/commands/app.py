"""``rtdeep app``: the web app (trame-slicer) with the RTDeepSeg and RTPneumonitisPredictor panels.

Serves studies from ``--data`` only, on 127.0.0.1 unless ``--host`` says otherwise. Needs the
``web`` extra (``pip install -e ".[slicer,web]"``). Rendering is offscreen through EGL unless
``VTK_DEFAULT_OPENGL_WINDOW`` is already set.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from pathlib import Path

HELP = "start the web app (views + RTDeepSeg and pneumonitis panels) on http://127.0.0.1:PORT"

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=Path.cwd(),
                        help="folder of studies the page may open (default: current folder); nothing outside it is readable")  # fmt: skip
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument(
        "--max-upload-mb", type=float, default=512.0, help="largest DICOM upload accepted (MB)"
    )


def run(args: argparse.Namespace) -> int:
    from rtdeep.errors import RtDeepError

    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    try:
        import trame_slicer  # noqa: F401
    except ImportError as error:
        raise RtDeepError(
            f"the web app needs the 'web' extra: pip install -e '.[slicer,web]' ({error})"
        ) from None
    if args.max_upload_mb <= 0:
        raise RtDeepError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    from rtdeep.web.app import RtDeepWebApp
    from rtdeep.web.files import DataRoot

    data_root = DataRoot(args.data)
    if args.host not in LOCAL_HOSTS:
        logging.getLogger("rtdeep.web").warning(
            "binding %s: anyone who can reach this address can open the studies in the data folder", args.host
        )
    app = RtDeepWebApp(data_root, max_upload_mb=args.max_upload_mb)
    atexit.register(app.cleanup)
    app.open_initial_study()
    argv, sys.argv = sys.argv, sys.argv[:1]  # trame parses sys.argv; our options are already applied
    try:
        app.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=True)
    finally:
        sys.argv = argv
        app.cleanup()
    return 0
