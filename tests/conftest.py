"""Shared test settings: keep torch to one thread per xdist worker (2 workers on 2 cores)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HIFIC_OFFLINE", "1")  # tests never reach the internet; loopback servers override
