"""spprof: a sampling profiler for CPython.

In-process use::

    import spprof
    spprof.start()                      # every thread, CPU time, 10 ms
    ...
    profile = spprof.stop()
    profile.save("profile.json")        # speedscope; .svg -> flame graph

or ``with spprof.Profiler(interval_ms=5) as p: ...`` and
``@spprof.profile(output_path="f.json")``.
"""

from __future__ import annotations

import atexit
import functools
import math
import numbers
import os
import signal
import sys
import threading
import warnings
from typing import Any, Callable, Optional, TypeVar, Union

from . import _threads
from ._profile import (
    AggregatedProfile,
    AggregatedStack,
    Frame,
    PathLike,
    Profile,
    ProfilerStats,
    Sample,
    _format_for,
)

from ._upload import UploadError

try:
    from . import _spprof as _engine
except ImportError as exc:  # pragma: no cover - a broken install
    raise ImportError("spprof's C extension could not be loaded: %s" % exc) from exc

__version__ = "0.1.0"

__all__ = [
    "start",
    "stop",
    "is_active",
    "stats",
    "register_thread",
    "unregister_thread",
    "ThreadProfiler",
    "Profiler",
    "profile",
    "native_unwinding_available",
    "set_native_unwinding",
    "native_unwinding_enabled",
    "Profile",
    "AggregatedProfile",
    "AggregatedStack",
    "Sample",
    "Frame",
    "ProfilerStats",
    "UploadError",
]

_lock = threading.Lock()
_session: Optional["_Session"] = None
# The profile that an os.exec*() call ended, kept for the stop() that
# follows if the exec failed and the program went on.
_ended_by_exec: Optional["Profile"] = None
_native = False

_CLOCKS = {
    "": _engine.MECH_AUTO,
    "auto": _engine.MECH_AUTO,
    "perf": _engine.MECH_PERF,
    "cpu": _engine.MECH_CPUTIMER,
    "wall": _engine.MECH_WALL,
    "poll": _engine.MECH_POLL,
    "nonblocking": _engine.MECH_NONBLOCK,
}


class _Session:
    def __init__(self, interval_ms: float, output_path: Optional[str]) -> None:
        self.interval_ms = interval_ms
        self.output_path = output_path


def _check_interval(interval_ms: Any) -> float:
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, numbers.Real):
        raise TypeError("interval_ms must be a number, not %s" % type(interval_ms).__name__)
    value = float(interval_ms)
    if math.isnan(value) or not 1 <= value <= 1000:
        raise ValueError("interval_ms must be between 1 and 1000 (milliseconds), got %r" % (interval_ms,))
    return value


def _check_memory(memory_limit_mb: Any) -> int:
    if isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, numbers.Integral):
        raise TypeError("memory_limit_mb must be an integer, not %s" % type(memory_limit_mb).__name__)
    if not 1 <= memory_limit_mb <= 1 << 20:
        raise ValueError("memory_limit_mb must be between 1 and 1048576, got %r" % (memory_limit_mb,))
    return int(memory_limit_mb)


