"""The Profile returned by spprof.stop(): a thin view of the profile model
held in C, with the seed API's names."""

from __future__ import annotations

import json
import os
import platform as _platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("speedscope", "collapsed", "flamegraph", "chrometrace", "pprof")
_ALIASES = {
    "json": "speedscope",
    "svg": "flamegraph",
    "raw": "collapsed",
    "folded": "collapsed",
    "chrome": "chrometrace",
    "trace": "chrometrace",
}
_SUFFIXES = {
    ".svg": "flamegraph",
    ".collapsed": "collapsed",
    ".folded": "collapsed",
    ".txt": "collapsed",
    ".trace": "chrometrace",
    ".trace.json": "chrometrace",
    ".pprof": "pprof",
    ".pb.gz": "pprof",
}


def _format_for(path: PathLike, format: Optional[str]) -> str:
    if format is None:
        name = os.path.basename(os.fspath(path)).lower()
        for suffix in sorted(_SUFFIXES, key=len, reverse=True):
            if name.endswith(suffix) and name != suffix:
                return _SUFFIXES[suffix]
        return "speedscope"
    if not isinstance(format, str):
        raise TypeError("format must be a string, not %s" % type(format).__name__)
    name = _ALIASES.get(format.lower(), format.lower())
    if name not in FORMATS:
        raise ValueError(
            "unknown format %r; choose one of: %s" % (format, ", ".join(FORMATS + tuple(_ALIASES)))
        )
    return name


@dataclass(frozen=True)
class Frame:
    """One frame of a stack."""

    function_name: str
    filename: str
    lineno: int
    is_native: bool = False
    first_lineno: int = 0


@dataclass(frozen=True)
class Sample:
    """A distinct stack of one thread and how often it was sampled.

    spprof aggregates while it profiles (memory grows with distinct stacks,
    not with duration), so each Sample stands for ``count`` samples that
    together represent ``weight_ns`` nanoseconds of CPU (or wall) time.
    ``frames`` run from the outermost call to the innermost.
    """

    timestamp_ns: int
    thread_id: int
    thread_name: Optional[str]
    frames: Sequence[Frame]
    count: int = 1
    weight_ns: int = 0


@dataclass
class ProfilerStats:
    """Live statistics of a running profiler (see spprof.stats()).

    overhead_estimate_pct is spprof's own measured time (its signal handler
    and its drain thread) as a share of the CPU time sampled; the kernel's
    cost of delivering the signals is not included (bench/overhead.py
    measures everything).
    """

    collected_samples: int
    dropped_samples: int
    duration_ms: float
    overhead_estimate_pct: float
    effective_rate_hz: float = 0.0
    sampled_time_ms: float = 0.0
    clock: str = "none"
    threads: int = 0
    memory_bytes: int = 0


@dataclass
class AggregatedStack:
    frames: Sequence[Frame]
    thread_id: int
    thread_name: Optional[str]
    count: int
    weight_ns: int = 0


def _frame(t: Tuple[str, str, int, int, str]) -> Frame:
    name, filename, line, first, kind = t
    return Frame(name, filename, line, kind == "native", first)


class _View:
    """What Profile and AggregatedProfile share: the C data and writers."""

    _data: Any

    def to_speedscope(self) -> Dict[str, Any]:
        """The profile as a speedscope JSON document (a dict)."""
        return json.loads(self._data.render("speedscope"))

    def to_collapsed(self) -> str:
        """The profile as FlameGraph folded stacks ("a;b;c N" lines)."""
        return self._data.render("collapsed").decode("utf-8")

    def to_flamegraph(self) -> str:
        """The profile as a self-contained interactive SVG flame graph."""
        return self._data.render("flamegraph").decode("utf-8")

    def to_chrometrace(self) -> Dict[str, Any]:
        """The profile as a Trace Event Format document (a dict): per-thread
        timelines of the sampled stacks, for chrome://tracing and Perfetto.
        Needs a profile started with timeline=True (else ValueError)."""
        self._need_timeline()
        return json.loads(self._data.render("chrometrace"))

    def _need_timeline(self) -> None:
        if not self._data.info()["timeline"]:
            raise ValueError(
                "this profile has no timeline for the chrometrace format: start the profiler "
                "with timeline=True (or an output_path ending in .trace.json)"
            )
    def to_pprof(self) -> bytes:
        """The profile as gzip-compressed pprof profile.proto bytes."""
        return self._data.render("pprof")

    def save(self, path: PathLike, format: Optional[str] = None) -> None:
        """Write the profile to path, replacing it only once complete.

        format is "speedscope" (JSON), "collapsed" (folded stacks),
        "flamegraph" (SVG), "pprof" (gzipped profile.proto) or "chrometrace"
        (Trace Event Format JSON: the samples in time order, per thread; the
        profiler must have been started with timeline=True, else ValueError);
        by default it follows the file's suffix (.svg, .collapsed/.folded/.txt,
        .pb.gz/.pprof, .trace/.trace.json) and is speedscope otherwise. Raises
        OSError naming the path when it cannot be written; the profile is
        kept and can be saved elsewhere.
        """
        fmt = _format_for(path, format)
        if fmt == "chrometrace":
            self._need_timeline()
        self._data.write(os.fspath(path), fmt)


