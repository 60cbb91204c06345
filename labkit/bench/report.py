"""A bench run as a rich table, `results.json` and an HTML report with plotly charts."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go
from rich.console import Group
from rich.table import Table

from labkit.bench.layers import PIPELINE, RAW, TRANSPORT

LAYERS = (RAW, TRANSPORT, PIPELINE)


def tables(results: dict) -> Group:
    """Throughput and latency per layer; then the ratios and the scaling curve per lane."""
    layers = Table("lane", "layer", "msgs/s", "spread", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                   title=_machine_line(results["machine"]))
    summary = Table("lane", "transport / raw", "pipeline / raw", "raw / ceiling", "scaling (bookings/s)")
    for lane, r in results["lanes"].items():
        layers.add_row(lane, "ceiling", _n(r["ceiling"]["per_s"]))
        for layer in LAYERS:
            if layer in r["layers"]:
                m = r["layers"][layer]
                lat = m["latency"]
                layers.add_row("", layer, _n(m["throughput"]["median"]),
                               f"±{m['throughput']['spread'] / 2:.0%}",
                               *(f"{lat[k]:.1f}" for k in ("p50_ms", "p99_ms", "p99.9_ms", "max_ms")),
                               end_section=layer == LAYERS[-1])
        scaling = " → ".join(f"{p['workers']}w {p['per_s']:.1f}" for p in r["scaling"])
        summary.add_row(lane, *(_pct(r["ratios"][k]) for k in
                                ("transport_vs_raw", "pipeline_vs_raw", "raw_vs_ceiling")), scaling)
    return Group(layers, summary)


def throughput_figure(results: dict) -> go.Figure:
    fig = go.Figure(layout={"title": "Max-rate throughput (median of runs, bars show min–max)",
                            "barmode": "group", "yaxis": {"type": "log", "title": "msgs/s"}})
    lanes = list(results["lanes"])
    ceilings = [results["lanes"][lane]["ceiling"]["per_s"] for lane in lanes]
    fig.add_bar(name="ceiling", x=lanes, y=ceilings)
    for layer in LAYERS:
        runs = [results["lanes"][lane]["layers"].get(layer, {}).get("throughput") for lane in lanes]
        medians = [r["median"] if r else None for r in runs]
        fig.add_bar(name=layer, x=lanes, y=medians, error_y={
            "type": "data", "symmetric": False,
            "array": [max(r["runs"]) - r["median"] if r else 0 for r in runs],
            "arrayminus": [r["median"] - min(r["runs"]) if r else 0 for r in runs]})
    return fig


def latency_figure(results: dict) -> go.Figure:
    fig = go.Figure(layout={"title": "End-to-end latency at a fixed rate, from the intended send time",
                            "yaxis": {"type": "log", "title": "ms"}})
    for lane, r in results["lanes"].items():
        for layer, m in r["layers"].items():
            lat = m["latency"]
            fig.add_scatter(name=f"{lane} · {layer} @ {lat['rate_per_s']:.0f}/s", mode="lines+markers",
                            x=["p50", "p99", "p99.9", "max"],
                            y=[lat[k] for k in ("p50_ms", "p99_ms", "p99.9_ms", "max_ms")])
    return fig


def scaling_figure(results: dict) -> go.Figure:
    fig = go.Figure(layout={"title": "Scaling curve: worker processes, I/O-bound steps",
                            "xaxis": {"title": "worker processes", "type": "log"},
                            "yaxis": {"title": "bookings/s"}})
    for lane, r in results["lanes"].items():
        fig.add_scatter(name=lane, mode="lines+markers", x=[p["workers"] for p in r["scaling"]],
                        y=[p["per_s"] for p in r["scaling"]])
    return fig


def write(results: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2))
    figures = [throughput_figure(results), latency_figure(results), scaling_figure(results)]
    charts = "\n".join(fig.to_html(full_html=False, include_plotlyjs=i == 0)  # plotly.js once, inline
                       for i, fig in enumerate(figures))
    html_path = out_dir / "report.html"
    html_path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>labkit bench</title></head><body>"
        f"<h1>labkit bench</h1><p>{_machine_line(results['machine'])}</p>{charts}"
        f"<h2>Raw results</h2><pre>{json.dumps(results, indent=2)}</pre></body></html>")
    return json_path, html_path


def _machine_line(machine: dict) -> str:
    clients = ", ".join(f"{k} {v}" for k, v in machine["clients"].items() if v)
    load = " / ".join(f"{x:.1f}" for x in machine["load_average"])
    return (f"{machine['cores']} cores (load {load}), Python {machine['python']}, "
            f"Redis {machine['redis']}, Kafka {machine['kafka']}; {clients}")


def _n(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"
