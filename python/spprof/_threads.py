"""Samples every Python thread without help from user code: threads that
exist at start() are armed then, threads started later arm themselves as
they start (threading.Thread._bootstrap_inner is wrapped once, at import)."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional

_engine: Any = None
_active = False
_names: Dict[int, str] = {}
_orig_bootstrap: Optional[Callable[[Any], None]] = None


def _bootstrap_inner(self: threading.Thread) -> None:
    armed = False
    if _active:
        try:
            armed = bool(_engine.add_thread())
        except Exception:
            armed = False  # out of thread slots: the thread runs unsampled
    try:
        assert _orig_bootstrap is not None
        _orig_bootstrap(self)
    finally:
        if self.native_id is not None:
            _names[self.native_id] = self.name
        if armed:
            _engine.remove_thread()


def install(engine: Any) -> None:
    global _engine, _orig_bootstrap
    _engine = engine
    if _orig_bootstrap is None:
        _orig_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
        threading.Thread._bootstrap_inner = _bootstrap_inner  # type: ignore[attr-defined]


def activate() -> None:
    """Arms every thread alive now; new ones arm themselves."""
    global _active
    _names.clear()
    _active = True
    for t in threading.enumerate():
        if t.native_id is not None:
            _names[t.native_id] = t.name
            _engine.add_thread(t.native_id)


def deactivate() -> Dict[int, str]:
    """Stops arming new threads; returns the last known name of each."""
    global _active
    _active = False
    for t in threading.enumerate():
        if t.native_id is not None:
            _names[t.native_id] = t.name
    return dict(_names)
