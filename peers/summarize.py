"""One Markdown page from the JSON reports run.py wrote into a folder: a table of every run (peer,
mode, device, counts, failures by reason), then each run's section.

    python3 peers/summarize.py FOLDER [--title TITLE] > results.md
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import summarize, to_markdown

ORDER = ("torchvision", "torchaudio", "apex", "lstm")


def page(folder: str, title: str) -> str:
    runs = []
    for path in glob.glob(os.path.join(folder, "*.json")):
        with open(path) as f:
            data = json.load(f)
        if "meta" in data:
            runs.append(data)
    runs.sort(key=lambda d: (ORDER.index(d["peer"]) if d["peer"] in ORDER else len(ORDER),
                             d["peer"], d["mode"] != "ours", d["device"]))
    lines = [f"# {title}", "",
             "| peer | mode | device | run | passed | failed | skipped | failures by reason |",
             "|---|---|---|---|---|---|---|---|"]
    for d in runs:
        s = summarize(d)
        c = s["counts"]
        ran = sum(c.get(k, 0) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
        failed = c.get("failed", 0) + c.get("error", 0)
        reasons = ", ".join(f"{r} {n}" for r, n in s["reasons"].items()) or "-"
        extra = f" (+{c['xfailed']} xfailed)" if c.get("xfailed") else ""
        lines.append(f"| {d['peer']} | {d['mode']} | {d['device']} | {ran} | "
                     f"{c.get('passed', 0)}{extra} | {failed} | {c.get('skipped', 0)} | "
                     f"{reasons} |")
    lines.append("")
    for d in runs:
        lines += [to_markdown(d), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--title", default="Peer suites with mlperf_fast swapped in")
    args = parser.parse_args(argv)
    sys.stdout.write(page(args.folder, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
