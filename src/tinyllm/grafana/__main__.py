"""``python -m tinyllm.grafana``: rewrite the dashboards and the docs generated with
them, or print the overview for another metric namespace."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tinyllm.grafana.docs import write_all
from tinyllm.grafana.overview import overview_dashboard
from tinyllm.grafana.render import render_dashboard


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinyllm.grafana",
        description="Rewrite the Grafana dashboards and the docs generated with them.")
    parser.add_argument("--root", default=".", help="the repository root (default: .)")
    parser.add_argument("--namespace", help="instead, print the overview dashboard for "
                        "metrics named NAMESPACE_* (TINYLLM_METRICS_NAMESPACE) to stdout")
    args = parser.parse_args(argv)
    if args.namespace is not None:
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", args.namespace):
            parser.error(f"--namespace must be a metric name prefix, got {args.namespace!r}")
        sys.stdout.write(render_dashboard(overview_dashboard(args.namespace)))
        return 0
    try:
        for path in write_all(Path(args.root)):
            print(f"wrote {path}", file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"python -m tinyllm.grafana: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
