"""Runs one benchmark: `python3 -m bench [NAME] [its options]`.

    python3 -m bench                      # outofprocess, the side-by-side with py-spy
    python3 -m bench outofprocess --write # ... and writes bench/RESULTS.md
    python3 -m bench overhead             # in-process overhead (needs spprof installed)

Each is also a script: `python3 bench/NAME.py`.
"""

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = sorted(n[:-3] for n in os.listdir(HERE)
                    if n.endswith(".py") and n not in ("__init__.py", "__main__.py", "common.py", "workloads.py"))


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
