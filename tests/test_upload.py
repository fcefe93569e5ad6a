"""Sending profiles to a Pyroscope-compatible /ingest: `spprof record
--upload` (once, or in windows with --every) and Profile.upload(), against a
real HTTP server on 127.0.0.1 that records every request; the bodies are read
back with go tool pprof and as folded stacks."""

import http.server
import json
import math
import os
import re
import socket
import sys
import textwrap
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from conftest import pprof_raw, run_c_test
from test_cli import BUSY, run, start_target


class Ingest:
    """A Pyroscope stand-in: answers every POST with status (200 by
    default) and keeps each request's path, query, headers and body."""

    def __init__(self, status=200):
        self.status = status
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers["Content-Length"])
                body = self.rfile.read(n)
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                outer.requests.append({
                    "path": url.path,
                    "query": {k: v[0] for k, v in query.items()},
                    "repeated": [k for k, v in query.items() if len(v) > 1],
                    "headers": dict(self.headers),
                    "body": body,
                })
                answer = b"ok" if outer.status == 200 else b"ingestion failed: bad profile"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ingest():
    servers = []

    def make(status=200):
        servers.append(Ingest(status))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.fixture
def busy(tmp_path):
    path = tmp_path / "busy.py"
    path.write_text(textwrap.dedent(BUSY))
    return path


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check_query(req, name, fmt, rate, t0, t1):
    q = req["query"]
    assert req["path"] == "/ingest", req["path"]
    assert not req["repeated"], req["repeated"]
    assert q["name"] == name, q
    assert q["format"] == fmt and q["spyName"] == "spprof", q
    assert q["sampleRate"] == str(rate), q
    assert q["units"] == "samples" and q["aggregationType"] == "sum", q
    start, end = int(q["from"]), int(q["until"])
    # Unix seconds, within the run's wall time.
    assert math.floor(t0) <= start <= end <= math.ceil(t1), (t0, start, end, t1)
    assert int(req["headers"]["Content-Length"]) == len(req["body"]) > 0
    return start, end


def reported_samples(stderr):
    return int(re.search(r"(\d+) samples", stderr).group(1))


def hot_samples(raw, busy):
    return sum(s["values"][0] for s in raw["samples"]
               if s["stack"] and s["stack"][-1]["where"] == "hot_leaf %s" % busy)


def parse_folded(text):
    """{stack: count} of folded stacks ("a;b;c N" lines); each line must parse."""
    stacks = {}
    for line in text.splitlines():
        m = re.match(r"^(.+) (\d+)$", line)
        assert m, "not a folded line: %r" % line
        stacks[m.group(1)] = stacks.get(m.group(1), 0) + int(m.group(2))
    return stacks


def test_record_upload_pprof_windows(busy, tmp_path, ingest):
    """--every 1 on a 3.5 s run: at least three windows, contiguous and not
    overlapping, each a pprof go tool pprof opens with the hot function; the
    windows add up to the recording, which -o still gets whole."""
    srv = ingest()
    out = tmp_path / "whole.pb.gz"
    t0 = time.time()
    r = run(["record", "-r", "100", "-f", "pprof", "-o", out, "--upload", srv.url, "--every", "1",
             "--app-name", "busy-app.v2", "--tag", "env=prod", "--tag", "host=web-1",
             "--", sys.executable, busy, "3.5"])
    t1 = time.time()
    assert r.returncode == 0, r.stderr
    reqs = srv.requests
    assert len(reqs) >= 3, (len(reqs), r.stderr)
    assert "uploaded %d profiles to %s" % (len(reqs), srv.url) in r.stderr, r.stderr
    windows = [check_query(q, "busy-app.v2{env=prod,host=web-1}", "pprof", 100, t0, t1)
               for q in reqs]
    for (_, until), (start, _) in zip(windows, windows[1:]):
        assert until == start, windows  # each window begins where the last ended
    total = 0
    for i, req in enumerate(reqs):
        assert req["headers"]["Content-Type"] == "application/octet-stream"
        assert req["body"][:2] == b"\x1f\x8b"  # the gzipped profile itself, not a form
        path = tmp_path / ("window%d.pb.gz" % i)
        path.write_bytes(req["body"])
        raw = pprof_raw(path)
        assert raw["sample_types"] == [("samples", "count"), ("wall", "nanoseconds")]
        n = sum(s["values"][0] for s in raw["samples"])
        assert n > 0
        if i < len(reqs) - 1:  # the last window may be a sliver
            assert hot_samples(raw, busy) > 0.3 * n, (i, n)
        total += n
    whole = pprof_raw(out)
    assert total == sum(s["values"][0] for s in whole["samples"]) == reported_samples(r.stderr)