class AggregatedProfile(_View):
    """Unique stacks with their counts (Profile.aggregate())."""

    def __init__(self, profile: "Profile") -> None:
        self._data = profile._data
        self.start_time = profile.start_time
        self.end_time = profile.end_time
        self.interval_ms = profile.interval_ms
        self.dropped_count = profile.dropped_count
        self.python_version = profile.python_version
        self.platform = profile.platform
        self.stacks: List[AggregatedStack] = [
            AggregatedStack(s.frames, s.thread_id, s.thread_name, s.count, s.weight_ns)
            for s in profile.samples
        ]
        self.total_samples: int = profile.sample_count

    @property
    def unique_stack_count(self) -> int:
        return len(self.stacks)

    @property
    def compression_ratio(self) -> float:
        """Samples per distinct stack: how much aggregation saved."""
        return self.total_samples / self.unique_stack_count if self.stacks else 1.0

    @property
    def memory_reduction_pct(self) -> float:
        if not self.total_samples:
            return 0.0
        return 100.0 * (1.0 - self.unique_stack_count / self.total_samples)


class Profile(_View):
    """A finished profile (returned by spprof.stop())."""

    def __init__(self, data: Any, interval_ms: float, thread_names: Dict[int, str]) -> None:
        self._data = data
        for tid, name in thread_names.items():
            data.set_thread_name(tid, name)
        info = data.info()
        self._info = info
        self.interval_ms = interval_ms
        self.start_time = datetime.fromtimestamp(info["start_ns"] / 1e9, tz=timezone.utc)
        self.end_time = datetime.fromtimestamp(info["end_ns"] / 1e9, tz=timezone.utc)
        self.dropped_count: int = info["dropped"]
        self.clock: str = info["mechanism"]
        self.python_version = _platform.python_version()
        self.platform = sys.platform
        self._samples: Optional[List[Sample]] = None

    @property
    def samples(self) -> List[Sample]:
        """Distinct stacks with their counts and weights (see Sample)."""
        if self._samples is None:
            start = self._info["start_ns"]
            self._samples = [
                Sample(start, tid, name, tuple(_frame(f) for f in frames), count, weight)
                for tid, name, frames, count, weight in self._data.stacks()
            ]
        return self._samples

    @property
    def sample_count(self) -> int:
        return int(self._info["samples"])

    @property
    def total_duration_ms(self) -> float:
        return (self._info["end_ns"] - self._info["start_ns"]) / 1e6

    @property
    def sampled_time_ms(self) -> float:
        """CPU (or wall) time the samples stand for, summed over threads."""
        return self._info["weight_ns"] / 1e6

    @property
    def effective_rate_hz(self) -> float:
        """Samples per second of sampled time: the rate really obtained."""
        w = self._info["weight_ns"]
        return self.sample_count / (w / 1e9) if w else 0.0

    def aggregate(self) -> AggregatedProfile:
        return AggregatedProfile(self)

    def upload(
        self,
        url: str,
        app_name: Optional[str] = None,
        tags: Optional[Dict[str, str]] = None,
        format: str = "pprof",
        timeout: float = 10.0,
    ) -> None:
        """Send the profile to a Pyroscope-compatible server: POST url's
        /ingest (appended unless url ends with it; http:// or https://).

        app_name defaults to the script's name; tags ({"env": "prod"}) become
        Pyroscope labels. format is "pprof" (the gzipped profile.proto) or
        "folded" (folded stacks, sent as APP.cpu, or APP.wall for a wall-clock
        profile). from/until are the profile's start and end, sampleRate the
        samples per second asked for. Raises ValueError for a bad argument and
        spprof.UploadError (an OSError) naming the URL and the cause when the
        server cannot be reached, times out (timeout seconds) or answers with
        a status other than 2xx."""
        from . import _upload

        app, items, fmt = _upload.check(app_name, tags, format)
        _upload.ingest_url(url)
        body = self.to_pprof() if fmt == "pprof" else self.to_collapsed().encode("utf-8")
        suffix = "wall" if self._info["mechanism"] == "wall" else "cpu"
        _upload.send(url, body, app, items, fmt, suffix, self._info["start_ns"] // 10**9,
                     self._info["end_ns"] // 10**9, int(round(1000.0 / self.interval_ms)), timeout)

    def __repr__(self) -> str:
        return "<spprof.Profile samples=%d dropped=%d clock=%s duration=%.0fms>" % (
            self.sample_count,
            self.dropped_count,
            self.clock,
            self.total_duration_ms,
        )
