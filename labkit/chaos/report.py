"""The matrix as a rich table, as JSON, and as an HTML page of plotly charts (build/chaos/)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from rich.table import Table

from labkit.chaos.runner import Outcome

HEADERS = {"accepted": "acc", "refused": "refused", "completed": "done", "rejected": "rej",
           "dead_lettered": "DLQ", "in_flight": "flying", "lost": "lost", "lost_explained": "lost AOF",
           "duplicate_charges": "dup $", "charged_not_completed": "$ kept", "overbooked_room_nights": "overbk",
           "confirmations_not_completed": "bad conf", "recovery_s": "recov s", "p99_latency_s": "p99 s",
           "p99_clean_s": "clean p99 s", "p99_vs_clean": "p99 ×clean"}
COLUMNS = ("accepted", "refused", "completed", "rejected", "dead_lettered", "in_flight", "lost",
           "lost_explained", "duplicate_charges", "charged_not_completed",
           "overbooked_room_nights", "confirmations_not_completed", "recovery_s", "p99_latency_s",
           "p99_clean_s", "p99_vs_clean")
DEFECTS = ("duplicate_charges", "charged_not_completed", "overbooked_room_nights",
           "confirmations_not_completed")


def table(outcomes: list[Outcome]) -> Table:
    grid = Table(title="labkit chaos — judged by the independent ledger")
    grid.add_column("scenario")
    grid.add_column("lane")
    for name in COLUMNS:
        grid.add_column(HEADERS[name], justify="right")
    grid.add_column("verdict")
    for outcome in outcomes:
        for v in outcome.verdicts:
            row = v.as_dict()
            cells = ["" if row[c] is None else f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c])
                     for c in COLUMNS]
            grid.add_row(outcome.scenario, v.lane, *cells,
                         "[green]clean[/]" if v.clean else "[red]DEFECT[/]")
    return grid


def as_json(outcomes: list[Outcome], *, bookings: int | None) -> dict:
    return {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bookings": bookings or "CI-sized",
        "clean": all(o.clean for o in outcomes),
        "scenarios": [o.as_dict() for o in outcomes],
    }


def write(outcomes: list[Outcome], out_dir: Path, *, bookings: int | None) -> tuple[Path, Path]:
    """chaos.json and chaos.html in `out_dir`; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = as_json(outcomes, bookings=bookings)
    json_path, html_path = out_dir / "chaos.json", out_dir / "chaos.html"
    json_path.write_text(json.dumps(data, indent=2))
    figures = [_matrix_figure(outcomes)]
    if any(v.p99_clean_s is not None for o in outcomes for v in o.verdicts):
        figures.append(_baseline_figure(outcomes))
    if any("retries_at_s" in o.figures for o in outcomes):
        figures.append(_retry_figure(outcomes))
    body = "\n".join(f.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False)
                     for i, f in enumerate(figures))
    html_path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>labkit chaos</title></head>"
        f"<body><h1>labkit chaos</h1><p>{data['machine']} — {data['at']} — "
        f"{'clean' if data['clean'] else 'DEFECTS FOUND'}</p>{body}</body></html>"
    )
    return json_path, html_path


def _matrix_figure(outcomes: list[Outcome]) -> go.Figure:
    """Per scenario and lane: completed / rejected / dead-lettered / lost, and the defects."""
    labels = [f"{o.scenario}<br>{v.lane}" for o in outcomes for v in o.verdicts]
    verdicts = [v for o in outcomes for v in o.verdicts]
    fig = make_subplots(rows=2, cols=1, subplot_titles=("what became of each accepted booking",
                                                         "defects (must be zero)"))
    for name in ("completed", "rejected", "dead_lettered", "in_flight", "lost"):
        fig.add_bar(x=labels, y=[getattr(v, name) for v in verdicts], name=name, row=1, col=1)
    for name in DEFECTS:
        fig.add_bar(x=labels, y=[getattr(v, name) for v in verdicts], name=name, row=2, col=1)
    fig.update_layout(barmode="stack", height=800)
    return fig


def _baseline_figure(outcomes: list[Outcome]) -> go.Figure:
    """p99 of a clean batch beside the p99 under the fault, same run, per lane."""
    rows = [(f"{o.scenario}<br>{v.lane}", v) for o in outcomes for v in o.verdicts if v.p99_clean_s is not None]
    fig = go.Figure()
    fig.add_bar(x=[label for label, _ in rows], y=[v.p99_clean_s for _, v in rows], name="clean batch")
    fig.add_bar(x=[label for label, _ in rows], y=[v.p99_latency_s for _, v in rows], name="under the fault",
                text=[f"{v.p99_vs_clean}×" if v.p99_vs_clean is not None else "" for _, v in rows])
    fig.update_layout(title="p99 latency (accepted → finished): clean run vs under the fault",
                      yaxis_title="seconds", barmode="group")
    return fig


def _retry_figure(outcomes: list[Outcome]) -> go.Figure:
    """Retries that began per quarter second after the outage began, every run that measured
    them (with jitter, and the run without): jitter spreads the storm out."""
    fig = go.Figure()
    for outcome in outcomes:
        for name, times in outcome.figures.get("retries_at_s", {}).items():
            peak = outcome.figures.get("peak_retries_per_s", {}).get(name)
            fig.add_histogram(x=times, name=f"{name} (peak {peak}/s)", xbins={"size": 0.25}, opacity=0.6)
    fig.update_layout(title="payment outage: retries over time, with and without jitter (measured)",
                      xaxis_title="seconds after the outage began", yaxis_title="retries per 0.25 s",
                      barmode="overlay")
    return fig
