"""Runs one benchmark: `python3 -m bench [NAME] [its options]`.

    python3 -m bench                      # outofprocess, the side-by-side with the peers
    python3 -m bench outofprocess --write # ... and writes its section of bench/RESULTS.md
    python3 -m bench all [--quick] [--write]  # every part of issue #5, one after the other
    python3 -m bench NAME --quick         # any part as a smoke test (a few seconds to minutes)

Each is also a script: `python3 bench/NAME.py`.
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = sorted(n[:-3] for n in os.listdir(HERE)
                    if n.endswith(".py") and n not in ("__init__.py", "__main__.py", "common.py", "runner.py",
                                                        "workloads.py"))


def main():
    args = sys.argv[1:]
    name = "outofprocess"
    if args and not args[0].startswith("-"):
        name = args.pop(0)
    if name not in BENCHMARKS:
        sys.exit("bench: no benchmark %r (there are: %s)" % (name, ", ".join(BENCHMARKS)))
    sys.argv = [os.path.join(HERE, name + ".py")] + args
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
