"""`python -m esper.launch`: start (or resume) a run on a Ray cluster, or on a local Ray."""
from __future__ import annotations

from esper.launch.main import build_parser, main

__all__ = ["build_parser", "main"]
