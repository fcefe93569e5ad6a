"""Profile.upload(): sending a profile to a Pyroscope-compatible server's
POST /ingest, with the standard library's urllib (so https:// works too).

The request is the one the spprof command sends (src/cli/upload.c): query
parameters name=APP{k=v,...} (APP.cpu or APP.wall for folded stacks, whose
profile type the name carries), from and until in Unix seconds, format,
sampleRate, spyName=spprof, units=samples, aggregationType=sum; the body is
the gzipped pprof itself, or the folded stacks as text."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Mapping, Optional

# urllib is imported by the functions that use it, on the first upload:
# urllib.request brings http.client, email, ssl and libcrypto with it, which
# took `import spprof` from 30 ms and 4.0 MB to 48 ms and 12.6 MB (-X
# importtime, /proc/self/smaps) in programs that never upload.
if TYPE_CHECKING:
    import urllib.parse

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_VALUE = re.compile(r"[A-Za-z0-9_.\-/:]{1,128}\Z")
_APP = re.compile(r"[A-Za-z0-9_.\-]{1,128}\Z")
_FORMATS = {"pprof": "pprof", "folded": "folded", "collapsed": "folded"}


class UploadError(OSError):
    """An upload failed: the message names the URL and the cause (the
    HTTP status and the start of the server's answer, or the network
    error)."""


def default_app_name() -> str:
    """The running script's name (app.py -> "app"), or "python"."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-") else "python"
    name = os.path.basename(argv0)
    if name == "__main__.py":
        name = os.path.basename(os.path.dirname(os.path.abspath(argv0))) or "python"
    if name.endswith(".py"):
        name = name[:-3]
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:128]
    return name or "python"


def check(app_name: Optional[str], tags: Optional[Mapping[str, str]], format: str) -> tuple:
    """Validates the arguments as Pyroscope's names allow them; returns
    (app_name, the tags as (key, value) pairs in order, format)."""
    if app_name is None:
        app_name = default_app_name()
    if not isinstance(app_name, str) or not _APP.match(app_name):
        raise ValueError(
            "app_name must be 1 to 128 letters, digits and _ . - (Pyroscope's application "
            "names), got %r" % (app_name,)
        )
    items = []
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not _KEY.match(key) or key.startswith("__"):
            raise ValueError(
                "tag key %r: letters, digits and _, not starting with a digit or __" % (key,)
            )
        if not isinstance(value, str) or not _VALUE.match(value):
            raise ValueError(
                "tag %s=%r: a value is 1 to 128 letters, digits and _ . - / : (no spaces, "
                "commas, braces or =)" % (key, value)
            )
        items.append((key, value))
    if not isinstance(format, str) or format.lower() not in _FORMATS:
        raise ValueError("format must be 'pprof' or 'folded', got %r" % (format,))
    return app_name, items, _FORMATS[format.lower()]


def ingest_url(url: str) -> urllib.parse.SplitResult:
    import urllib.parse

    if not isinstance(url, str):
        raise TypeError("url must be a string, not %s" % type(url).__name__)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be http://HOST[:PORT][/PATH] or https://..., got %r" % (url,))
    path = parts.path.rstrip("/")
    if not path.endswith("/ingest"):
        path += "/ingest"
    return parts._replace(path=path)


def send(
    url: str,
    body: bytes,
    app_name: str,
    tags: list,
    format: str,
    suffix: str,
    from_s: int,
    until_s: int,
    rate: int,
    timeout: float,
) -> None:
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = ingest_url(url)
    labels = ",".join("%s=%s" % kv for kv in tags)
    name = "%s%s{%s}" % (app_name, "" if format == "pprof" else "." + suffix, labels)
    query = urllib.parse.urlencode(
        [
            ("name", name),
            ("from", str(from_s)),
            ("until", str(max(from_s, until_s))),
            ("format", format),
            ("sampleRate", str(max(1, rate))),
            ("spyName", "spprof"),
            ("units", "samples"),
            ("aggregationType", "sum"),
        ]
    )
    target = parts._replace(query=(parts.query + "&" if parts.query else "") + query).geturl()
    ctype = "application/octet-stream" if format == "pprof" else "text/plain; charset=utf-8"
    request = urllib.request.Request(
        target, data=body, method="POST", headers={"Content-Type": ctype, "User-Agent": "spprof"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(4096)
    except urllib.error.HTTPError as exc:
        hint = " ".join(exc.read(4096).decode("utf-8", "replace").split())[:160]
        raise UploadError(
            "upload to %s failed: HTTP %d %s%s" % (url, exc.code, exc.reason, ": " + hint if hint else "")
        ) from exc
    except urllib.error.URLError as exc:
        raise UploadError("upload to %s failed: %s" % (url, exc.reason)) from exc
    except OSError as exc:  # timeouts and resets while reading
        raise UploadError("upload to %s failed: %s" % (url, exc)) from exc
