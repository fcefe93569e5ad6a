"""What the benchmarks share: the machine's description, the tools they
compare against (installed from PyPI into their own venv, never by hand),
the spprof command built from this tree, and median/min-max formatting."""

import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".cache", "bench-venv")

RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")

# Pinned so that runs compare like with like: the peers' commands, the
# in-process peers (imported by the targets, which run on the venv's Python)
# and the plotting library. austin-dist 4.x needs glibc 2.38; 3.7.0 runs here.
PEERS = {"py-spy": "py-spy==0.4.3", "austin": "austin-dist==3.7.0", "pyinstrument": "pyinstrument==5.1.3",
         "yappi": "yappi==1.7.6", "matplotlib": "matplotlib==3.11.2"}
MODULES = ("pyinstrument", "yappi", "matplotlib")


def _venv_pip(*args):
    if not os.path.exists(os.path.join(VENV, "bin", "python")):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([os.path.join(VENV, "bin", "python"), "-m", "pip", "install", "-q",
                           "--disable-pip-version-check", *args])


def peer_tool(name):
    """Path of a peer's command (or, for a module, the venv's Python that
    imports it), installed into .cache/bench-venv on first use."""
    if name in MODULES:
        py = os.path.join(VENV, "bin", "python")
        if not os.path.exists(py) or subprocess.run([py, "-c", "import " + name], capture_output=True).returncode:
            _venv_pip(PEERS[name])
        return py
    exe = os.path.join(VENV, "bin", name)
    if not os.path.exists(exe):
        _venv_pip(PEERS[name])
    return exe


def target_python():
    """The venv's Python with spprof built from this tree (C warnings as
    errors) and the in-process peers: every target runs on it, profiled or
    not, so that all variants run the same interpreter. spprof is rebuilt
    when what it is built from (src/, python/, the build files) changed in
    a commit or has local changes."""
    py = peer_tool("pyinstrument")
    peer_tool("yappi")
    stamp = os.path.join(VENV, "spprof-built-from")
    sources = ("src", "python", "meson.build", "meson.options", "pyproject.toml")
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", *sources],
                           capture_output=True, text=True).stdout.strip()
    want = subprocess.run(["git", "-C", ROOT, "rev-parse", *("HEAD:" + s for s in sources)],
                          capture_output=True, text=True).stdout.split()
    want = " ".join(want)
    have = open(stamp).read().strip() if os.path.exists(stamp) else ""
    if dirty or have != want:
        print("bench: installing spprof from %s into %s ..." % (ROOT, VENV), file=sys.stderr, flush=True)
        _venv_pip("--force-reinstall", "--no-deps", "-Csetup-args=-Dwerror=true", ROOT)
        with open(stamp, "w") as f:
            f.write(want + "\n")
    return py


def tachyon_python():
    """A CPython 3.15 (its `profiling.sampling` is Tachyon), the one
    tools/build_pythons.py caches, or None."""
    base = os.environ.get("SPPROF_PYTHONS") or os.path.expanduser("~/.cache/spprof/pythons")
    py = os.path.join(base, "3.15", "bin", "python3")
    if os.path.exists(py) and subprocess.run([py, "-c", "import profiling.sampling"],
                                             capture_output=True).returncode == 0:
        return py
    return None


def spprof_cli(path=None):
    """The spprof command: the one given, $SPPROF_CLI, or built from this
    tree (release, -Dwerror=true) the way the test runner builds it."""
    path = path or os.environ.get("SPPROF_CLI")
    if path:
        return path
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from run_tests import build_cli
    built = build_cli()
    if not built:
        sys.exit("bench: could not build the spprof command with meson and ninja")
    return built


