"""Replacing a peer's function or class by mlperf_fast's, in every module that holds the name."""
from __future__ import annotations

import types


def replace(new: object, *modules: types.ModuleType, name: str) -> list[str]:
    """Set ``module.name = new`` in each module; return the replaced qualified names.

    Raises AttributeError if a module lacks the name: a peer that renamed a function would
    otherwise be tested with its own function in place, and pass."""
    done = []
    for module in modules:
        if not hasattr(module, name):
            raise AttributeError(f"{module.__name__} has no {name}: this version of the peer "
                                 "does not match the swap")
        setattr(module, name, new)
        done.append(f"{module.__name__}.{name}")
    return done
