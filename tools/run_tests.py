#!/usr/bin/env python3
"""Builds spprof for every CPython found and runs the test suite on each.

    python3 tools/run_tests.py                 # every interpreter found
    python3 tools/run_tests.py --python 3.12   # one (a version or a path)
    python3 tools/run_tests.py -- -k threads   # extra arguments for pytest

Interpreters are looked up under ~/.pyenv/versions and in
${SPPROF_PYTHONS:-~/.cache/spprof/pythons} (where tools/build_pythons.py keeps
the ones it builds), 3.9 and newer. Each gets its
own virtual environment in .cache/venvs with the package built with C
warnings as errors, plus the test tools (pytest, jsonschema, playwright) from PyPI. Ends
with a table of interpreter -> result and exits non-zero if any failed.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".cache")
# playwright drives Debian's chromium in tests/test_svg_browser.py; its wheels
# are pure Python plus a bundled node driver, and its one compiled
# dependency, greenlet, has wheels for every interpreter tested (3.9 to 3.15,
# free-threaded too). The browser itself is never downloaded.
TEST_DEPS = ["pytest>=7", "pytest-timeout>=2", "jsonschema>=4", "playwright>=1.40"]


def version_of(python):
    out = subprocess.run(
        [python, "-c", "import sys, sysconfig; print('%d.%d' % sys.version_info[:2] + "
         "('t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''))"],
        capture_output=True, text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def find_pythons():
    candidates = glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))
    built = os.environ.get("SPPROF_PYTHONS") or os.path.expanduser("~/.cache/spprof/pythons")
    candidates += glob.glob(os.path.join(built, "*", "bin", "python3"))
    best = {}
    for path in sorted(candidates):
        ver = version_of(path)
        if not ver:
            continue
        major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", ver).groups())
        if (major, minor) >= (3, 9):
            best[ver] = path
    return sorted(best.items(), key=lambda kv: (tuple(int(x) for x in re.findall(r"\d+", kv[0])), kv[0]))


FAILURES = []  # the pytest summary line of each failed test, by interpreter


def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, **kw).returncode


SANITIZE = ["-Csetup-args=-Db_sanitize=address,undefined", "-Csetup-args=-Db_lundef=false"]


def sanitizer_env(cli):
    """What a run against the ASan/UBSan build needs: the ASan runtime loaded
    first into every Python started (the interpreter is not instrumented),
    CPython's own leaks not reported, any UBSan report fatal."""
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    if not os.path.isabs(libasan):
        sys.exit("run_tests: gcc's libasan.so not found (Debian package gcc)")
    return {
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0:handle_segv=1:allow_user_segv_handler=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "SPPROF_EXPECT_SANITIZED": "1",
        "SPPROF_CLI": cli,
    }


