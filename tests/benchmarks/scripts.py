"""Load a script of ``benchmarks/`` as a module, so its pieces are tested without running it."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import PROJECT_ROOT


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported under the module name ``name`` (``main`` not run).

    Registered in ``sys.modules`` first, as an import would (dataclasses look their module up).
    """
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
