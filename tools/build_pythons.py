#!/usr/bin/env python3
"""Builds the CPython interpreters this machine lacks, from source, into a cache.

    python3 tools/build_pythons.py                 # 3.13t 3.14 3.14t 3.15
    python3 tools/build_pythons.py 3.14t 3.15      # only these
    python3 tools/build_pythons.py --force 3.14    # rebuild even if cached

Names: 3.13, 3.13t, 3.14, 3.14t, 3.15, 3.15t ("t" = free-threaded,
--disable-gil). Each is installed to

    ${SPPROF_PYTHONS:-$HOME/.cache/spprof/pythons}/<name>/bin/python3

a directory that outlives the work tree, so later sessions and CI runs on the
same machine find it built. A name is skipped ("cached") when its interpreter
has a build stamp, runs, imports ctypes, sqlite3 and zlib, and has the right
Py_GIL_DISABLED setting.

Sources are CPython's upstream release tarballs, as Debian's package archive
serves them (the .orig.tar.xz of the source packages python3.13, python3.14,
python3.15), from the mirror configured for apt on this machine
(/etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; SPPROF_DEBIAN_MIRROR
overrides). The newest versions the archive's index lists are often not served
any more, so candidate versions are tried newest first and the first that
downloads is used. Tarballs are kept in <cache>/src/.

Integrity: the tarball's SHA256 is checked against every published checksum
for it that can be found:
  * the SHA256 pinned below (PINNED_SHA256) for versions known to be served,
    which is the CPython release tarball's published checksum;
  * the source package's .dsc in the same pool directory (its OpenPGP
    signature is checked with gpgv against the debian-keyring package's keys);
  * the Sources index of a suite that still lists it (sid, experimental,
    forky, trixie), authenticated through that suite's InRelease, which gpgv
    checks against debian-archive-keyring.
A mismatch is a failure. If none exists for the version used, the SHA256
is recorded (trust on first use) in <cache>/src/<tarball>.sha256 and in
<cache>/<name>/.source-sha256, later runs compare against it, and the summary
says the source was NOT verified against a published checksum.

Build: configure with --prefix=<cache>/<name>, CFLAGS="-O2 -fno-omit-frame-pointer",
--disable-gil for "t" names and --with-system-libmpdec=no for 3.15+, then make
and make install (into a staging DESTDIR, moved into place when complete), all
under `nice -n 19`. Missing Debian build dependencies are installed with
apt-get when running as root. Builds of different runs are serialised by a lock
file in the cache. One summary line per name; exits 1 if any build failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import glob
import hashlib
import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

DEFAULT_NAMES = ["3.13t", "3.14", "3.14t", "3.15"]
SUPPORTED_SERIES = ["3.13", "3.14", "3.15"]

# Upstream versions known to be served from the pool (Debian spelling: "~rc2").
# Versions listed by the archive's signed Sources indices are added at run time.
KNOWN_VERSIONS = {
    "3.13": ["3.13.15", "3.13.5"],
    "3.14": ["3.14.7", "3.14.6", "3.14.5", "3.14.4"],
    "3.15": ["3.15.0~rc2", "3.15.0~rc1"],
}
# SHA256 of tarballs known to be good: each equals the checksum CPython publishes
# for its release tarball (Debian's .orig.tar.xz is the same file), and, where
# the pool still has a .dsc, the one in Debian's signed .dsc. This lets a
# version be verified when the archive no longer serves its .dsc (3.15.0~rc2).
PINNED_SHA256 = {
    "python3.13_3.13.15.orig.tar.xz": "1e66a7945a48390ee4c2a4268a0e4185884059a13c4aab6d148aa208deea4a76",
    "python3.13_3.13.5.orig.tar.xz": "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640",
    "python3.14_3.14.7.orig.tar.xz": "3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81",
    "python3.14_3.14.6.orig.tar.xz": "143b1dddefaec3bd2e21e3b839b34a2b7fb9842272883c576420d605e9f30c63",
    "python3.15_3.15.0~rc2.orig.tar.xz": "8d93af5eaaaea5adfd41bd786a7ba3f03f2ad1ab57c6a65e0b963deab91d5ad7",
    "python3.15_3.15.0~rc1.orig.tar.xz": "f84dad680ab2147417d2739355c2678f0f9acffe4ae8ef77895de1454b384b07",
}
INDEX_SUITES = ["sid", "experimental", "forky", "trixie"]
DSC_REVISIONS = 4  # also try <version>-1 .. -4 for the .dsc name

CFLAGS = "-O2 -fno-omit-frame-pointer"

# Debian packages needed to build an interpreter whose ssl, hashlib, ctypes,
# sqlite3, zlib, bz2, lzma, readline, curses, dbm, uuid (and 3.14's zstd) work,
# plus what checking the sources' signatures needs.
BUILD_DEPS = [
    "build-essential", "pkg-config", "make", "xz-utils", "tar",
    "libssl-dev", "zlib1g-dev", "libffi-dev", "libsqlite3-dev", "libbz2-dev",
    "liblzma-dev", "libreadline-dev", "libncurses-dev", "uuid-dev",
    "libgdbm-dev", "libzstd-dev",
]
VERIFY_DEPS = ["gpgv", "debian-archive-keyring", "debian-keyring"]

ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEVELOPER_KEYRINGS = [
    "/usr/share/keyrings/debian-keyring.gpg",
    "/usr/share/keyrings/debian-maintainers.gpg",
]

STAMP = ".spprof-build.json"
SOURCE_SHA = ".source-sha256"

# Modules every built interpreter must have; the cached check uses the first four.
CACHED_CHECK_MODULES = ["sys", "ctypes", "sqlite3", "zlib"]
BUILT_CHECK_MODULES = ["ctypes", "sqlite3", "zlib", "hashlib", "ssl", "bz2",
                       "lzma", "readline", "venv", "ensurepip"]

USER_AGENT = "spprof-build-pythons/1 (urllib)"


def log(msg=""):
    print(msg, flush=True)


def fmt_secs(s):
    s = int(round(s))
    return "%dm%02ds" % (s // 60, s % 60)


# ---------------------------------------------------------------- names


class Spec:
    def __init__(self, name):
        m = re.fullmatch(r"(3\.\d+)(t?)", name)
        if not m or m.group(1) not in SUPPORTED_SERIES:
            raise ValueError("unsupported name %r (supported: %s, each optionally with 't')"
                             % (name, ", ".join(SUPPORTED_SERIES)))
        self.name = name
        self.series = m.group(1)
        self.free_threaded = bool(m.group(2))
        self.package = "python" + self.series  # Debian source package

    def configure_args(self, prefix):
        args = ["--prefix=" + prefix]
        if self.free_threaded:
            args.append("--disable-gil")
        if version_key(self.series + ".0") >= version_key("3.15.0"):
            args.append("--with-system-libmpdec=no")
        args.append("CFLAGS=" + CFLAGS)
        return args


def version_key(v):
    """Orders Debian-spelt upstream versions: 3.15.0~rc1 < 3.15.0~rc2 < 3.15.0."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:~?(a|b|rc)(\d+))?", v)
    if not m:
        return (-1,)
    stage = {"a": 0, "b": 1, "rc": 2, None: 3}[m.group(4)]
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), stage, int(m.group(5) or 0))


