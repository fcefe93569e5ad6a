"""Short libFuzzer runs over what reads untrusted bytes: the frame walker,
code-object and line-table readers, resolver, debug-offsets validator and
thread-name reader (fed arbitrary bytes as a target's memory), the ELF symbol
reader, and the profile readers of spprof diff (JSON, protobuf, inflate,
folded stacks, SVG) with the diff itself. Also C unit tests of the ELF reader
and the native-name cache on inputs that change under them.
Longer runs: SPPROF_FUZZ_SECONDS=600 python3 tools/run_tests.py --python 3.11 -- -k fuzz
"""

import hashlib
import os
import shutil
import subprocess

import pytest
from conftest import build_c, run_c

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = int(os.environ.get("SPPROF_FUZZ_SECONDS", "5"))

TARGETS = {
    "fuzz_pyabi": ["src/pyabi/offsets.c", "src/pyabi/offsets_table.c", "src/pyabi/walker.c",
                   "src/pyabi/resolve.c", "src/pyabi/attrs.c", "src/core/profile.c"],
    "fuzz_elf": ["src/proc/elf.c"],
    "fuzz_read": ["src/formats/json.c", "src/formats/inflate.c", "src/formats/read.c",
                  "src/formats/read_json.c", "src/formats/read_pprof.c", "src/formats/diff.c",
                  "src/formats/flamegraph.c", "src/formats/collapsed.c", "src/formats/writer.c",
                  "src/formats/speedscope.c", "src/formats/chrometrace.c", "src/formats/pprof.c",
                  "src/formats/out.c", "src/formats/gzip.c", "src/core/profile.c"],
}


def build(name, tmp_path):
    """Builds the target once per source version (cached under .cache/fuzz,
    as every interpreter's run of the suite uses the same binary)."""
    sources = [os.path.join(ROOT, "tests", "fuzz", name + ".c")] + [os.path.join(ROOT, s) for s in TARGETS[name]]
    digest = hashlib.sha256()
    for path in sources + [os.path.join(ROOT, "src", d, h) for d in ("core", "pyabi", "proc", "formats")
                           for h in sorted(os.listdir(os.path.join(ROOT, "src", d))) if h.endswith(".h")]:
        with open(path, "rb") as f:
            digest.update(f.read())
    cached = os.path.join(ROOT, ".cache", "fuzz", "%s-%s" % (name, digest.hexdigest()[:16]))
    if os.access(cached, os.X_OK):
        return cached
    clang = shutil.which("clang")
    if not clang:
        pytest.fail("the fuzz targets need clang with libFuzzer (Debian packages clang and "
                    "libclang-rt-14-dev; python3 tools/setup_deps.py installs them)")
    exe = tmp_path / name
    cmd = [clang, "-g", "-O1", "-std=c11", "-D_GNU_SOURCE", "-fsanitize=fuzzer,address,undefined",
           "-fno-sanitize-recover=undefined", "-I", ROOT, *sources, "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail("building %s failed (is libclang-rt-14-dev installed?):\n%s" % (name, proc.stderr[-3000:]))
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    shutil.copy(str(exe), cached + ".tmp")
    os.replace(cached + ".tmp", cached)
    return cached


def seed_profiles(corpus, tmp_path):
    """A real small profile in every format spprof writes (each prefixed with
    the byte that picks reading by content), and a gzip -9 one."""
    import gzip
    import sys
    src = tmp_path / "seedprof.py"
    src.write_text(
        "import spprof\n"
        "def leaf():\n    return sum(i * i for i in range(200000))\n"
        "def mid():\n    return leaf() + leaf()\n"
        "spprof.start(interval_ms=1, timeline=True)\n"
        "mid()\n"
        "p = spprof.stop()\n"
        "for ext, fmt in (('json', 'speedscope'), ('collapsed', 'collapsed'), ('svg', 'flamegraph'),\n"
        "                 ('pb.gz', 'pprof'), ('trace.json', 'chrometrace')):\n"
        "    p.save('seed.' + ext, format=fmt)\n")
    subprocess.check_call([sys.executable, str(src)], cwd=str(tmp_path))
    for ext in ("json", "collapsed", "svg", "pb.gz", "trace.json"):
        data = (tmp_path / ("seed." + ext)).read_bytes()
        (corpus / ("seed-" + ext)).write_bytes(b"\0" + data)
        if ext == "pb.gz":
            (corpus / "seed-raw-pb").write_bytes(b"\4" + gzip.decompress(data))
            (corpus / "seed-pb9").write_bytes(b"\0" + gzip.compress(gzip.decompress(data), 9))


def seed_elf(corpus, tmp_path):
    """A small real shared object, so the fuzzer starts from a valid ELF."""
    src = tmp_path / "seed.c"
    src.write_text("int spp_seed(int x) { return x + 1; }\nint spp_data = 3;\n")
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("needs a C compiler (Debian package gcc)")
    subprocess.check_call([cc, "-shared", "-fPIC", "-O1", str(src), "-o", str(corpus / "seed.so")])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_finds_nothing(name, tmp_path):
    exe = build(name, tmp_path)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    max_len = 8192
    if name == "fuzz_elf":
        seed_elf(corpus, tmp_path)
        max_len = 65536
    if name == "fuzz_read":
        seed_profiles(corpus, tmp_path)
        max_len = 65536
    proc = subprocess.run(
        [str(exe), "-max_total_time=%d" % SECONDS, "-max_len=%d" % max_len, "-timeout=10",
         "-rss_limit_mb=1024", "-print_final_stats=1", str(corpus)],
        capture_output=True, text=True, timeout=SECONDS + 120, cwd=str(tmp_path),
        # clang's own ASan runtime is linked in: not the gcc one a sanitized
        # run of the suite preloads
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
    )
    out = proc.stderr[-6000:]
    assert proc.returncode == 0, out
    assert "ERROR:" not in proc.stderr and "runtime error" not in proc.stderr, out
    runs = [l for l in proc.stderr.splitlines() if l.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split(":")[-1]) > 100, out  # it really ran


def test_elf_symbols_survive_the_file_changing(tmp_path):
    """The ELF reader keeps a copy of the symbol tables, so a library
    truncated or rewritten in place while spprof runs cannot make it read
    through a stale mapping (SIGBUS); an empty or missing file is an error."""
    exe = build_c(tmp_path, "test_elf", ["src/proc/elf.c", "tests/c/test_elf.c"])
    scratch = tmp_path / "copy"
    shutil.copyfile(exe, scratch)
    run_c(exe, str(scratch))


def test_native_names_cached_by_the_address_looked_up(tmp_path):
    """A return address and a leaf at the same address name different
    functions (the call before it, the instruction itself); the cache of
    native names must not serve one for the other."""
    exe = build_c(tmp_path, "test_symbols", ["src/proc/symbols.c", "src/proc/maps.c", "src/proc/elf.c",
                                             "src/pyabi/merge.c", "src/core/profile.c", "tests/c/test_symbols.c"])
    run_c(exe)
