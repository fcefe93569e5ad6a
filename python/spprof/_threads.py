"""Samples every Python thread without help from user code.

Threads alive at start() are armed then. Threads started later arm
themselves: threading calls Thread._set_native_id() on the new thread before
it runs anything, and spprof wraps that method once, at import, so no spprof
frame stays on the thread's stack. Threads end by themselves: the engine
notices that a thread is gone within one drain period and frees its slot.
The few frames of these hooks are left out of the stacks (engine.hide).
"""

from __future__ import annotations

import threading
from typing import Any, Dict

_engine: Any = None
_active = False
_names: Dict[int, str] = {}
_installed = False


def _remember(thread: threading.Thread) -> None:
    # (Never threading.current_thread() here: during a thread's bootstrap it
    # would create a _DummyThread.)
    if getattr(thread, "_ident", None) == threading.get_ident():
        tid = threading.get_native_id()  # right even in a forked child
    else:
        tid = getattr(thread, "_native_id", None)
    if tid is not None:
        _names[tid] = thread.name


def _wrap(name: str, before: Any = None, after: Any = None) -> None:
    original = getattr(threading.Thread, name, None)
    if original is None:
        return

    def wrapper(self: threading.Thread, *args: Any, **kwargs: Any) -> Any:
        # The hooks must never break the program's threads.
        if before is not None and _active:
            try:
                before(self)
            except Exception:
                pass
        result = original(self, *args, **kwargs)
        if after is not None and _active:
            try:
                after(self)
            except Exception:
                pass
        return result

    wrapper.__name__ = original.__name__
    wrapper.__qualname__ = original.__qualname__
    wrapper.__doc__ = original.__doc__
    setattr(threading.Thread, name, wrapper)
    _engine.hide(wrapper.__code__)


def _thread_started(thread: threading.Thread) -> None:
    _remember(thread)
    try:
        _engine.add_thread()
    except Exception:
        pass  # out of thread slots or memory: the thread runs unsampled (counted)


def install(engine: Any) -> None:
    global _engine, _installed
    _engine = engine
    if _installed:
        return
    _installed = True
    for hook in (_remember, _thread_started, activate, deactivate):
        _engine.hide(hook.__code__)
    _wrap("_set_native_id", after=_thread_started)
    _wrap("_stop", before=_remember)
    _watch_renames()


def _watch_renames() -> None:
    """Thread.name is a property; record every new name while profiling."""
    prop = threading.Thread.__dict__.get("name")
    if not isinstance(prop, property) or prop.fset is None:
        return
    fget, fset = prop.fget, prop.fset

    def set_name(self: threading.Thread, value: str) -> None:
        fset(self, value)
        if _active:
            try:
                _remember(self)
            except Exception:
                pass

    _engine.hide(set_name.__code__)
    threading.Thread.name = property(fget, set_name, prop.fdel, prop.__doc__)  # type: ignore[assignment]


def activate() -> None:
    """Arms every thread alive now; new ones arm themselves."""
    global _active
    _names.clear()
    _active = True
    me = threading.current_thread()
    for t in threading.enumerate():
        if t is not me and t.native_id is not None:
            _names[t.native_id] = t.name
            # 0 when the thread just ended, or there is no room left for it
            # (then counted as dropped): either way, not an error.
            _engine.add_thread(t.native_id, t.ident or 0)
    # The calling thread last (so this loop is not sampled), by its real id:
    # after a fork, threading may still hold the parent's id for it.
    _names[threading.get_native_id()] = me.name
    _engine.add_thread()


def deactivate() -> Dict[int, str]:
    """Stops arming new threads; returns the last known name of each."""
    global _active
    _active = False
    for t in threading.enumerate():
        _remember(t)
    return dict(_names)
