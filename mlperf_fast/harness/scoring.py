"""MLPerf's score of a set of runs."""
from __future__ import annotations

import math
from collections.abc import Sequence


def mlperf_score(times: Sequence[float | None]) -> dict:
    """Score runs as MLPerf Training does: drop the fastest and the slowest run and average the
    rest. A run that did not converge (None) counts as infinitely slow: it can be the one
    dropped as slowest, but if another remains the result is not converged.

    With fewer than 3 runs nothing can be dropped from both ends: the score is the plain mean,
    and says so. Returns {"score_s": float | None, "method": str, "runs": n, "converged": k}.
    """
    n = len(times)
    converged = [t for t in times if t is not None]
    ordered = sorted(math.inf if t is None else float(t) for t in times)
    if n == 0:
        return {"score_s": None, "method": "no runs", "runs": 0, "converged": 0}
    if n < 3:
        kept, method = ordered, f"mean of {n} run(s): too few to drop the fastest and slowest"
    else:
        kept, method = ordered[1:-1], f"mean of {n - 2} runs, fastest and slowest dropped"
    score = None if any(math.isinf(t) for t in kept) else sum(kept) / len(kept)
    if score is None:
        method += "; not converged: a kept run did not reach the target"
    return {"score_s": score, "method": method, "runs": n, "converged": len(converged)}