def python_version_of(upstream):
    """Debian's 3.15.0~rc2 is CPython's 3.15.0rc2."""
    return upstream.replace("~", "")


# ---------------------------------------------------------------- network


class NotFound(OSError):
    pass


def debian_mirror():
    """The archive URI apt uses here (not the security one)."""
    env = os.environ.get("SPPROF_DEBIAN_MIRROR")
    if env:
        return env.rstrip("/")
    found = []
    files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
    files.sort(key=lambda p: os.path.basename(p) != "debian.sources")
    for path in files:
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        for para in re.split(r"\n\s*\n", text):
            fields = parse_deb822(para)
            if "deb" not in fields.get("types", "").split() and \
                    "deb-src" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            suites = fields.get("suites", "").split()
            if any(s.endswith("-security") or s.endswith("/updates") for s in suites):
                continue
            found += [u for u in fields.get("uris", "").split()
                      if u.startswith(("http://", "https://"))]
    try:
        for line in open("/etc/apt/sources.list", encoding="utf-8", errors="replace"):
            line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] in ("deb", "deb-src") and \
                    line[1].startswith(("http://", "https://")) and \
                    not line[2].endswith("-security"):
                found.append(line[1])
    except OSError:
        pass
    if not found:
        raise RuntimeError("no Debian mirror URI found in /etc/apt/sources.list.d/*.sources "
                           "or /etc/apt/sources.list (set SPPROF_DEBIAN_MIRROR)")
    return found[0].rstrip("/")


