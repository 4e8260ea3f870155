#!/usr/bin/env python3
"""Summarise Robot Framework output.xml files from ETSI NGSI-LD conformance runs.

Usage:
  scripts/etsi-summary.py OUTPUT_XML [OUTPUT_XML ...] [--depth N] [--failures]
  scripts/etsi-summary.py OUTPUT_XML --label AREA      # one line: "AREA: passed/total"

Per-directory results are grouped by the test file's directories below the suite's
"TP/NGSI-LD/" (or "IOP_TP/NGSI-LD/") folder, cut to --depth levels (default 3, e.g.
ContextInformation/Provision/Entities). --depth 0 groups per .robot file.
--failures lists every failed test as "path/file.robot :: test name" followed by the
first line of its failure message.

Standard library only; output.xml is streamed, so full-suite files are fine.
"""
import argparse
import collections
import os
import sys
import xml.etree.ElementTree as ET

ANCHORS = ("TP/NGSI-LD/", "IOP_TP/NGSI-LD/")


def rel_source(source):
    """Path of a suite source below the NGSI-LD anchor, with '/' separators."""
    s = (source or "").replace(os.sep, "/")
    best = -1
    anchor_len = 0
    for a in ANCHORS:
        i = s.rfind("/" + a)
        if i >= 0 and i + 1 > best:
            best, anchor_len = i + 1, len(a)
        elif s.startswith(a) and best < 0:
            best, anchor_len = 0, len(a)
    if best >= 0:
        return s[best + anchor_len:]
    return os.path.basename(s.rstrip("/")) or s


def group_key(source, depth):
    rel = rel_source(source)
    if depth <= 0:
        return rel
    parts = rel.split("/")
    dirs = parts[:-1] if parts[-1].endswith(".robot") else parts
    if not dirs:
        return parts[-1]
    return "/".join(dirs[:depth])


def iter_tests(path):
    """Yield (suite_source, test_name, status, message) for every test in output.xml."""
    suite_sources = []
    stack = []
    for event, elem in ET.iterparse(path, events=("start", "end")):
        tag = elem.tag
        if event == "start":
            stack.append(elem)
            if tag == "suite":
                suite_sources.append(elem.get("source") or "")
            continue
        stack.pop()
        if tag == "test":
            status, msg = "FAIL", ""
            for child in elem:
                if child.tag == "status":  # the test's own status is its last direct <status>
                    status = child.get("status", "FAIL")
                    msg = child.text or ""
            src = next((s for s in reversed(suite_sources) if s), "")
            yield src, elem.get("name", "?"), status, msg
            if stack:
                stack[-1].remove(elem)
            elem.clear()
        elif tag == "suite":
            suite_sources.pop()
            if stack:
                stack[-1].remove(elem)
            elem.clear()
        elif tag in ("kw", "for", "iter", "if", "branch", "try", "while", "msg", "arg", "doc", "tag"):
            # free keyword trees early; the test's own <status> is a direct child and survives
            if stack and stack[-1].tag not in ("test", "suite"):
                elem.clear()
            elif stack and stack[-1].tag in ("test", "suite"):
                stack[-1].remove(elem)


def first_line(msg):
    msg = (msg or "").strip()
    if msg.startswith("*HTML*"):
        msg = msg[len("*HTML*"):].strip()
    lines = [l.strip() for l in msg.splitlines() if l.strip()]
    # Robot's "Several failures occurred:" header is useless alone: keep the first real one
    if len(lines) > 1 and lines[0].rstrip(":").lower() == "several failures occurred":
        return lines[1]
    return lines[0] if lines else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output_xml", nargs="+", help="robot output.xml file(s)")
    ap.add_argument("--depth", type=int, default=3, help="directory levels below TP/NGSI-LD to group by (0: per file)")
    ap.add_argument("--failures", action="store_true", help="list failed tests with the first line of their message")
    ap.add_argument("--label", help="print only one line 'LABEL: passed/total' over all tests")
    args = ap.parse_args()

    per = collections.OrderedDict()
    total = collections.Counter()
    failures = []
    for path in args.output_xml:
        try:
            for src, name, status, msg in iter_tests(path):
                key = group_key(src, args.depth)
                per.setdefault(key, collections.Counter())[status] += 1
                total[status] += 1
                if status == "FAIL":
                    failures.append((rel_source(src), name, first_line(msg)))
        except (ET.ParseError, OSError) as e:
            print(f"etsi-summary: cannot read {path}: {e}", file=sys.stderr)
            return 2

    n_total = sum(total.values())
    if args.label is not None:
        print(f"{args.label}: {total['PASS']}/{n_total}")
    else:
        width = max([len(k) for k in per] + [10])
        for key in sorted(per):
            c = per[key]
            n = sum(c.values())
            extra = f"  ({c['FAIL']} failed" + (f", {c['SKIP']} skipped" if c["SKIP"] else "") + ")"
            print(f"{key:<{width}}  {c['PASS']:>4}/{n:<4}{extra}")
        print(f"{'total':<{width}}  {total['PASS']:>4}/{n_total:<4}")
    if args.failures and failures:
        print()
        print(f"Failed tests ({len(failures)}):")
        for src, name, msg in failures:
            print(f"  {src} :: {name}")
            if msg:
                print(f"      {msg[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
