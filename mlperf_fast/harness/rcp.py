"""Which of MLPerf's reference convergence points (RCPs) a closed run follows.

Closed-division results are compared with the RCP of their global batch size (mlperf-logging's
rcp_checker, ``training_<round>/rcps_<benchmark>.json``), which was produced with particular
hyperparameters: a closed run at another batch size, or with other hyperparameters, has no RCP to
be checked against. ``rcp_match`` looks for the RCP whose batch size and hyperparameters match the
values the run logs, and otherwise says what differs.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

from mlperf_fast.harness.compliance import MLPERF_BENCHMARKS, RULESET

# the RCP files' names for keys the logs spell otherwise
_KEY_IN_LOG = {"model_eva_ema_factor": "model_eval_ema_factor"}
# keys that describe how the batch is split over devices, not the training's mathematics
_SPLIT_ONLY = {"opt_gradient_accumulation_steps", "gradient_accumulation_steps"}


def load_rcps(benchmark: str, ruleset: str = RULESET) -> dict[str, Any]:
    """The RCP records of ``benchmark`` in the training round ``ruleset``, {} when there are
    none."""
    from mlperf_logging import rcp_checker

    path = os.path.join(os.path.dirname(rcp_checker.__file__), f"training_{ruleset}",
                        f"rcps_{benchmark}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def rcp_match(benchmark: str, division: str, hyperparameters: dict[str, Any],
              ruleset: str = RULESET,
              as_logged: Callable[[dict[str, Any]], dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    """{"name": RCP} when a closed run's logged hyperparameters match one of round ``ruleset``;
    {"warning": ...} when none does; {} for open runs and benchmarks that have no RCPs.
    ``as_logged`` maps an RCP's "Hyperparams" to the values a run's log states for them, where
    a round's RCP file records the reference's arguments in other units (Workload.rcp_as_logged)."""
    if division != "closed" or benchmark not in MLPERF_BENCHMARKS:
        return {}
    rcps = load_rcps(benchmark, ruleset)
    if not rcps:
        return {}
    gbs = hyperparameters.get("global_batch_size")
    same_batch = {n: r for n, r in rcps.items() if r.get("BS") == gbs}
    if not same_batch:
        sizes = ", ".join(str(b) for b in sorted({r.get("BS") for r in rcps.values()}))
        return {"warning": f"no {benchmark} RCP has global batch size {gbs} (RCPs exist at "
                           f"{sizes}): a closed result at it cannot pass the RCP check"}
    best, best_diff = None, None
    for name, record in same_batch.items():
        diff = {}
        wanted = record.get("Hyperparams", {})
        for key, want in (as_logged(wanted) if as_logged is not None else wanted).items():
            if key in _SPLIT_ONLY:
                continue
            have = hyperparameters.get(_KEY_IN_LOG.get(key, key))
            if have is None or not _same(have, want):
                diff[key] = {"rcp": want, "run": have}
        if best_diff is None or len(diff) < len(best_diff):
            best, best_diff = name, diff
    if not best_diff:
        return {"name": best}
    listed = "; ".join(f"{k} {v['run']} (RCP {v['rcp']})" for k, v in best_diff.items())
    return {"warning": f"the closed run matches no {benchmark} RCP at global batch {gbs}: "
                       f"nearest {best} differs in {listed}", "nearest": best,
            "differences": best_diff}
