"""Execute every lesson notebook with papermill (CI parameters) into build/notebooks/, export
each to HTML with its plotly charts embedded (offline), print per-notebook times.

    python -m labkit.notebook.runner [--only 02_workers_and_progress] [--out build/notebooks]

Brokers come from LABKIT_* like the notebooks themselves (`make notebooks` sets them).
Exits non-zero if any notebook fails or an export lacks its chart data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (labkit is installed editable)
NOTEBOOKS = ROOT / "notebooks"
CI_PARAMETERS = {"TIME_SCALE": 0.02}
KERNEL = "python3"
CELL_TIMEOUT_S = 240  # a stuck cell fails with its own traceback, well before a test timeout
PLOTLY_MARK = "Plotly.newPlot"  # a static figure with its data, in the exported HTML


def lesson_notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in found if not only or any(p.stem.startswith(o) for o in only)]


def execute(path: Path, out_dir: Path, parameters: dict | None = None) -> Path:
    import papermill

    out = out_dir / path.name
    papermill.execute_notebook(
        str(path), str(out), parameters={**CI_PARAMETERS, **(parameters or {})},
        kernel_name=KERNEL, cwd=str(path.parent), progress_bar=False,
        execution_timeout=CELL_TIMEOUT_S,
    )
    drop_widget_state(out)
    return out


def drop_widget_state(executed: Path) -> None:
    """Live widgets were frozen into static output; their saved state (plotly.js again, per
    figure) would only make the files large."""
    import nbformat

    book = nbformat.read(executed, as_version=4)
    if book.metadata.pop("widgets", None) is not None:
        nbformat.write(book, executed)


def export_html(executed: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _resources = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def results(executed: Path) -> dict:
    """The RESULTS line the last cell prints: `RESULTS {json}`."""
    import nbformat

    book = nbformat.read(executed, as_version=4)
    for cell in reversed(book.cells):
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("RESULTS "):
                    return json.loads(line.removeprefix("RESULTS "))
    raise LookupError(f"{executed.name}: no RESULTS line")


def needs_charts(executed: Path) -> bool:
    text = executed.read_text(encoding="utf-8")
    return "application/vnd.plotly.v1+json" in text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="notebook name prefix (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed, total = [], time.monotonic()
    for path in lesson_notebooks(args.only):
        started = time.monotonic()
        try:
            executed = execute(path, args.out)
            html = export_html(executed)
            if needs_charts(executed) and PLOTLY_MARK not in html.read_text(encoding="utf-8"):
                raise RuntimeError(f"{html.name} has no plotly chart data")
            summary = json.dumps(results(executed))[:100]
            print(f"{time.monotonic() - started:6.1f}s ✓ {path.stem}  {summary}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report every notebook, then fail
            failed.append(path.stem)
            print(f"{time.monotonic() - started:6.1f}s ✗ {path.stem}: {str(exc).strip()[-600:]}", flush=True)
    print(f"{time.monotonic() - total:6.1f}s total, {len(failed)} failed {failed or ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
