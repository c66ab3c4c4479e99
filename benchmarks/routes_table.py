"""Turn ``bench_routes.py``'s JSON into the markdown route table of BENCHMARKS.md.

Run::

    python benchmarks/routes_table.py benchmarks/results_routes.json

Columns: the row (size, route asked for, the path that ran), the seconds of
each operation with, in parentheses, the ratio to the complete-grid route of
the same shape, the route the cost model chooses with default settings on the
same data, whether the LML is exact (or its stated standard error), the
relative difference to the exact LML of the same data, and the load average
when the row started. ``>T`` marks an operation cut by the row's timeout;
``-`` one not run (see the notes under the table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OPS = ("fit_s", "lml_grad_s", "predict_s")


def _sec(x: float) -> str:
    if x < 0.01:
        return f"{x * 1e3:.1f} ms"
    if x < 10:
        return f"{x:.2f}"
    return f"{x:.0f}"


def _cell(row: dict[str, Any], op: str) -> str:
    if op == "opt":
        opt = row.get("opt")
        if not isinstance(opt, dict):
            if "opt_timeout" in row:
                return f"> {row['opt_timeout']:.0f}"
            return "skipped" if "opt_skipped" in row else "-"
        text = f"{_sec(opt['seconds'])} [{opt['evaluations']}]"
        if opt.get("at_start"):
            text += " stuck at start"
        ratio = row.get("opt_ratio")
    else:
        name = op[: -len("_s")]
        if op not in row:
            if f"{name}_timeout" in row:
                return f"> {row[f'{name}_timeout']:.0f}"
            return "-"
        text = _sec(row[op])
        ratio = row.get(f"{name}_ratio")
    if ratio is not None and row["route"] != "complete":
        text += f" ({ratio:.3g}x)"
    return text


def _exact(row: dict[str, Any]) -> str:
    err = row.get("lml_std_error")
    if err is None:
        return "-"
    return "exact" if err == 0 else f"est. +-{err:.2g}"


def _auto(rows: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    out = {}
    for r in rows:
        if isinstance(r.get("auto"), dict):
            out[(r["size"], r.get("variant", ""))] = r["auto"]["path"]
    return out


def table(record: dict[str, Any]) -> str:
    """Return the markdown table (and its notes) of one results record."""
    rows = record["rows"]
    auto = _auto(rows)
    lines = [
        "| grid | data | route asked | path run | fit (s) | first LML read (s) "
        "| LML+grad (s) | predict std (s) | optimisation (s) [evals] "
        "| cost model picks | LML | vs exact LML | load |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    notes: list[str] = []
    dense = [r for r in rows if r["route"] == "dense"]
    for r in rows:
        if r["route"] == "dense":
            continue
        cells = [_cell(r, op) for op in (*OPS, "opt")]
        read = r.get("lml_read_s")
        cells.insert(
            1,
            _sec(read)
            if read is not None
            else (f"> {r['lml_read_timeout']:.0f}" if "lml_read_timeout" in r else "-"),
        )
        diff = r.get("lml_rel_diff_vs_exact")
        variant = r.get("variant", "")
        if r.get("n_missing"):
            variant += f" ({r['n_missing']:,} NaN)"
        lines.append(
            f"| {r['size']} | {variant} | {r['route']} | {r.get('path', '-')} | "
            + " | ".join(cells)
            + f" | {auto.get((r['size'], r.get('variant', '')), '-')} | {_exact(r)} | "
            + (f"{diff:.1e}" if diff is not None else "-")
            + f" | {r['load'][0]:.1f} |"
        )
        if "note" in r:
            notes.append(f"{r['size']} {r['route']}: {r['note']}")
        if "opt_skipped" in r:
            notes.append(
                f"{r['size']} {r['route']}: optimisation skipped ({r['opt_skipped']})."
            )
        if "skipped" in r:
            notes.append(f"{r['size']} {r['route']}: not run ({r['skipped']}).")
        if "timeout_s" in r:
            notes.append(
                f"{r['size']} {r['route']}: the row's process was stopped after "
                f"{r['timeout_s']:.0f} s; the operations after the last one shown "
                "did not run."
            )
        if "error" in r:
            last = r["error"].strip().splitlines()[-1]
            notes.append(f"{r['size']} {r['route']}: error `{last[:200]}`.")
    for d in dense:
        lines.append(
            f"| {d['size']} | dense GP on the {d['n_observed']:,} observed cells | "
            f"dense (NumPy Cholesky) | - | {_sec(d['fit_s'])} | - | - | "
            f"{_sec(d['predict_s'])} | - | - | exact | - | {d['load'][0]:.1f} |"
        )
    out = "\n".join(lines)
    if notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return out + "\n"


def targets(record: dict[str, Any]) -> str:
    """Return the numbers behind issue 11's targets, one bullet each."""
    rows = record["rows"]
    auto = _auto(rows)
    out = []
    for d in (r for r in rows if r["route"] == "dense"):
        size = d["size"]
        out.append(
            f"- {size}, dense GP on the observed cells: fit {d['fit_s']:.2f} s + "
            f"predict std {d['predict_s']:.2f} s = {d['fit_predict_s']:.2f} s "
            f"(cost model picks {auto.get((size, 'missing'), '-')})"
        )
        for r in rows:
            if r["size"] == size and r.get("variant") == "missing" and "fit_s" in r:
                if "predict_s" in r:
                    total = r["fit_s"] + r["predict_s"]
                    out.append(
                        f"  - {r['route']}: fit + predict std {total:.2f} s = "
                        f"{total / d['fit_predict_s']:.2g}x dense"
                    )
                else:
                    out.append(f"  - {r['route']}: predict std did not finish")
    diffs = [
        (r["lml_rel_diff_vs_exact"], r["size"], r["route"])
        for r in rows
        if r.get("lml_std_error") == 0 and "lml_rel_diff_vs_exact" in r
    ]
    if diffs:
        worst = max(diffs)
        out.append(
            f"- exact routes: largest relative LML difference to the exact reference "
            f"{worst[0]:.1e} ({worst[1]} {worst[2]})"
        )
    for r in rows:
        opt = r.get("opt")
        if not isinstance(opt, dict) or r.get("variant") not in ("missing", "complete"):
            continue
        ratio = r.get("opt_ratio")
        out.append(
            f"- {r['size']} {r['route']} ({r.get('variant')}): optimisation "
            f"{opt['seconds']:.1f} s, {opt['evaluations']} evaluations"
            + (f", {ratio:.2g}x the complete grid's" if ratio else "")
            + f", LML {opt['lml']:.3f}"
            + (
                " exact"
                if opt["lml_std_error"] == 0
                else f" +- {opt['lml_std_error']:.2g}"
            )
            + (" (stopped at the start)" if opt.get("at_start") else "")
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print the table of the JSON file given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results_routes.json")
    args = parser.parse_args(argv)
    record = json.loads(Path(args.results).read_text())
    print(table(record))
    print(targets(record))


if __name__ == "__main__":
    main()