def parse_deb822(para):
    """Fields of one deb822 paragraph, lower-cased names; continuation lines kept."""
    fields, key = {}, None
    for line in para.splitlines():
        if not line or line.startswith("#"):
            continue
        if line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, val = line.split(":", 1)
            key = key.strip().lower()
            fields[key] = val.strip()
    return fields


def http_get(url, dest=None, timeout=60, tries=3):
    """Bytes of url (or writes it to dest). Raises NotFound on 404/410."""
    last = None
    for attempt in range(tries):
        if attempt:
            time.sleep(3 * attempt)
        try:
            req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if dest is None:
                    return resp.read()
                expected = resp.headers.get("Content-Length")
                part = dest + ".part"
                got = 0
                with open(part, "wb") as f:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        f.write(chunk)
                        got += len(chunk)
                if expected is not None and int(expected) != got:
                    raise OSError("short read: %d of %s bytes" % (got, expected))
                os.replace(part, dest)
                return None
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                raise NotFound(url) from None
            last = e
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
            last = e
        if dest is not None:
            with contextlib.suppress(OSError):
                os.unlink(dest + ".part")
    raise OSError("download failed after %d tries: %s: %s" % (tries, url, last))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- signatures


def gpgv(data, keyrings):
    """Checks an inline-signed document. Returns (status, signer, signed_text):
    status is 'good', 'bad', 'nokey' or 'unavailable'."""
    keyrings = [k for k in keyrings if os.path.exists(k)]
    if not keyrings or not shutil.which("gpgv"):
        return "unavailable", None, None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in")
        out = os.path.join(tmp, "out")
        with open(src, "wb") as f:
            f.write(data)
        cmd = ["gpgv"]
        for k in keyrings:
            cmd += ["--keyring", k]
        cmd += ["--output", out, src]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        err = proc.stderr
        if proc.returncode == 0 and os.path.exists(out):
            m = re.search(r'Good signature from "([^"]*)"', err)
            with open(out, "rb") as f:
                return "good", (m.group(1) if m else "?"), f.read().decode("utf-8", "replace")
        if "BAD signature" in err:
            return "bad", None, None
        if "No public key" in err:
            return "nokey", None, None
        return "bad", None, None


def checksums_sha256(text):
    """{filename: sha256} from the Checksums-Sha256 field of a .dsc or Sources paragraph."""
    out = {}
    m = re.search(r"^Checksums-Sha256:[^\n]*\n((?:[ \t][^\n]*\n?)+)", text, re.M)
    if m:
        for line in m.group(1).splitlines():
            parts = line.split()
            if len(parts) == 3 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                out[parts[2]] = parts[0]
    return out


# ---------------------------------------------------------------- archive index


