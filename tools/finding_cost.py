"""The compute behind each registered finding: the stored runs it rests on (its evidence)
and their recorded wall time, summed, with the threads each ran on.

    python tools/finding_cost.py [results/findings.json]

A run shared by several findings (e.g. the distilling chapter's runs) counts in each.
The times are the runs' own records (:func:`kdbook.timings.run_seconds`: data preparation,
teacher outputs, training and evaluation) on whatever machine ran them, not a like-for-like
cost."""
import json
import re
import sys
from pathlib import Path

from kdbook.timings import run_seconds

RESULTS = Path(__file__).resolve().parents[1] / "results"


def run_record(key: str) -> dict:
    (path,) = RESULTS.glob(f"*-{key}.json")  # result files are named <slug>-<key>.json
    return json.loads(path.read_text())


def main(findings_file: Path) -> None:
    print(f"{'finding':<34}{'runs':>5}{'wall time (h)':>15}  threads")
    for finding in json.loads(findings_file.read_text()):
        records = [run_record(key) for key in dict.fromkeys(finding["evidence"])]
        hours = sum(map(run_seconds, records)) / 3600
        threads = sorted({t for r in records for t in re.findall(r"(\d+) threads", r["provenance"]["device"])})
        print(f"{finding['id']:<34}{len(records):>5}{hours:>15.2f}  {', '.join(threads)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "findings.json")