def test_one(ver, python, pytest_args, sanitized_cli=None):
    """Builds and tests one interpreter; with sanitized_cli, the extension
    and that command are the ASan/UBSan builds."""
    venv = os.path.join(CACHE, "venvs", ver + ("-asan" if sanitized_cli else ""))
    vpy = os.path.join(venv, "bin", "python")
    if not os.path.exists(vpy) and run([python, "-m", "venv", venv]) != 0:
        return "venv failed"
    if run([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", "pip"]) != 0:
        return "pip upgrade failed"
    # Wheels even of older releases: free-threaded and new interpreters often
    # have no wheel of the newest release, and its source needs a network.
    if run([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--prefer-binary",
            *TEST_DEPS]) != 0:
        return "test tools failed to install"
    if run([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--force-reinstall",
            "--no-deps", "-Csetup-args=-Dwerror=true", *(SANITIZE if sanitized_cli else []), ROOT]) != 0:
        return "build failed"
    env = dict(os.environ)
    env["COLUMNS"] = "300"  # (pytest cuts its summary lines to the terminal's width)
    if sanitized_cli:
        env.update(sanitizer_env(sanitized_cli))
    # Run from the tests directory so that the installed package is the one
    # imported, not the source tree.
    cmd = [vpy, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", "--timeout=600",
           os.path.join(ROOT, "tests"), *pytest_args]
    print("+ " + " ".join(cmd), flush=True)
    # Echoed as it runs; the failures' summary lines are kept to be repeated
    # at the end, where a log cut to its tail still shows them.
    proc = subprocess.Popen(cmd, cwd=os.path.join(ROOT, "tests"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        if line.startswith(("FAILED ", "ERROR ")):
            FAILURES.append("%s%s: %s" % (ver, " ASan" if sanitized_cli else "", line.rstrip()[:400]))
    rc = proc.wait()
    return "pass" if rc == 0 else "FAIL (pytest exit %d)" % rc


def build_cli(sanitize=False):
    """The spprof command, built once (plain C, no Python headers) and used
    against the targets of every interpreter."""
    build = os.path.join(CACHE, "cli-build-asan" if sanitize else "cli-build")
    meson, ninja = shutil.which("meson"), shutil.which("ninja")
    if not meson or not ninja:
        # The build tools from PyPI, in a venv of their own.
        tools = os.path.join(CACHE, "venvs", "build-tools")
        if not os.path.exists(os.path.join(tools, "bin", "python")) and \
                run([sys.executable, "-m", "venv", tools]) != 0:
            return None
        if run([os.path.join(tools, "bin", "python"), "-m", "pip", "install", "-q", "meson", "ninja"]) != 0:
            return None
        meson, ninja = os.path.join(tools, "bin", "meson"), os.path.join(tools, "bin", "ninja")
    if not os.path.exists(os.path.join(build, "build.ninja")):
        extra = ["-Db_sanitize=address,undefined", "-Db_lundef=false"] if sanitize else []
        if run([meson, "setup", build, ROOT, "-Dwerror=true", "-Dbuildtype=release", *extra]) != 0:
            return None
    if run([ninja, "-C", build, "spprof"]) != 0:
        return None
    return os.path.join(build, "spprof")


SUPPORT_START = "<!-- support-table:start (written by tools/run_tests.py --update-readme) -->"
SUPPORT_END = "<!-- support-table:end -->"


def update_readme(table):
    path = os.path.join(ROOT, "README.md")
    with open(path) as f:
        text = f.read()
    if SUPPORT_START not in text or SUPPORT_END not in text:
        sys.exit("run_tests: README.md has no support-table markers")
    head, rest = text.split(SUPPORT_START, 1)
    _, tail = rest.split(SUPPORT_END, 1)
    with open(path, "w") as f:
        f.write(head + SUPPORT_START + "\n" + table + SUPPORT_END + tail)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", action="append", help="a version (3.12, 3.13t) or an interpreter path")
    ap.add_argument("--update-readme", action="store_true",
                    help="write the resulting support table into README.md")
    ap.add_argument("--sanitize", choices=["yes", "no", "only"],
                    help="also run the suite once against the ASan/UBSan build (the default "
                         "without --python), not at all (the default with --python), or only that")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    if args.sanitize is None:
        args.sanitize = "no" if args.python else "yes"
    found = find_pythons()
    if args.python:
        chosen = []
        for want in args.python:
            if os.path.exists(want):
                chosen.append((version_of(want) or want, want))
            else:
                match = [(v, p) for v, p in found if v == want]
                if not match:
                    sys.exit("run_tests: no interpreter %s found (have: %s)" % (want, ", ".join(v for v, _ in found)))
                chosen += match
        found = chosen
    if not found:
        sys.exit("run_tests: no CPython 3.9+ found")
    cli = build_cli()
    if not cli:
        sys.exit("run_tests: could not build the spprof command with meson and ninja")
    os.environ["SPPROF_CLI"] = cli
    results = []
    if args.sanitize != "only":
        for ver, python in found:
            t0 = time.time()
            print("\n==== CPython %s (%s)" % (ver, python), flush=True)
            results.append((ver, "free-threaded" if ver.endswith("t") else "GIL",
                            test_one(ver, python, args.pytest_args), time.time() - t0))
    if args.sanitize != "no":
        # One sanitizer run: the extension and the command built with
        # -fsanitize=address,undefined, on the newest GIL interpreter that
        # pyenv has (the suite's CLI tests use it as their target too).
        gil = [(v, p) for v, p in found if not v.endswith("t")]
        asan_cli = build_cli(sanitize=True)
        if not asan_cli:
            sys.exit("run_tests: could not build the sanitized spprof command")
        ver, python = ([(v, p) for v, p in gil if v == "3.11"] or gil)[-1]
        t0 = time.time()
        print("\n==== CPython %s with ASan+UBSan (%s)" % (ver, python), flush=True)
        results.append((ver, "GIL, ASan+UBSan", test_one(ver, python, args.pytest_args, asan_cli),
                        time.time() - t0))
    table = "| interpreter | build | API and CLI tests | time |\n|---|---|---|---|\n"
    for ver, flavour, res, secs in results:
        table += "| %s | %s | %s | %.0f s |\n" % (ver, flavour, res, secs)
    print("\n" + table)
    if args.update_readme:
        update_readme(table)
    if FAILURES:
        print("failures:\n" + "\n".join(FAILURES))
    failed = sum(1 for _, _, r, _ in results if r != "pass")
    print("\ninterpreters: %d passed, %d failed" % (len(results) - failed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
