"""The web app (``rtdeep app``): trame-slicer views and the two modules' panels over one MRML scene.

Needs the ``slicer`` and ``web`` extras. :mod:`rtdeep.web.app` builds the page, :mod:`rtdeep.web.files`
guards what the browser may read and where uploads go, :mod:`rtdeep.web.jobs` runs the segmentation
worker outside the server's event loop.
"""

from __future__ import annotations

__all__ = ["app", "files", "jobs"]