class Index:
    """Entries of python3.1x source packages from the signed Sources indices."""

    def __init__(self, mirror, cache_src):
        self.mirror = mirror
        self.dir = os.path.join(cache_src, "index")
        self.entries = {}  # package -> [dict(version, suite, directory, sha256={file: sha})]
        self.notes = []
        self.loaded = False

    def load(self, packages):
        if self.loaded:
            return
        self.loaded = True
        if not shutil.which("gpgv") or not os.path.exists(ARCHIVE_KEYRING):
            self.notes.append("Sources indices not used (gpgv or debian-archive-keyring missing)")
            return
        os.makedirs(self.dir, exist_ok=True)
        for suite in INDEX_SUITES:
            try:
                self._load_suite(suite, set(packages))
            except Exception as e:  # an index is an extra, never a reason to fail
                self.notes.append("%s Sources index not used: %s" % (suite, e))

    def _load_suite(self, suite, packages):
        base = "%s/dists/%s" % (self.mirror, suite)
        try:
            inrelease = http_get(base + "/InRelease", timeout=60)
        except NotFound:
            raise RuntimeError("no InRelease") from None
        status, signer, text = gpgv(inrelease, [ARCHIVE_KEYRING])
        if status != "good":
            raise RuntimeError("InRelease signature %s" % status)
        m = re.search(r"^SHA256:\n((?:[ \t][^\n]*\n)+)", text, re.M)
        want = None
        for line in (m.group(1).splitlines() if m else []):
            parts = line.split()
            if len(parts) == 3 and parts[2] == "main/source/Sources.xz":
                want = parts[0]
        if not want:
            raise RuntimeError("InRelease lists no main/source/Sources.xz")
        path = os.path.join(self.dir, suite + ".Sources.xz")
        if not (os.path.exists(path) and sha256_file(path) == want):
            http_get(base + "/main/source/Sources.xz", dest=path, timeout=300)
            if sha256_file(path) != want:
                os.unlink(path)
                raise RuntimeError("Sources.xz does not match its InRelease")
        with lzma.open(path, "rt", encoding="utf-8", errors="replace") as f:
            data = f.read()
        for pkg in packages:
            for m in re.finditer(r"(?:^|\n)(Package: %s\n.*?)(?=\n\n|\Z)" % re.escape(pkg),
                                 data, re.S):
                fields = parse_deb822(m.group(1))
                self.entries.setdefault(pkg, []).append({
                    "version": fields.get("version", ""),
                    "suite": suite,
                    "directory": fields.get("directory", ""),
                    "sha256": checksums_sha256(m.group(1)),
                })

    def upstream_versions(self, pkg):
        out = []
        for e in self.entries.get(pkg, []):
            v = e["version"].split(":", 1)[-1].rsplit("-", 1)[0]
            out.append(v)
        return out

    def debian_versions(self, pkg, upstream):
        return [e["version"].split(":", 1)[-1] for e in self.entries.get(pkg, [])
                if e["version"].split(":", 1)[-1].rsplit("-", 1)[0] == upstream]

    def published(self, pkg, filename):
        """[(sha256, description)] for filename from signed indices."""
        return [(e["sha256"][filename], "Debian %s Sources index (%s, InRelease signature good)"
                 % (e["suite"], e["version"]))
                for e in self.entries.get(pkg, []) if filename in e["sha256"]]


# ---------------------------------------------------------------- sources


class SourceError(Exception):
    pass


