"""The stress suite, in-process: programs that do everything a profiled
program may do (500 threads, fork, multiprocessing, 10,000-deep recursion,
coroutines, exceptions, gc storms, C callbacks, GIL-released work, blocking
calls, start/stop cycles, their own SIGPROF, exiting while profiled), each
sampled at interval_ms=1 with native unwinding off and on. Each asserts
that the program did not crash and behaved as without spprof, and that the
profile is sane: samples, the known functions at their lines, every stack
rooted at its thread's root, counts that add up.

The target programs are tests/data/stress_inproc.py. `pytest -m stress`
runs this suite alone."""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import DATA, kernel_at_least

import spprof

pytestmark = pytest.mark.stress

TARGET = os.path.join(DATA, "stress_inproc.py")
MODES = ["python", "native"]
# The scenarios that a clock reading running threads' stacks must survive
# too: threads coming and going, fork, deep and fast-changing stacks, code
# objects dying, GIL-released work, blocking calls, start/stop cycles, exit.
WITH_NONBLOCKING = MODES + ["nonblocking"]


def run_target(tmp_path, *args, expect=0, env=None, timeout=240):
    """Runs the stress target; fails on a crash (a signal) or an unexpected
    exit status. Returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.run([sys.executable, TARGET, *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=str(tmp_path), env=full_env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail("stress target %s hung (no exit within %d s)\n%s" % (args, timeout, exc.stderr))
    if proc.returncode < 0:
        pytest.fail("stress target %s was killed by %s\n--- stderr\n%s"
                    % (args, signal.Signals(-proc.returncode).name, proc.stderr[-4000:]))
    assert proc.returncode == expect, "exit status %d, not %d\n--- stderr\n%s" % (
        proc.returncode, expect, proc.stderr[-4000:])
    return proc


def scenario(tmp_path, name, mode, env=None):
    if mode == "native" and not spprof.native_unwinding_available():
        pytest.fail("native unwinding needs libunwind: apt-get install libunwind8")
    proc = run_target(tmp_path, name, mode, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if mode == "nonblocking":
        assert r["clock"] == "nonblocking", r["clock"]
    return r


def check_sane(r, cpu_bound=True):
    """What every profile must satisfy."""
    assert r["samples"] > 0, r
    # The distinct stacks' counts add up to the samples collected; the live
    # statistics never exceed the final ones.
    assert r["count_sum"] == r["samples"], r
    assert r["live_collected"] <= r["samples"] and r["live_dropped"] <= r["dropped"], r
    # Little lost in rings or to unreadable stacks: none in most runs; once,
    # 92 of 1,078 on 3.15 with 50 threads starting at once at load 24 (not
    # explained yet, not seen again).
    assert r["dropped"] <= max(2, r["samples"] // 10), r
    assert not r["bad_roots"], "stacks without their thread's root: %s" % r["bad_roots"]
    if r["clock"] == "wall_timer":
        return  # (weights are wall time then)
    # Samples stand for CPU time the process really used, and (CPU-bound
    # work) for most of it.
    assert r["sampled_ms"] <= r["cpu_ms"] * 1.02 + 5, r
    if cpu_bound:
        assert r["sampled_ms"] >= 0.5 * r["cpu_ms"], r
    if r["clock"] == "perf_event":
        # About one sample per CPU millisecond (expiries that come while a
        # signal is pending merge into one sample, weighted for both: on a
        # loaded machine up to a third of them). Threads that run in bursts
        # of tens of microseconds between waits get fewer where timer
        # interrupts come late (the eintr scenario: 0.7-0.85 per ms here on
        # a quiet day, 16 samples for 91 ms once in CI); their weights still
        # add up to their CPU time (above), and the rate of busy threads is
        # test_sampling's and bench/rates.py's to check.
        if cpu_bound:
            assert r["samples"] + r["dropped"] >= 0.5 * r["sampled_ms"] - 10, r
        assert r["samples"] <= 1.1 * r["sampled_ms"] + 5, r


def check_function(r, name, marker=None, parents=None, min_count=5, min_share=0.2):
    """name was sampled, only at lines inside it, mostly at its marked line,
    called from one of parents."""
    lines = {int(k): v for k, v in r["funcs"].get(name, {}).items()}
    total = sum(lines.values())
    assert total >= min_count, "%s sampled %d times: %s" % (name, total, sorted(r["funcs"]))
    if name in r.get("spans", {}):
        lo, hi = r["spans"][name]
        assert all(lo <= ln <= hi for ln in lines), (name, lo, hi, lines)
    if marker:
        want = r["markers"][marker]
        assert lines.get(want, 0) >= min_share * total, (name, want, lines)
    if parents:
        seen = r["parents"][name]
        assert set(seen) <= set(parents), (name, seen)


@pytest.mark.parametrize("mode", WITH_NONBLOCKING)
def test_500_threads_started_and_renamed_while_profiling(tmp_path, mode):
    r = scenario(tmp_path, "threads_500", mode)
    check_sane(r)
    expected = r["expected_names"]
    sampled = [tid for tid in expected if tid in r["names"]]
    # Each thread ran 2 ms of CPU at 1 ms: (nearly) every one is sampled.
    assert len(sampled) >= 0.9 * len(expected), (len(sampled), len(expected))
    # Under its last name: renamed-N for the fifth renamed mid-run.
    wrong = [(tid, expected[tid], r["names"][tid]) for tid in sampled
             if expected[tid] is not None and r["names"][tid] != expected[tid]]
    assert not wrong, wrong[:10]
    assert sum(1 for tid in sampled if (expected[tid] or "").startswith("renamed-")) >= 80
    check_function(r, "worker", "WORKER", parents={"run"}, min_share=0.3)
    check_function(r, "burn", "BURN", parents={"worker", "run"})


@pytest.mark.parametrize("mode", WITH_NONBLOCKING)
def test_fork_child_runs_clean_and_profiles_itself(tmp_path, mode):
    r = scenario(tmp_path, "fork", mode)
    check_sane(r)
    assert len(r["forks"]) == 2
    for f in r["forks"]:
        assert f["status"] == 0, f  # exited 0, not killed by a stray SIGPROF
        c = f["child"]
        assert c["active"] is False, c
        assert c["timers"] == 0 and c["perf_fds"] == 0, c  # no clock followed it
        assert c["sigprof_received"] == 0, c  # 0.1 s of CPU, not one SIGPROF
        assert c["samples"] >= 50, c  # its own profile: 0.1 s of CPU at 1 ms
        assert c["child_work"] >= 0.9 * c["samples"], c
    # The parent went on sampling both its threads.
    assert "busy" in r["names"].values() and "MainThread" in r["names"].values(), r["names"]
    check_function(r, "burn", "BURN")


@pytest.mark.parametrize("mode", MODES)
def test_multiprocessing_fork_and_spawn(tmp_path, mode):
    r = scenario(tmp_path, "multiprocessing", mode)
    check_sane(r, cpu_bound=False)
    for method in ("fork", "spawn"):
        m = r[method]
        assert m["squares"] == [x * x for x in range(8)], (method, m)
        assert m["active"] is False and m["timers"] == 0, (method, m)
    check_function(r, "burn", "BURN", min_count=20)


@pytest.mark.parametrize("mode", WITH_NONBLOCKING)
def test_recursion_10000_deep(tmp_path, mode):
    r = scenario(tmp_path, "recursion", mode)
    check_sane(r)
    assert r["samples"] >= 150, r  # 0.25 s of CPU at the bottom
    # The innermost 256 Python frames, under the <truncated> marker.
    assert r["max_depth"] == 257, r
    assert set(r["parents"]["burn"]) == {"recurse"}, r["parents"]["burn"]
    assert r["funcs"]["<truncated>"]["0"] >= 0.95 * r["samples"], r["funcs"]["<truncated>"]
    # recurse's caller is recurse, but for the first call: a sample taken
    # while the stack is under 256 frames deep (the first and last few
    # hundred calls of the descent and the return, about 0.1 ms each) has
    # run below it, truly. One was seen in 1 of 8 runs (3.9, nonblocking).
    check_function(r, "recurse", "BOTTOM", parents={"recurse", "run"}, min_share=0.9)
    assert r["parents"]["recurse"].get("run", 0) <= 2, r["parents"]["recurse"]
    check_function(r, "burn", "BURN", parents={"recurse"})


@pytest.mark.parametrize("mode", WITH_NONBLOCKING)
def test_generators_coroutines_tasks_exceptions_exec_gc_callbacks(tmp_path, mode):
    r = scenario(tmp_path, "shapes", mode)
    check_sane(r)
    check_function(r, "gen_numbers", "GEN", parents={"use_generator"})
    check_function(r, "co_leaf", "CORO", parents={"co_mid"})
    check_function(r, "co_mid", parents={"use_coroutines"})
    check_function(r, "task_work", "TASK")
    check_function(r, "raise_deep", parents={"raise_deep", "use_exceptions", "<truncated>"})
    check_function(r, "use_exceptions")
    check_function(r, "use_exec_eval")
    assert sum(1 for f in r["funcs"] if f.startswith("churned_")) >= 5, sorted(r["funcs"])
    # The GC line's share of use_gc's samples is the share of its CPU time
    # that gc.collect() took, as the target measured it (which varies with
    # the build: ASan's allocator slows make_cycles).
    check_function(r, "use_gc", "GC", min_share=0)
    lines = {int(k): v for k, v in r["funcs"]["use_gc"].items()}
    got = lines.get(r["markers"]["GC"], 0) / sum(lines.values())
    assert abs(got - r["gc_share"]) < 0.2, (got, r["gc_share"], lines)
    check_function(r, "make_cycles", parents={"use_gc"}, min_count=2)
    # Python called back from C: the Python caller stays above.
    check_function(r, "sort_key", "KEY", parents={"use_sorted"})
    check_function(r, "repl", "REPL", parents={"sub"}, min_share=0.15)
    if mode == "native":
        assert r["native_frames"] > 0.5 * r["samples"], r


@pytest.mark.parametrize("mode", WITH_NONBLOCKING)
def test_gil_released_native_work_in_several_threads(tmp_path, mode):
    r = scenario(tmp_path, "gil_released", mode)
    check_sane(r)
    check_function(r, "do_sha", "SHA", min_count=50, min_share=0.9)
    check_function(r, "do_zlib", "ZLIB", min_count=50, min_share=0.9)
    check_function(r, "do_socket", min_count=1)
    names = set(r["names"].values())
    assert {"sha", "zlib", "socket"} <= names, names


@pytest.mark.parametrize("clock", ["default", "wall"])
@pytest.mark.parametrize("mode", MODES)
def test_blocking_calls_never_see_eintr(tmp_path, mode, clock):
    """select, poll, sleep, os.read on a pipe, socket recv, Event.wait and
    Queue.get with a timeout, in threads sampled at 1 ms; with the wall
    clock, the signal lands while they block."""
    env = {"SPPROF_CLOCK": "wall"} if clock == "wall" else None
    r = scenario(tmp_path, "eintr", mode, env=env)
    check_sane(r, cpu_bound=False)
    assert r["errors"] == [], r["errors"]
    assert r["early"] == [], r["early"]  # no call returned before its timeout
    for name in ("time.sleep", "select.select", "poll.poll", "Event.wait", "Queue.get", "os.read",
                 "socket.recv"):
        # (each call made: a loaded machine may run a thread only a few times)
        assert r["counts"].get(name, 0) >= 1, r["counts"]
    if clock == "wall":
        assert r["clock"] == "wall_timer", r["clock"]
        # Signals really arrived while the calls blocked: ~8 threads x 0.4 s.
        assert r["samples"] >= 500, r


@pytest.mark.parametrize("mode", WITH_NONBLOCKING)
def test_start_stop_10000_cycles_some_stopped_from_another_thread(tmp_path, mode):
    if mode == "native" and not spprof.native_unwinding_available():
        pytest.fail("native unwinding needs libunwind: apt-get install libunwind8")
    r = json.loads(run_target(tmp_path, "cycles", mode, 10000).stdout)
    assert r["cycles"] == 10000 and r["errors"] == [], r
    assert r["active"] is False
    assert r["timers"] == 0 and r["perf_fds"] == 0, r  # nothing left armed


@pytest.mark.parametrize("mode", MODES)
def test_program_with_its_own_sigprof(tmp_path, mode):
    """spprof refuses to start when SIGPROF is the program's (its own
    handler, or an armed ITIMER_PROF); a handler installed while profiling
    for the signal spprof's clock sends takes it over, and stop() says so;
    with the default clock on SIGTRAP, a SIGPROF handler is left alone."""
    r = json.loads(run_target(tmp_path, "sigprof", mode).stdout)
    assert "SIGPROF already has a handler" in r["handler"], r
    assert "ITIMER_PROF" in r["itimer"] and "setitimer" in r["itimer"], r
    for clock, t in r["taken_over"].items():
        # the samples of the 0.15 s before the takeover are kept (the CPU
        # timer fires on the 250 Hz tick)
        assert t["samples"] >= (20 if t["clock"] == "cpu_timer" else 100), t
        assert t["user_handler_calls"] >= 1, t  # the program's handler runs
        assert any("installed its own %s handler" % t["signal"] in w for w in t["warnings"]), t
    assert r["taken_over"]["cpu"]["signal"] == "SIGPROF", r
    if r["taken_over"]["default"]["clock"] == "perf_event" and kernel_at_least(6, 15):
        # perf_event's sigtrap is what the default clock uses (from Linux 6.15).
        assert r["taken_over"]["default"]["signal"] == "SIGTRAP", r
        b = r["sigprof_beside_trap"]
        assert b["trap"] and b["user_handler_calls"] == 0 and b["warnings"] == [], b
        assert b["after_handler"] >= 20, b  # 0.05 s at 1 ms, still sampled
    assert r["after"] >= 20, r


@pytest.mark.parametrize("mode", WITH_NONBLOCKING)
def test_interpreter_exit_while_profiling_saves_at_exit(tmp_path, mode):
    out = tmp_path / "exit.json"
    proc = run_target(tmp_path, "exit_atexit", mode, out)
    assert proc.stderr == "", proc.stderr
    doc = json.loads(out.read_text())
    weights = {p["name"].split(" (")[0]: sum(p["weights"]) for p in doc["profiles"]}
    # The main thread's 0.1 s of CPU, and the daemon thread still burning.
    assert weights.get("MainThread", 0) >= 50e6, weights
    assert "daemon" in weights, weights
    names = {f["name"] for f in doc["shared"]["frames"]}
    assert "burn" in names and "exit_atexit" in names, names


@pytest.mark.parametrize("mode", MODES)
def test_sys_exit_inside_profiler_saves_and_keeps_the_status(tmp_path, mode):
    out = tmp_path / "sysexit.json"
    proc = run_target(tmp_path, "exit_in_profiler", mode, out, expect=3)
    assert proc.stderr == "", proc.stderr
    doc = json.loads(out.read_text())
    total = sum(sum(p["weights"]) for p in doc["profiles"])
    assert total >= 50e6, total
    frames = doc["shared"]["frames"]
    assert any(f["name"] == "exit_in_profiler" for f in frames), frames
