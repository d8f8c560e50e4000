"""Contract versions: checkpoints, telemetry and actors refuse data from an incompatible Leyline."""
from __future__ import annotations

LEYLINE_VERSION = "1.0.0"
# Oldest contract whose data this one still reads (observations, actions, event schemas).
MIN_COMPATIBLE_VERSION = "1.0.0"


class IncompatibleVersionError(ValueError):
    """Raised when data was written under a Leyline version this one cannot read."""


def _parse(version: str) -> tuple[int, int, int]:
    try:
        major, minor, patch = (int(p) for p in version.split("."))
    except ValueError as exc:
        raise IncompatibleVersionError(f"malformed Leyline version {version!r}; expected 'MAJOR.MINOR.PATCH'") from exc
    return major, minor, patch


def check_compatible(other: str, *, what: str = "data") -> None:
    """Raise unless `other` (the version that wrote some data) can be read by this Leyline.

    Same major version and not older than MIN_COMPATIBLE_VERSION.
    """
    theirs, ours, oldest = _parse(other), _parse(LEYLINE_VERSION), _parse(MIN_COMPATIBLE_VERSION)
    if theirs[0] != ours[0] or theirs < oldest:
        raise IncompatibleVersionError(
            f"{what} was written by Leyline {other}; this Esper reads {MIN_COMPATIBLE_VERSION} "
            f"up to {ours[0]}.x (current {LEYLINE_VERSION})"
        )
