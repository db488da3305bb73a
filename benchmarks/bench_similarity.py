"""Similarity check at class size: time and peak memory of `python -m autograder similarity` on 100 and 300
generated a1 submissions (benchmarks/ta_demo.py: the solution disguised per student, some parts left as the
stub, a few copies of one another). Every pair shares code there, so every pair is compared in full: the
worst case for the pairwise step.

    .venv/bin/python benchmarks/bench_similarity.py [--sizes 100 300]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown, save  # noqa: E402
from ta_demo import generated_submissions  # noqa: E402

from autograder import similarity  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(n: int, assignment_id: str = "a1_pytorch") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "subs"
        generated_submissions(folder, n, assignment_id, copies=max(2, n // 50))
        before = peak_rss_mib()
        t0 = time.perf_counter()
        codes, unread = similarity.load_codes(assignment_id, folder)
        t1 = time.perf_counter()
        matches = similarity.compare_all(codes)
        t2 = time.perf_counter()
        out = Path(tmp) / "out"
        out.mkdir()
        similarity.write_csv(matches, out / "similarity.csv")
        similarity.write_html(assignment_id, codes, unread, matches, similarity.THRESHOLD, similarity.MIN_OVERLAP, out, t2 - t0)
        t3 = time.perf_counter()
        page_mib = (out / "index.html").stat().st_size / 2**20
    return {"submissions": n, "pairs": len(matches), "flagged": sum(m.flagged for m in matches),
            "read_fingerprint_s": round(t1 - t0, 2), "compare_s": round(t2 - t1, 2), "write_s": round(t3 - t2, 2),
            "total_s": round(t3 - t0, 2), "us_per_pair": round(1e6 * (t2 - t1) / max(len(matches), 1), 1),
            "peak_rss_mib": round(peak_rss_mib()), "rss_growth_mib": round(peak_rss_mib() - before), "page_mib": round(page_mib, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300])
    args = parser.parse_args()
    rows = [run(n) for n in args.sizes]
    headers = ["submissions", "pairs", "flagged", "read + fingerprint (s)", "all pairs (s)", "µs / pair", "CSV + HTML (s)",
               "total (s)", "peak RSS (MiB)", "RSS growth (MiB)", "page (MiB)"]
    table = markdown(headers, [[r["submissions"], r["pairs"], r["flagged"], r["read_fingerprint_s"], r["compare_s"], r["us_per_pair"],
                                r["write_s"], r["total_s"], r["peak_rss_mib"], r["rss_growth_mib"], r["page_mib"]] for r in rows])
    save("similarity", rows, "## Similarity check (a1, generated submissions, 1 process)\n\n" + table)


if __name__ == "__main__":
    main()