def test_record_upload_folded_once(busy, tmp_path, ingest):
    """Without --every: one upload of the whole recording at the end, named
    after the script, as folded stacks whose counts are the samples; no
    local file without -o."""
    srv = ingest()
    t0 = time.time()
    r = run(["record", "-r", "100", "--upload", srv.url + "/", "--upload-format", "folded",
             "--", sys.executable, busy, "1"], cwd=str(tmp_path))
    t1 = time.time()
    assert r.returncode == 0, r.stderr
    assert len(srv.requests) == 1, srv.requests
    req = srv.requests[0]
    check_query(req, "busy.wall{}", "folded", 100, t0, t1)
    assert req["headers"]["Content-Type"].startswith("text/plain")
    stacks = parse_folded(req["body"].decode("utf-8"))
    assert sum(stacks.values()) == reported_samples(r.stderr)
    hot = sum(n for s, n in stacks.items() if s.split(";")[-1].startswith("hot_leaf (busy.py:"))
    assert hot > 0.3 * sum(stacks.values()), stacks
    assert not list(tmp_path.glob("spprof-*")), os.listdir(tmp_path)


def test_record_upload_attached_names_the_script(busy, tmp_path, ingest):
    """With --pid the default application name comes from the process's
    command line too."""
    srv = ingest()
    proc = start_target(busy, 30)
    try:
        t0 = time.time()
        r = run(["record", "--pid", proc.pid, "-d", "0.7", "--upload", srv.url, "--tag",
                 "pid=%d" % proc.pid], cwd=str(tmp_path))
        t1 = time.time()
    finally:
        proc.kill()
        proc.wait()
    assert r.returncode == 0, r.stderr
    assert len(srv.requests) == 1, srv.requests
    check_query(srv.requests[0], "busy{pid=%d}" % proc.pid, "pprof", 100, t0, t1)
    path = tmp_path / "attached.pb.gz"
    path.write_bytes(srv.requests[0]["body"])
    raw = pprof_raw(path)
    assert sum(s["values"][0] for s in raw["samples"]) == reported_samples(r.stderr)
    assert hot_samples(raw, busy) > 0


def test_record_upload_server_error_keeps_file(busy, tmp_path, ingest):
    """A server answering 500: one message with the status and the URL,
    however many windows fail, a non-zero exit, and -o written whole."""
    srv = ingest(500)
    out = tmp_path / "p.svg"
    r = run(["record", "-r", "100", "-o", out, "--upload", srv.url, "--every", "0.5",
             "--", sys.executable, busy, "1.6"])
    assert r.returncode == 1, r.stderr
    n = len(srv.requests)
    assert n >= 3, r.stderr
    assert r.stderr.count("HTTP 500") == 1, r.stderr
    assert "upload to %s failed: HTTP 500 Internal Server Error: ingestion failed" % srv.url in r.stderr
    assert "%d of %d profile uploads to %s failed" % (n, n, srv.url) in r.stderr, r.stderr
    root = ET.parse(str(out)).getroot()
    assert root.tag.endswith("svg") and "hot_leaf" in out.read_text()


def test_record_upload_closed_port(busy, tmp_path):
    port = closed_port()
    out = tmp_path / "p.collapsed"
    r = run(["record", "-r", "100", "-f", "collapsed", "-o", out, "--upload",
             "http://127.0.0.1:%d" % port, "--", sys.executable, busy, "0.5"])
    assert r.returncode == 1, r.stderr
    assert re.search(r"upload to http://127\.0\.0\.1:%d failed: cannot connect: Connection refused"
                     % port, r.stderr), r.stderr
    assert sum(parse_folded(out.read_text()).values()) == reported_samples(r.stderr.split("wrote")[1])


class RawServer:
    """A server on 127.0.0.1 that reads each request whole, then answers
    with answer(conn): for servers that misbehave."""

    def __init__(self, answer):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.answer = answer
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        data = b""
        with conn:
            conn.settimeout(30)
            try:
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                while len(body) < length:
                    body += conn.recv(65536)
                self.answer(conn, self.stop)
            except OSError:
                pass


def test_record_upload_server_answering_a_byte_at_a_time(busy, tmp_path):
    """A server that answers one byte a second must not hold the recording
    (each byte comes well within one wait): a request gets two waits (10 s)
    in all, then fails on what it has."""
    def trickle(conn, stop):
        for c in b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000:
            if stop.is_set():
                return
            conn.sendall(bytes([c]))
            time.sleep(1)

    srv = RawServer(trickle)
    try:
        out = tmp_path / "p.collapsed"
        t0 = time.monotonic()
        r = run(["record", "-r", "100", "-f", "collapsed", "-o", out, "--upload", srv.url,
                 "--", sys.executable, busy, "0.5"], timeout=120)
        took = time.monotonic() - t0
    finally:
        srv.stop.set()
    assert r.returncode == 1, r.stderr
    assert "failed: the answer is not HTTP" in r.stderr, r.stderr
    assert took < 30, took
    assert out.exists()


def test_record_upload_status_text_reaches_the_terminal_clean(busy, tmp_path):
    """The reason phrase is the server's: control bytes in it (a terminal
    escape) are shown as '?', never written to the terminal."""
    def escape(conn, stop):
        conn.sendall(b"HTTP/1.1 500 \x1b]0;pwned\x07\x1b[2JRED\r\nContent-Length: 0\r\n\r\n")

    srv = RawServer(escape)
    try:
        r = run(["record", "-r", "100", "-f", "collapsed", "-o", tmp_path / "p.collapsed", "--upload",
                 srv.url, "--", sys.executable, busy, "0.5"])
    finally:
        srv.stop.set()
    assert r.returncode == 1, r.stderr
    assert "HTTP 500 ?]0;pwned??[2JRED" in r.stderr, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr


@pytest.mark.parametrize("args,message", [
    (["--upload", "https://pyroscope.example.com"], "plain http:// only"),
    (["--upload", "ftp://x"], "must start with http://"),
    (["--upload", "http://127.0.0.1:99999"], "port must be a number"),
    (["--upload", "http://127.0.0.1:4040", "--tag", "env"], "expected KEY=VALUE"),
    (["--upload", "http://127.0.0.1:4040", "--tag", "1env=x"], "a key is letters"),
    (["--upload", "http://127.0.0.1:4040", "--tag", "__name__=x"], "reserved"),
    (["--upload", "http://127.0.0.1:4040", "--tag", "env=a,b"], "no spaces, commas"),
    (["--upload", "http://127.0.0.1:4040", "--app-name", "my app"], "--app-name 'my app'"),
    (["--upload", "http://127.0.0.1:4040", "--upload-format", "json"], "pprof or folded"),
    (["--upload", "http://127.0.0.1:4040", "--every", "0"], "--every must be a number"),
    (["--every", "1"], "--every is for uploads"),
    (["--tag", "a=b"], "--tag is for uploads"),
])
def test_record_upload_bad_arguments(args, message):
    r = run(["record", *args, "--", sys.executable, "-c", "pass"])
    assert r.returncode == 2, r.stderr
    assert message in r.stderr, r.stderr
    if "https" in args[1]:
        assert "local agent or proxy" in r.stderr and "Profile.upload()" in r.stderr


API_TARGET = """
import json, sys, time
import spprof

def hot():
    x = 0
    for i in range(20000):
        x += i * i
    return x

url, dead = sys.argv[1], sys.argv[2]
spprof.start(interval_ms=5)
end = time.time() + 0.8
while time.time() < end:
    hot()
p = spprof.stop()
p.upload(url, app_name="api-test", tags={"env": "ci", "zone": "eu-1"})
p.upload(url + "/ingest", format="folded")
errors = {}
for name, call in [
    ("dead", lambda: p.upload(dead)),
    ("tag", lambda: p.upload(url, tags={"env": "a b"})),
    ("app", lambda: p.upload(url, app_name="a{b}")),
    ("format", lambda: p.upload(url, format="json")),
    ("scheme", lambda: p.upload("ftp://x")),
]:
    try:
        call()
        errors[name] = None
    except Exception as exc:
        errors[name] = [type(exc).__name__, isinstance(exc, spprof.UploadError), str(exc)]
print(json.dumps({"samples": p.sample_count, "clock": p.clock, "errors": errors}))
"""


def test_api_upload(tmp_path, script, ingest):
    srv, failing = ingest(), ingest(500)
    t0 = time.time()
    res = script(API_TARGET, srv.url, "http://127.0.0.1:%d" % closed_port())
    t1 = time.time()
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(srv.requests) == 2, srv.requests
    pp, folded = srv.requests
    check_query(pp, "api-test{env=ci,zone=eu-1}", "pprof", 200, t0, t1)
    path = tmp_path / "api.pb.gz"
    path.write_bytes(pp["body"])
    raw = pprof_raw(path)
    assert raw["sample_types"][0] == ("samples", "count")
    n = sum(s["values"][0] for s in raw["samples"])
    assert n == info["samples"] > 0
    hot = sum(s["values"][0] for s in raw["samples"] if s["stack"][-1]["where"].startswith("hot "))
    assert hot > 0.5 * n, (hot, n)
    suffix = "wall" if info["clock"] == "wall" else "cpu"
    check_query(folded, "target.%s{}" % suffix, "folded", 200, t0, t1)
    assert sum(parse_folded(folded["body"].decode("utf-8")).values()) == info["samples"]

    errors = info["errors"]
    kind, is_upload, msg = errors["dead"]
    assert kind == "UploadError" and is_upload and "http://127.0.0.1:" in msg, errors
    assert "refused" in msg.lower(), msg
    for name in ("tag", "app", "format", "scheme"):
        assert errors[name][0] == "ValueError", errors

    # A server that answers 500: the status and its answer in the message.
    res = script(textwrap.dedent("""
        import sys, spprof
        spprof.start()
        sum(i * i for i in range(200000))
        p = spprof.stop()
        try:
            p.upload(sys.argv[1])
        except spprof.UploadError as exc:
            print(exc)
    """), failing.url)
    assert res.stdout.strip() == (
        "upload to %s failed: HTTP 500 Internal Server Error: ingestion failed: bad profile"
        % failing.url), res.stdout
    assert len(failing.requests) == 1


def test_windows_in_c(tmp_path):
    """The C unit test of the profile's windows (what --every sends), under
    ASan/UBSan."""
    run_c_test(tmp_path, "test_window")
