"""The flame graph SVG driven in a real browser: headless Chromium (Debian's
`chromium`) through Playwright (PyPI `playwright`, never `playwright
install`). For a profile taken in-process and one from `spprof record`, it
hovers a frame and reads the details line, clicks a frame and checks the
zoom, resets, searches and checks the highlighted boxes and the matched
share, each number compared with the file and with the collapsed stacks of
the same profile. Screenshots go to .cache/test-artifacts/svg-browser/.
"""

import colorsys
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import run_script
from test_cli import spprof_exe

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(os.path.dirname(HERE), ".cache", "test-artifacts", "svg-browser")
CHROMIUM = "/usr/bin/chromium"
SVG = "{http://www.w3.org/2000/svg}"
HILITE = "#e600e6"
WIDTH = 1180.0  # the root box's width in the writer (FG_INNER)

# A name no program would choose but any can: markup that must stay text.
NASTY = '</title><script>window.PWNED=1</script>&amp;<b x="1">'

# main -> gamma -> alpha -> spin (about half the time), main -> beta -> spin
# (a quarter), and rec, recursing three deep before spinning: its boxes nest,
# so the matched share must count them once. helper.py is a second module.
HELPER = """
import time

def spin(seconds):
    x = 0
    end = time.time() + seconds
    while time.time() < end:
        x += 1
    return x

def helper_work(seconds):
    return spin(seconds)
"""

TARGET = """
import sys, time
from helper import spin, helper_work

def alpha():
    spin(0.8)

def beta():
    spin(0.4)

def gamma():
    alpha()

def rec(n):
    if n:
        return rec(n - 1)
    return spin(0.25)

def nasty():
    helper_work(0.2)

NASTY = %r
code = nasty.__code__
if sys.version_info >= (3, 11):
    nasty.__code__ = code.replace(co_name=NASTY, co_qualname=NASTY)
else:
    nasty.__code__ = code.replace(co_name=NASTY)

def main():
    gamma()
    beta()
    rec(3)
    nasty()

if sys.argv[1:] == ["api"]:
    import spprof
    spprof.start(interval_ms=2)
    main()
    p = spprof.stop()
    p.save("p.svg", format="flamegraph")
    p.save("p.txt", format="collapsed")
else:
    main()
""" % NASTY


def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail("the browser tests need the PyPI package playwright (pip install playwright; "
                    "tools/run_tests.py installs it; never `playwright install`): %s" % e)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("the browser tests need %s: the Debian package chromium "
                    "(python3 tools/setup_deps.py installs it)" % CHROMIUM)
    return sync_playwright


@pytest.fixture(scope="module")
def browser():
    sync_playwright = playwright_api()
    # The sanitizer run preloads libasan into every process started from the
    # tests; Playwright's node driver and Chromium hang with it. They are
    # started without it, and the targets started later still get it.
    preload = os.environ.pop("LD_PRELOAD", None)
    try:
        p = sync_playwright().start()
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    finally:
        if preload is not None:
            os.environ["LD_PRELOAD"] = preload
    try:
        yield b
    finally:
        b.close()
        p.stop()


@pytest.fixture(scope="module")
def artifacts():
    os.makedirs(ARTIFACTS, exist_ok=True)
    print("\nsvg-browser screenshots: %s" % ARTIFACTS)
    return ARTIFACTS


def write_target(tmp_path):
    (tmp_path / "helper.py").write_text(HELPER)


def collapsed_share(lines, pattern):
    """Samples whose stack has a frame matching pattern (a regex over one
    frame's label), from collapsed stacks: the independent answer."""
    total = hit = 0
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        total += int(count)
        if any(re.search(pattern, f) for f in stack.split(";")):
            hit += int(count)
    return hit, total


def svg_stacks(frames):
    """The file's boxes turned back into collapsed stacks: a box's own
    samples (its count less its children's) under its path from the root.
    The boxes are in pre-order, so a box's parent is the last box before it
    one level lower."""
    path, own, out = [], {}, []
    for i, f in enumerate(frames):
        del path[f["d"]:]
        if path:
            own[path[-1]] -= f["n"]
        path.append(i)
        own[i] = f["n"]
        out.append(path[1:])
    # Written like the collapsed format, which turns ';' in a name into ':'.
    return ["%s %d" % (";".join(frames[j]["label"].replace(";", ":") for j in p), own[i])
            for i, p in enumerate(out) if own[i] > 0 and p]


