"""`python -m spprof ...` runs the spprof command installed with the package."""

import os
import shutil
import sys
import sysconfig


def main() -> None:
    candidates = [os.path.join(sysconfig.get_path("scripts"), "spprof"), shutil.which("spprof")]
    for exe in candidates:
        if exe and os.access(exe, os.X_OK):
            os.execv(exe, [exe] + sys.argv[1:])
    sys.exit("spprof: the spprof command is not installed next to this Python (looked in %s)"
             % sysconfig.get_path("scripts"))


if __name__ == "__main__":
    main()