def build_c(name, out_dir, sources, flags, libs=()):
    """Builds the C driver `name` in out_dir with the system's compiler
    (C11, warnings as errors); exits with the compiler's message if it
    fails. Returns the executable's path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        sys.exit("bench: no C compiler: install the Debian package gcc")
    exe = os.path.join(out_dir, name)
    cmd = [cc, "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror", *flags, *sources, *libs, "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit("bench: building %s failed:\n%s" % (name, r.stderr))
    return exe


def kernel_hz():
    """CONFIG_HZ, measured: a CPU-time interval timer asked for 1 ms expires
    once per scheduler tick."""
    fired = [0]
    old = signal.signal(signal.SIGPROF, lambda *a: fired.__setitem__(0, fired[0] + 1))
    signal.setitimer(signal.ITIMER_PROF, 0.001, 0.001)
    t0 = time.process_time()
    while time.process_time() - t0 < 0.4:
        sum(range(1000))
    signal.setitimer(signal.ITIMER_PROF, 0, 0)
    signal.signal(signal.SIGPROF, old)
    return fired[0] / (time.process_time() - t0)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine():
    return "%s, %d cores, Linux %s, kernel tick %.0f Hz (measured), CPython %s" % (
        cpu_model(), os.cpu_count(), platform.release(), kernel_hz(), platform.python_version())


def load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def git_commit():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def med(values):
    return statistics.median(values) if values else float("nan")


def median_ci(values):
    """(low, high): a distribution-free 95 % confidence interval of the
    median, from the order statistics (the ranks n/2 -+ 0.98 sqrt(n)); with
    fewer than 6 values it is the whole range."""
    v = sorted(values)
    n = len(v)
    if n < 6:
        return (v[0], v[-1]) if v else (float("nan"), float("nan"))
    half = 0.98 * math.sqrt(n)
    lo = max(0, int(math.floor(n / 2 - half)) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return v[lo], v[hi]


def parse(ap, quick, **values):
    """Adds --quick (a smoke test: `quick` says what it does, `values` are
    the options it sets) and --write, and parses; --write is for real runs
    only."""
    ap.add_argument("--quick", action="store_true", help="smoke test: " + quick)
    ap.add_argument("--write", action="store_true", help="also write this part's section of bench/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        for k, v in values.items():
            setattr(args, k, v)
    if args.write and args.quick:
        sys.exit("bench: --write is for real runs, not --quick")
    return args


def alternate(variants, rounds, fn):
    """{variant.name: [fn(variant) per round]}: every variant once a round,
    the first one rotating every round (A B C, B C A, ...), never batched:
    this machine drifts by up to 30 % between runs."""
    results = {v.name: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            results[v.name].append(fn(v))
    return results


def verdict(ok):
    return "PASS" if ok else "FAIL"


def fmt_range(values, scale=1.0, fmt="%.1f"):
    """median (min-max)"""
    if not values:
        return "-"
    f = lambda v: fmt % (v * scale)
    return "%s (%s-%s)" % (f(med(values)), f(min(values)), f(max(values)))


class Report:
    """A benchmark's output: lines printed as they come and, with --write,
    its own section of bench/RESULTS.md (the others are kept)."""

    def __init__(self, name, title, args):
        self.name, self.lines = name, []
        self.p("# %s\n" % title)
        self.p("Generated by `python3 -m bench %s %s` at %s, spprof commit %s." % (
            name, " ".join(args), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), git_commit()))
        self.p("Machine: %s. Load average (1/5/15 min) at the start: %s.\n" % (machine(), load()))

    def p(self, line=""):
        self.lines.append(line)
        print(line, flush=True)

    def plot(self, write, alt, **spec):
        """A plot (see plot()) named after this part, linked from its
        section when written."""
        png = plot(png_path(self.name, write), **spec)
        if write:
            self.p("![%s](%s)\n" % (alt, os.path.basename(png)))

    def end(self, write):
        self.p("Load average (1/5/15 min) at the end: %s.\n" % load())
        if write:
            write_section(self.name, "\n".join(self.lines))


def write_section(name, text):
    """Replaces (or appends) the section `name` of bench/RESULTS.md."""
    start, end = "<!-- bench:%s:start -->" % name, "<!-- bench:%s:end -->" % name
    old = open(RESULTS).read() if os.path.exists(RESULTS) else ""
    block = "%s\n%s\n%s" % (start, text.rstrip("\n"), end)
    if start in old and end in old:
        new = old[:old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(new)


PLOT = """
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
spec = json.load(sys.stdin)
fig, ax = plt.subplots(figsize=(9, 4.5))
if spec["kind"] == "lines":
    for s in spec["series"]:
        ax.plot(s["x"], s["y"], label=s["label"], marker=s.get("marker"))
    if spec.get("logx"):
        ax.set_xscale("log")
else:
    groups, series = spec["groups"], spec["series"]
    width = 0.8 / max(1, len(series))
    # tab20, then tab20b: no two of up to 40 series share a colour.
    colors = plt.get_cmap("tab20").colors + plt.get_cmap("tab20b").colors
    for i, s in enumerate(series):
        ax.bar([g + i * width for g in range(len(groups))], s["y"], width, label=s["label"],
               color=colors[i % len(colors)])
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups, rotation=spec.get("rotate", 0), ha="right" if spec.get("rotate") else "center")
    if spec.get("hline") is not None:
        ax.axhline(spec["hline"], color="grey", linewidth=0.8)
if spec.get("logy"):
    ax.set_yscale("log")
ax.set_title(spec["title"])
ax.set_xlabel(spec.get("xlabel", ""))
ax.set_ylabel(spec.get("ylabel", ""))
if len(ax.get_legend_handles_labels()[1]) > 8:
    # many series: the legend beside the plot, not over its bars
    fig.set_size_inches(12, 4.5)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
else:
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(spec["path"], dpi=100)
"""


def python_version(python):
    return subprocess.check_output([python, "-c", "import platform; print(platform.python_version())"],
                                   text=True).strip()


def png_path(name, write):
    """Where a plot goes: beside RESULTS.md for a written run, else to a
    temporary directory (a smoke test leaves the committed plots alone)."""
    import tempfile
    return os.path.join(ROOT, "bench", name + ".png") if write else \
        os.path.join(tempfile.gettempdir(), "spprof-bench-%s.png" % name)


def plot(path, **spec):
    """A PNG with matplotlib (from PyPI, in the bench venv): kind "lines"
    (series of x, y) or "bars" (groups on x, one bar per series)."""
    import json
    spec["path"] = path
    r = subprocess.run([peer_tool("matplotlib"), "-c", PLOT], input=json.dumps(spec), text=True,
                       capture_output=True)
    if r.returncode:
        print("bench: plot %s failed: %s" % (path, r.stderr.strip()[-500:]), file=sys.stderr)
    else:
        print("bench: plot written to %s" % path, file=sys.stderr)
    return path