def read_svg(path):
    """The frames in document order (the DOM's order too): label, x, n,
    depth, fill; and the file's title, subtitle and total."""
    if not shutil.which("xmllint"):
        pytest.fail("xmllint is missing: the Debian package libxml2-utils")
    r = subprocess.run(["xmllint", "--noout", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    root = ET.parse(str(path)).getroot()
    frames = []
    for g in root.iter(SVG + "g"):
        if g.get("class") != "frame":
            continue
        title = g.find(SVG + "title").text
        m = re.match(r"^(.*) \((\d+) samples, ([\d.]+)%\)$", title, re.S)
        assert m, title
        frames.append({"title": title, "label": m.group(1), "n": int(g.get("data-n")),
                       "x": int(g.get("data-x")), "d": int(g.get("data-d")),
                       "fill": g.find(SVG + "rect").get("fill"), "pct": m.group(3)})
    texts = {t.get("id"): "".join(t.itertext()) for t in root.iter(SVG + "text") if t.get("id")}
    assert frames[0]["label"] == "all" and frames[0]["d"] == 0
    return frames, texts, frames[0]["n"]


def check_self_contained(path):
    """No network reference anywhere: the only URI is the SVG namespace, the
    only url() a local fragment, no href, no import."""
    text = path.read_text(encoding="utf-8")
    uris = re.findall(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>)]*", text)
    assert uris == ["http://www.w3.org/2000/svg"], uris
    assert "href" not in text and "@import" not in text
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", text))


def hue(fill):
    r, g, b = (int(fill[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return colorsys.rgb_to_hls(r, g, b)[0] * 360


def widest(frames, prefix):
    """The widest box of a function: a sample taken as it is entered or
    returns can give it a second, thin box with another line."""
    found = [i for i, f in enumerate(frames) if f["label"].startswith(prefix)]
    assert found, prefix
    return max(found, key=lambda i: frames[i]["n"])


def frame_attrs(page, i):
    return page.evaluate(
        """i => { const g = document.getElementsByClassName('frame')[i], r = g.querySelector('rect');
                 return {cls: g.getAttribute('class'), x: +r.getAttribute('x'),
                         w: +r.getAttribute('width'), fill: r.getAttribute('fill'),
                         visible: getComputedStyle(g).display !== 'none'}; }""", i)


def exercise(browser, svg, collapsed, shots, name):
    """Hover, zoom, reset and search on the SVG in Chromium; every number is
    checked against the file and against the collapsed stacks."""
    check_self_contained(svg)
    frames, texts, total = read_svg(svg)
    a = widest(frames, "alpha (target.py:")
    hit, ctotal = collapsed_share(collapsed, "^%s$" % re.escape(frames[a]["label"].replace(";", ":")))
    assert total == ctotal, (total, ctotal)
    height = int(ET.parse(str(svg)).getroot().get("height"))
    page = browser.new_page(viewport={"width": 1200, "height": height})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto("file://" + str(svg))
    shot = lambda what: page.screenshot(path=os.path.join(shots, "%s-%s.png" % (name, what)))
    shot("loaded")
    assert page.evaluate("typeof window.PWNED") == "undefined"

    # Hover: the details line shows name, samples and percentage.
    assert frames[a]["n"] == hit, (frames[a]["n"], hit)
    boxes = page.locator("g.frame")
    boxes.nth(a).locator("rect").hover()
    want = "%s (%d samples, %.2f%%)" % (frames[a]["label"], hit, 100.0 * hit / total)
    assert page.text_content("#details") == want
    assert boxes.nth(a).locator("title").text_content() == want  # the native tooltip
    shot("hover")

    # Markup in a name is text: hovering it shows it verbatim.
    nz = widest(frames, NASTY + " (target.py:")
    boxes.nth(nz).locator("rect").hover()
    assert page.text_content("#details").startswith(NASTY + " (target.py:")
    page.mouse.move(1, 1)
    assert page.text_content("#details") == " "

    # Click gamma: it spans the width, alpha inside it scales with it, its
    # ancestors are greyed and everything beside it is hidden.
    g = widest(frames, "gamma (target.py:")
    before = frame_attrs(page, g)
    boxes.nth(g).locator("rect").click()
    z = frame_attrs(page, g)
    assert abs(z["x"] - 10) < 0.01 and abs(z["w"] - WIDTH) < 0.01, z
    za = frame_attrs(page, a)
    assert abs(za["w"] - WIDTH * frames[a]["n"] / frames[g]["n"]) < 0.02, za
    gx, gn, gd = frames[g]["x"], frames[g]["n"], frames[g]["d"]
    for i, f in enumerate(frames):
        st = frame_attrs(page, i)
        if f["d"] < gd and f["x"] <= gx and f["x"] + f["n"] >= gx + gn:
            assert st["cls"] == "frame dim" and st["visible"], (f["label"], st)
        elif f["d"] >= gd and gx <= f["x"] and f["x"] + f["n"] <= gx + gn:
            assert st["cls"] == "frame" and st["visible"], (f["label"], st)
        else:
            assert st["cls"] == "frame hide" and not st["visible"], (f["label"], st)
    assert page.get_attribute("#unzoom", "class") == ""
    assert not boxes.nth(widest(frames, "beta (target.py:")).is_visible()
    shot("zoomed")

    # Reset: every box back where the file put it.
    page.click("#unzoom")
    assert frame_attrs(page, g) == before
    assert page.get_attribute("#unzoom", "class") == "off"
    assert page.locator("g.frame.hide, g.frame.dim").count() == 0

    # Search (the prompt answered): matches highlighted, the share shown is
    # the collapsed stacks' share. rec nests in itself and must count once;
    # spin is under several parents and in another module.
    for term, pattern in (("alpha", r"alpha"), ("^rec ", r"^rec "), ("spin", r"spin")):
        page.once("dialog", lambda d, t=term: d.accept(t))
        page.click("#search")
        n, _ = collapsed_share(collapsed, pattern)
        assert n > 0, term
        # toFixed rounds an exact tie up where %.2f rounds it to even: the
        # shown share is compared as a number, to its last digit.
        shown = re.match(r"^Matched: (\d+\.\d\d)%$", page.text_content("#matched"))
        assert shown and abs(float(shown.group(1)) - 100.0 * n / total) <= 0.005 + 1e-9, (term, shown)
        for i, f in enumerate(frames):
            hit_now = frame_attrs(page, i)["fill"] == HILITE
            assert hit_now == bool(re.search(pattern, f["label"])), (term, f["label"])
        if term == "^rec ":  # nested matches, or this case tests nothing
            assert len({f["d"] for f in frames if re.search(pattern, f["label"])}) >= 3
        shot("search-" + re.sub(r"\W", "", term))
    page.keyboard.press("Escape")
    assert page.text_content("#matched") == ""
    assert frame_attrs(page, a)["fill"] == frames[a]["fill"]

    assert not errors, errors
    assert requests == ["file://" + str(svg)], requests
    page.close()
    return frames, texts, total


def hue_gap(a, b):
    return min(abs(a - b), 360 - abs(a - b))


def check_colours(frames):
    """One module, one hue family: every frame of target.py has one hue
    (give or take 8-bit rounding), helper.py's frames another, distinct one."""
    target = [hue(f["fill"]) for f in frames if "(target.py:" in f["label"]]
    helper = [hue(f["fill"]) for f in frames if "(helper.py:" in f["label"]]
    assert len(target) >= 5 and len(helper) >= 3, (target, helper)
    assert all(hue_gap(h, target[0]) < 3 for h in target), target
    assert all(hue_gap(h, helper[0]) < 3 for h in helper), helper
    assert hue_gap(target[0], helper[0]) >= 12, (target[0], helper[0])


def check_subtitle(texts, total):
    m = re.match(r"Duration ([\d.]+) s, (\d+) samples, ([\d.]+) samples/s \(interval ([\d.]+) ms\)",
                 texts["subtitle"])
    assert m, texts["subtitle"]
    secs, n, rate = float(m.group(1)), int(m.group(2)), float(m.group(3))
    assert n == total
    assert 1.5 < secs < 30, secs
    assert abs(rate - n / secs) <= 0.02 * rate + 0.1, (rate, n, secs)


def test_svg_in_browser_inprocess(browser, artifacts, tmp_path):
    write_target(tmp_path)
    run_script(tmp_path, TARGET, "api")
    svg = tmp_path / "p.svg"
    collapsed = (tmp_path / "p.txt").read_text(encoding="utf-8").splitlines()
    # The boxes are the profile: added back up they give its stacks.
    frames, _, _ = read_svg(svg)
    assert sorted(svg_stacks(frames)) == sorted(collapsed)
    frames, texts, total = exercise(browser, svg, collapsed, artifacts, "inprocess")
    # In-process, the title is the program's command line.
    assert texts["title"] == "%s api" % (tmp_path / "target.py"), texts["title"]
    check_subtitle(texts, total)
    assert "cpu time" in texts["subtitle"], texts["subtitle"]
    check_colours(frames)


def test_svg_in_browser_record(browser, artifacts, tmp_path):
    write_target(tmp_path)
    (tmp_path / "target.py").write_text(TARGET)
    out = tmp_path / "p.svg"
    cmd = [spprof_exe(), "record", "-r", "200", "-o", str(out), "--", sys.executable, "target.py"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    # One run writes one format: the stacks to compare with are the file's
    # own boxes, added up here independently of the page's script.
    frames, _, _ = read_svg(out)
    frames, texts, total = exercise(browser, out, svg_stacks(frames), artifacts, "record")
    # From the command line, the title is the profiled command's.
    assert texts["title"] == "%s target.py" % sys.executable, texts["title"]
    check_subtitle(texts, total)
    assert "wall time" in texts["subtitle"], texts["subtitle"]
    check_colours(frames)


def test_svg_title_for_python_c(tmp_path):
    """`python -c` leaves only "-c" in sys.argv: the title names python."""
    code = ("import spprof, time\nspprof.start(interval_ms=1)\nend = time.time() + 0.2\n"
            "while time.time() < end: pass\nspprof.stop().save('p.svg')")
    subprocess.run([sys.executable, "-c", code, "arg1"], check=True, cwd=str(tmp_path), timeout=120)
    _, texts, total = read_svg(tmp_path / "p.svg")
    assert texts["title"] == "python -c arg1", texts["title"]
    assert total > 0 and "%d samples" % total in texts["subtitle"]
