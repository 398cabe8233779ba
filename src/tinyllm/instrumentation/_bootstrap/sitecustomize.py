"""Run at interpreter start by ``tinyllm instrument`` (its folder is put first on
PYTHONPATH): instruments the SDKs ``$TINYLLM_INSTRUMENT`` names, then runs the
``sitecustomize`` the program would otherwise have had."""

import importlib.machinery
import importlib.util
import os
import sys

try:
    from tinyllm.instrumentation import instrument_from_env

    instrument_from_env()
except Exception as exc:  # never stop the program over its observability
    print(f"tinyllm instrument: instrumentation is off ({type(exc).__name__}: {exc})",
          file=sys.stderr)

_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in sys.path if os.path.abspath(p or ".") != _here]
_spec = importlib.machinery.PathFinder.find_spec("sitecustomize", _rest)
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