class Sources:
    def __init__(self, mirror, cache_dir, pins):
        self.mirror = mirror
        self.src = os.path.join(cache_dir, "src")
        os.makedirs(self.src, exist_ok=True)
        self.index = Index(mirror, self.src)
        self.pins = pins
        self.done = {}  # series -> result dict or SourceError

    def pool_dir(self, pkg):
        return "pool/main/%s/%s" % (pkg[0], pkg)

    def candidates(self, series, pkg):
        if series in self.pins:
            return [self.pins[series]]
        vs = set(KNOWN_VERSIONS.get(series, []))
        vs.update(v for v in self.index.upstream_versions(pkg) if v.startswith(series + "."))
        return sorted((v for v in vs if version_key(v) > (0,)), key=version_key, reverse=True)

    def get(self, spec):
        """Downloads (or reuses) and verifies the newest served tarball for spec.series."""
        if spec.series in self.done:
            r = self.done[spec.series]
            if isinstance(r, SourceError):
                raise r
            log("  source %s, checked above in this run" % r["filename"])
            return r
        try:
            r = self._get(spec.series, spec.package)
        except SourceError as e:
            self.done[spec.series] = e
            raise
        self.done[spec.series] = r
        return r

    def _get(self, series, pkg):
        self.index.load(["python" + s for s in SUPPORTED_SERIES])
        tried = []
        for upstream in self.candidates(series, pkg):
            filename = "%s_%s.orig.tar.xz" % (pkg, upstream)
            path = os.path.join(self.src, filename)
            url = "%s/%s/%s" % (self.mirror, self.pool_dir(pkg), filename)
            fresh = False
            if not os.path.exists(path):
                log("  download %s" % url)
                try:
                    http_get(url, dest=path, timeout=120)
                except NotFound:
                    log("    404, trying an older version")
                    tried.append(upstream + " (404)")
                    continue
                except OSError as e:
                    tried.append("%s (%s)" % (upstream, e))
                    continue
                fresh = True
            else:
                log("  reuse %s" % path)
            result = self._verify(pkg, upstream, filename, path, fresh)
            if result is None:  # a cached copy that was corrupt: fetch it again once
                log("  cached %s does not match; downloading it again" % filename)
                os.unlink(path)
                http_get(url, dest=path, timeout=120)
                result = self._verify(pkg, upstream, filename, path, True)
            return result
        raise SourceError("no source tarball could be downloaded for %s (tried %s)"
                          % (series, ", ".join(tried) or "nothing"))

    def _find_dsc(self, pkg, upstream):
        """(dsc name, checksums, signature note) or None."""
        revs = self.index.debian_versions(pkg, upstream)
        revs += ["%s-%d" % (upstream, i) for i in range(1, DSC_REVISIONS + 1)]
        seen = set()
        for rev in revs:
            if rev in seen:
                continue
            seen.add(rev)
            name = "%s_%s.dsc" % (pkg, rev)
            try:
                data = http_get("%s/%s/%s" % (self.mirror, self.pool_dir(pkg), name), timeout=60)
            except NotFound:
                continue
            except OSError as e:
                log("    %s: %s" % (name, e))
                continue
            status, signer, signed = gpgv(data, DEVELOPER_KEYRINGS)
            if status == "bad":
                raise SourceError("%s has a BAD OpenPGP signature" % name)
            if status == "good":
                return name, checksums_sha256(signed), "signature good, %s" % signer
            note = {"nokey": "signer's key not in debian-keyring, signature not checked",
                    "unavailable": "gpgv/debian-keyring missing, signature not checked"}[status]
            return name, checksums_sha256(data.decode("utf-8", "replace")), note
        return None

    def _verify(self, pkg, upstream, filename, path, fresh):
        actual = sha256_file(path)
        published = list(self.index.published(pkg, filename))
        dsc = self._find_dsc(pkg, upstream)
        if dsc and filename in dsc[1]:
            published.insert(0, (dsc[1][filename], "%s (%s)" % (dsc[0], dsc[2])))
        if filename in PINNED_SHA256:
            published.append((PINNED_SHA256[filename], "the SHA256 pinned in build_pythons.py "
                              "(CPython's published release checksum)"))
        tofu_path = path + ".sha256"
        if published:
            bad = [d for s, d in published if s != actual]
            if bad:
                if not fresh:
                    return None
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise SourceError("SHA256 of %s (%s) does not match %s; file deleted"
                                  % (filename, actual, "; ".join(bad)))
            with open(tofu_path, "w") as f:
                f.write("%s  %s\n" % (actual, filename))
            how = "sha256 matches " + "; ".join(d for _, d in published)
            log("  verified: " + how)
            return {"upstream": upstream, "filename": filename, "path": path,
                    "sha256": actual, "verified": True, "verification": how}
        # Nothing published for this file: trust on first use, then hold to it.
        if os.path.exists(tofu_path):
            recorded = open(tofu_path).read().split()[0]
            if recorded != actual:
                if not fresh:
                    return None
                raise SourceError("SHA256 of %s (%s) differs from the one recorded at first "
                                  "download (%s)" % (filename, actual, recorded))
            how = ("NOT verified against a published checksum (no .dsc, index entry or pin "
                   "found); sha256 matches the one recorded at first download")
        else:
            with open(tofu_path, "w") as f:
                f.write("%s  %s\n" % (actual, filename))
            how = ("NOT verified against a published checksum (no .dsc, index entry or pin "
                   "found); sha256 recorded in %s" % tofu_path)
        log("  WARNING: " + how)
        return {"upstream": upstream, "filename": filename, "path": path,
                "sha256": actual, "verified": False, "verification": how}