def _check_output_path(output_path: Optional[PathLike]) -> Optional[str]:
    if output_path is None:
        return None
    path = os.fspath(output_path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    _format_for(path, None)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(2, "output directory does not exist", directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise PermissionError(13, "output directory is not writable", directory)
    return path


def start(
    interval_ms: float = 10,
    output_path: Optional[PathLike] = None,
    memory_limit_mb: int = 100,
    timeline: bool = False,
    nonblocking: bool = False,
) -> None:
    """Start sampling every Python thread of this process.

    interval_ms: CPU time between samples of a thread, 1 to 1000.
    output_path: if given, stop() also saves the profile there (format from
        the suffix; speedscope JSON by default).
    memory_limit_mb: bound on the memory the profiler itself uses; samples
        beyond it are counted as dropped.
    timeline: also keep the samples in time order, for the chrometrace
        format (implied by an output_path ending in .trace or .trace.json);
        it costs memory with duration, within a quarter of the limit.
    nonblocking: read each thread's stack from a spprof thread while the
        thread runs on, instead of interrupting it with a signal (as py-spy's
        --nonblocking): nearly nothing is added to the threads' own time,
        at the price of an occasional stack that mixes two moments of a
        thread that calls and returns fast, and no native frames. Also
        chosen by SPPROF_CLOCK=nonblocking.

    Raises RuntimeError if already running, ValueError/TypeError for bad
    arguments, OSError if output_path's directory cannot be written.
    """
    global _session
    interval = _check_interval(interval_ms)
    memory = _check_memory(memory_limit_mb)
    path = _check_output_path(output_path)
    if not isinstance(timeline, bool):
        raise TypeError("timeline must be True or False, not %r" % (timeline,))
    if path is not None and _format_for(path, None) == "chrometrace":
        timeline = True
    if not isinstance(nonblocking, bool):
        raise TypeError("nonblocking must be True or False, not %r" % (nonblocking,))
    clock = os.environ.get("SPPROF_CLOCK", "").strip().lower()
    if clock not in _CLOCKS:
        raise ValueError("SPPROF_CLOCK must be one of poll, perf, cpu, wall, nonblocking, auto; "
                         "got %r" % clock)
    if nonblocking:
        clock = "nonblocking"
    if clock == "nonblocking" and _native:
        raise ValueError("native frames need a clock that interrupts the thread: "
                         "nonblocking sampling cannot record them (call "
                         "spprof.set_native_unwinding(False), or leave nonblocking off)")
    global _ended_by_exec
    with _lock:
        if _session is not None:
            raise RuntimeError("profiler is already running; call spprof.stop() first")
        _ended_by_exec = None
        _engine.start(int(interval * 1e6), memory << 20, _native, _CLOCKS[clock],
                      timeline=timeline)
        _session = _Session(interval, path)
        try:
            _threads.activate()
        except BaseException:
            _threads.deactivate()
            _engine.stop("", interval)
            _session = None
            raise


def _command_line():
    """The profile's title: the program's command line as sys.argv has it,
    which for `python -c` is only "-c" and in the REPL empty, so the
    interpreter is named there."""
    argv = [a for a in sys.argv if a]
    if not argv or argv[0] == "-c":
        return " ".join(["python"] + argv)
    return " ".join(argv)


def stop() -> Profile:
    """Stop sampling and return the Profile (saved to output_path if start()
    was given one). Raises RuntimeError if the profiler is not running."""
    global _session, _ended_by_exec
    with _lock:
        if _session is None and _ended_by_exec is not None:
            ended, _ended_by_exec = _ended_by_exec, None
            warnings.warn("spprof: profiling ended at an os.exec*() call, which failed; the "
                          "profile ends there", RuntimeWarning, stacklevel=2)
            return ended
        if _session is None:
            raise RuntimeError("profiler is not running; call spprof.start() first")
        session = _session
        handler_replaced = _engine.handler_replaced()
        # The engine first, so that the rest of stop() is not in the profile.
        data = _engine.stop(_command_line(), session.interval_ms)
        try:
            names = _threads.deactivate()
        finally:
            _session = None  # (stopped, even if a Ctrl-C comes here)
    result = Profile(data, session.interval_ms, names)
    if handler_replaced:
        warnings.warn(
            "spprof: the program installed its own %s handler while profiling; "
            "sampling stopped then, and the profile ends there" % signal.Signals(handler_replaced).name,
            RuntimeWarning,
            stacklevel=2,
        )
    if session.output_path is not None:
        try:
            result.save(session.output_path)
        except OSError as exc:
            # The profile is never lost: it is returned, and can be saved
            # elsewhere.
            warnings.warn(
                "spprof: could not save the profile to %s (%s); the returned Profile "
                "can be saved elsewhere with .save()" % (session.output_path, exc),
                RuntimeWarning,
                stacklevel=2,
            )
    return result


def is_active() -> bool:
    """True while the profiler is running."""
    return _session is not None


def stats() -> Optional[ProfilerStats]:
    """Live statistics, or None when the profiler is not running."""
    session = _session
    if session is None:
        return None
    s = _engine.stats()
    weight_s = s["weight_ns"] / 1e9
    elapsed_ms = s["elapsed_ns"] / 1e6
    return ProfilerStats(
        collected_samples=s["samples"],
        dropped_samples=s["dropped"],
        duration_ms=elapsed_ms,
        overhead_estimate_pct=100.0 * s["own_ns"] / s["weight_ns"] if s["weight_ns"] else 0.0,
        effective_rate_hz=s["samples"] / weight_s if weight_s else 0.0,
        sampled_time_ms=s["weight_ns"] / 1e6,
        clock=s["mechanism"],
        threads=s["threads"],
        memory_bytes=s["memory"],
    )


def register_thread() -> bool:
    """Sample the calling thread (threads are sampled automatically; this is
    for threads not started through threading). True if the thread is
    sampled; False if the profiler is not running or has no room for it."""
    if _session is None:
        return False
    return bool(_engine.add_thread())


def unregister_thread() -> bool:
    """Stop sampling the calling thread; its samples so far are kept."""
    if _session is None:
        return False
    return bool(_engine.remove_thread())


class ThreadProfiler:
    """``with ThreadProfiler(): ...`` registers the thread for the block."""

    def __enter__(self) -> "ThreadProfiler":
        state = _engine.add_thread() if _session is not None else 0
        self.registered = bool(state)
        # Only a registration made here is undone on exit: a thread that was
        # already sampled (as every threading.Thread is) stays sampled.
        self._armed_here = state == 1
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._armed_here and _session is not None:
            unregister_thread()


def native_unwinding_available() -> bool:
    """True if C frames can be recorded (needs libunwind, loaded at run time)."""
    return bool(_engine.native_unwinding_available())


def set_native_unwinding(enabled: bool) -> None:
    """Record C frames between Python frames from the next start() on.
    Raises RuntimeError if enabling and libunwind is not available."""
    global _native
    if not isinstance(enabled, bool):
        raise TypeError("set_native_unwinding() takes True or False, not %r" % (enabled,))
    if enabled and not native_unwinding_available():
        raise RuntimeError(
            "native unwinding needs libunwind (Debian/Ubuntu: libunwind8; "
            "Fedora: libunwind), which could not be loaded"
        )
    _native = bool(enabled)


def native_unwinding_enabled() -> bool:
    return _native


class Profiler:
    """Context manager: ``with Profiler(interval_ms=5) as p: ...`` then
    ``p.profile``."""

    def __init__(
        self,
        interval_ms: float = 10,
        output_path: Optional[PathLike] = None,
        memory_limit_mb: int = 100,
        timeline: bool = False,
        nonblocking: bool = False,
    ) -> None:
        self.interval_ms = _check_interval(interval_ms)
        self.output_path = output_path
        self.memory_limit_mb = _check_memory(memory_limit_mb)
        self.timeline = timeline
        self.nonblocking = nonblocking
        self._profile: Optional[Profile] = None

    def __enter__(self) -> "Profiler":
        start(self.interval_ms, self.output_path, self.memory_limit_mb, self.timeline,
              self.nonblocking)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._profile = stop()

    @property
    def profile(self) -> Optional[Profile]:
        """The Profile, once the block has ended."""
        return self._profile


F = TypeVar("F", bound=Callable[..., Any])


def profile(
    interval_ms: float = 10,
    output_path: Optional[PathLike] = None,
    memory_limit_mb: int = 100,
    timeline: bool = False,
    nonblocking: bool = False,
) -> Callable[[F], F]:
    """Decorator: profile each call of the function, saving to output_path."""
    _check_interval(interval_ms)
    _check_memory(memory_limit_mb)

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # A recursive call, or a call while another profile runs, is part
            # of that profile: only the outermost call starts one.
            if is_active():
                return func(*args, **kwargs)
            with Profiler(interval_ms, output_path, memory_limit_mb, timeline, nonblocking):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def _stop_at_exit() -> None:
    # Sampling must end before the interpreter tears thread states down.
    _stop_before("exit")


def _stop_before_exec() -> None:
    # Called by the engine's audit hook on os.exec*: the clocks' signals
    # must not reach the new program, and the profile is saved as at exit.
    # If the exec fails, the program's stop() gets this profile.
    global _ended_by_exec
    _ended_by_exec = _stop_before("exec")


def _stop_before(event: str) -> Optional["Profile"]:
    if _session is not None:
        try:
            return stop()
        except Exception as exc:  # never turn a clean exit into a traceback
            sys.stderr.write("spprof: could not save the profile at %s: %s\n" % (event, exc))
    return None


def _forget_in_child() -> None:
    # The engine resets itself in a forked child; so does the API, so that
    # the child can start a profile of its own.
    global _session, _lock
    _session = None
    _lock = threading.Lock()
    _threads.deactivate()


_threads.install(_engine)
# start() and stop() run for a moment with sampling on, and stop() calls
# _command_line() before the engine stops: their frames are spprof's, not the
# program's (with the code nested in them: a comprehension is a code object
# of its own before 3.12).
def _hide_code(code: Any) -> None:
    _engine.hide(code)
    for const in code.co_consts:
        if isinstance(const, type(code)):
            _hide_code(const)


for _f in (start, stop, _command_line, _stop_at_exit, _stop_before_exec, _stop_before):
    _hide_code(_f.__code__)
atexit.register(_stop_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