# ---------------------------------------------------------------- checks


def clean_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("PYTHON") or k in ("PYENV_VERSION", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV"):
            del env[k]
    env["LC_ALL"] = "C.UTF-8"
    return env


CHECK_CODE = r"""
import json, platform, sys, sysconfig
mods = %r
failed = []
for m in mods:
    try:
        __import__(m)
    except Exception as e:
        failed.append("%%s (%%s: %%s)" %% (m, type(e).__name__, e))
if "hashlib" in mods and not failed:
    import hashlib; hashlib.sha256(b"x").hexdigest()
print(json.dumps({
    "version": platform.python_version(),
    "series": "%%d.%%d" %% sys.version_info[:2],
    "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
    "gil_enabled_now": getattr(sys, "_is_gil_enabled", lambda: True)(),
    "prefix": sys.prefix,
    "failed": failed,
}))
"""


def check_python(python, spec, modules):
    """(ok, info or reason)."""
    if not os.access(python, os.X_OK):
        return False, "no interpreter"
    try:
        proc = subprocess.run([python, "-I", "-c", CHECK_CODE % (modules,)],
                              capture_output=True, text=True, timeout=120, env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, "does not run (%s)" % e
    if proc.returncode != 0:
        return False, "does not run: %s" % (proc.stderr.strip().splitlines() or ["?"])[-1]
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, "unexpected output %r" % proc.stdout[-200:]
    if info["series"] != spec.series:
        return False, "is %s, not %s" % (info["version"], spec.series)
    if info["gil_disabled"] != spec.free_threaded:
        return False, "Py_GIL_DISABLED is %s, expected %s" % (info["gil_disabled"], spec.free_threaded)
    if info["failed"]:
        return False, "cannot import " + ", ".join(info["failed"])
    return True, info


def cached_status(spec, prefix):
    """(True, stamp) if prefix holds a good build for spec, else (False, reason)."""
    python = os.path.join(prefix, "bin", "python3")
    if not os.path.exists(python):
        return False, "not built"
    stamp_path = os.path.join(prefix, STAMP)
    try:
        stamp = json.load(open(stamp_path))
    except (OSError, ValueError):
        return False, "no build stamp (incomplete earlier build?)"
    ok, info = check_python(python, spec, CACHED_CHECK_MODULES)
    if not ok:
        return False, info
    stamp["_info"] = info
    return True, stamp


# ---------------------------------------------------------------- apt


def missing_debs(pkgs):
    missing = []
    for p in pkgs:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", p],
                              capture_output=True, text=True)
        if proc.returncode != 0 or proc.stdout.strip() != "installed":
            missing.append(p)
    return missing


def ensure_debs(use_apt):
    if not shutil.which("dpkg-query"):
        log("deps: not a Debian system, skipping the build-dependency check")
        return
    missing = missing_debs(BUILD_DEPS + VERIFY_DEPS)
    if not missing:
        log("deps: all build dependencies are installed")
        return
    cmd = "apt-get update && apt-get install -y --no-install-recommends " + " ".join(missing)
    if not use_apt:
        log("deps: missing %s (--no-apt given; not installing)" % " ".join(missing))
        return
    if os.geteuid() != 0:
        log("deps: missing %s; not root, so run as root: %s" % (" ".join(missing), cmd))
        return
    log("deps: installing %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "update"],
                 ["apt-get", "install", "-y", "--no-install-recommends"] + missing):
        proc = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        if proc.returncode != 0:
            log("deps: `%s` failed (exit %d):\n%s" % (" ".join(args), proc.returncode,
                                                     "\n".join(proc.stdout.splitlines()[-15:])))
            break
    still = missing_debs(missing)
    if still:
        log("deps: still missing %s; the build may lack modules" % " ".join(still))
    else:
        log("deps: installed %s" % " ".join(missing))


# ---------------------------------------------------------------- build


class BuildError(Exception):
    pass


def run_logged(cmd, cwd, logf, what):
    logf.write("\n$ %s\n" % " ".join(cmd))
    logf.flush()
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT, env=clean_env())
    log("    %-9s %s" % (what, fmt_secs(time.time() - t0)))
    if proc.returncode != 0:
        raise BuildError("%s failed (exit %d)" % (what, proc.returncode))


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def build(spec, src, cache_dir, jobs, keep):
    prefix = os.path.join(cache_dir, spec.name)
    work_root = os.path.join(cache_dir, ".build")
    os.makedirs(work_root, exist_ok=True)
    work = tempfile.mkdtemp(prefix=spec.name + "-", dir=work_root)
    log_path = os.path.join(work, "build.log")
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    try:
        with open(log_path, "w") as logf:
            log("  build in %s (log %s)" % (work, log_path))
            srcroot = os.path.join(work, "src")
            os.makedirs(srcroot)
            run_logged(["tar", "-xf", src["path"], "-C", srcroot], work, logf, "extract")
            dirs = [d for d in os.listdir(srcroot) if os.path.isdir(os.path.join(srcroot, d))]
            if len(dirs) != 1 or not os.path.exists(os.path.join(srcroot, dirs[0], "configure")):
                raise BuildError("unexpected tarball layout: %s" % dirs)
            srcdir = os.path.join(srcroot, dirs[0])
            conf = spec.configure_args(prefix)
            run_logged(nice + ["./configure"] + conf, srcdir, logf, "configure")
            run_logged(nice + ["make", "-j%d" % jobs], srcdir, logf, "make")
            stage = os.path.join(work, "stage")
            run_logged(nice + ["make", "install", "DESTDIR=" + stage], srcdir, logf, "install")
        staged = os.path.join(stage, prefix.lstrip("/"))
        if not os.path.exists(os.path.join(staged, "bin", "python3")):
            raise BuildError("make install produced no bin/python3")
        # Swap the finished install into place.
        old = None
        if os.path.lexists(prefix):
            old = tempfile.mkdtemp(prefix=spec.name + "-old-", dir=work_root)
            os.rename(prefix, os.path.join(old, "x"))
        os.rename(staged, prefix)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        python = os.path.join(prefix, "bin", "python3")
        good, info = check_python(python, spec, BUILT_CHECK_MODULES)
        if not good:
            raise BuildError("built interpreter %s" % info)
        if spec.free_threaded and info.get("gil_enabled_now"):
            log("  note: GIL re-enabled at run time after importing the checked modules")
        with open(os.path.join(prefix, SOURCE_SHA), "w") as f:
            f.write("%s  %s\n" % (src["sha256"], src["filename"]))
        return info, conf
    except BuildError as e:
        saved = os.path.join(cache_dir, "logs")
        os.makedirs(saved, exist_ok=True)
        dest = os.path.join(saved, "%s-%s.log" % (
            spec.name, datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
        with contextlib.suppress(OSError):
            shutil.copy(log_path, dest)
        log("  --- last lines of the build log (%s) ---\n%s  ---" % (dest, tail(log_path)))
        raise BuildError("%s; log %s" % (e, dest)) from None
    finally:
        if not keep:  # a failed build's log was copied to <cache>/logs above
            shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def cache_lock(cache_dir):
    path = os.path.join(cache_dir, ".lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting for another build_pythons run to finish (lock %s)" % path)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cache_root():
    root = os.environ.get("SPPROF_PYTHONS") or os.path.join(
        os.path.expanduser("~"), ".cache", "spprof", "pythons")
    return os.path.abspath(root)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help="interpreters to build (default: %s)" % " ".join(DEFAULT_NAMES))
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2,
                    help="make -j (default: number of CPUs)")
    ap.add_argument("--no-apt", action="store_true",
                    help="do not install missing Debian build dependencies")
    ap.add_argument("--source-version", action="append", default=[], metavar="SERIES=VERSION",
                    help="use this upstream version only, e.g. 3.14=3.14.6 or 3.15=3.15.0~rc1")
    ap.add_argument("--require-verified", action="store_true",
                    help="fail a name whose source has no published checksum instead of "
                         "recording its SHA256")
    ap.add_argument("--keep-build", action="store_true", help="keep the build tree")
    args = ap.parse_args(argv)

    try:
        specs = [Spec(n) for n in (args.names or DEFAULT_NAMES)]
    except ValueError as e:
        ap.error(str(e))
    pins = {}
    for p in args.source_version:
        series, _, v = p.partition("=")
        if series not in SUPPORTED_SERIES or not v.startswith(series + "."):
            ap.error("bad --source-version %r" % p)
        pins[series] = re.sub(r"(\d)(a|b|rc)(\d+)$", r"\1~\2\3", v)  # Debian spelling

    cache_dir = cache_root()
    os.makedirs(cache_dir, exist_ok=True)
    log("cache: %s" % cache_dir)
    results = []  # (name, status, version, detail)
    with cache_lock(cache_dir):
        todo = []
        for spec in dict((s.name, s) for s in specs).values():
            prefix = os.path.join(cache_dir, spec.name)
            good, info = cached_status(spec, prefix)
            if good and not args.force:
                results.append((spec.name, "cached", info["_info"]["version"],
                                "%s; source %s" % (os.path.join(prefix, "bin", "python3"),
                                                   info.get("verification", "?"))))
                continue
            log("%s: %s" % (spec.name, "rebuild requested (--force)" if good else info))
            todo.append(spec)

        if todo:
            ensure_debs(not args.no_apt)
            try:
                mirror = debian_mirror()
            except RuntimeError as e:
                mirror = None
                for spec in todo:
                    results.append((spec.name, "failed", "-", str(e)))
                todo = []
            if mirror:
                log("mirror: %s" % mirror)
                sources = Sources(mirror, cache_dir, pins)
        for spec in todo:
            prefix = os.path.join(cache_dir, spec.name)
            log("\n== %s -> %s" % (spec.name, prefix))
            t0 = time.time()
            try:
                src = sources.get(spec)
                if args.require_verified and not src["verified"]:
                    raise SourceError("source not verified against a published checksum "
                                      "(--require-verified)")
                info, conf = build(spec, src, cache_dir, args.jobs, args.keep_build)
                secs = time.time() - t0
                stamp = {
                    "name": spec.name,
                    "version": info["version"],
                    "debian_upstream_version": src["upstream"],
                    "tarball": src["filename"],
                    "sha256": src["sha256"],
                    "verified": src["verified"],
                    "verification": src["verification"],
                    "free_threaded": spec.free_threaded,
                    "configure": conf,
                    "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"),
                    "build_seconds": round(secs),
                }
                with open(os.path.join(prefix, STAMP), "w") as f:
                    json.dump(stamp, f, indent=2)
                    f.write("\n")
                results.append((spec.name, "built", info["version"],
                                "%s in %s; source %s" % (os.path.join(prefix, "bin", "python3"),
                                                         fmt_secs(secs), src["verification"])))
            except (SourceError, BuildError, OSError) as e:
                results.append((spec.name, "failed", "-", str(e)))
        if todo and mirror:
            for note in sources.index.notes:
                log("note: " + note)

    log("\nsummary:")
    for name, status, version, detail in results:
        log("  %-6s %-7s %-10s %s" % (name, status, version, detail))
    return 1 if any(r[1] == "failed" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
