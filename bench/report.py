"""Turn a pytest-benchmark JSON file into a Markdown table and a PNG chart of the ratios.

Usage: ``python bench/report.py bench/results/latest.json [--out bench/results]``
(``make bench`` runs it).  Each benchmark tags itself (``benchkit.tag``) with its
group, who it measures, the number of operations in one round, and whether it
is its group's reference.  Figures are per operation: the median round divided
by that number.  Ratios compare each case with the reference of its group,
measured in the same run on the same machine, so they hold across machines
better than the times do.  The issue's targets are checked at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import GROUPS


@dataclass
class Row:
    group: str
    impl: str
    label: str
    per_op: float  # seconds per operation (median round / ops)
    spread: float  # interquartile range / median
    rounds: int
    ref: bool
    note: str = ""
    paired: float | None = None  # median per-round ratio to the reference timed just before
    ratio: float = math.nan  # the paired ratio when measured, else per_op / reference per_op
    ratio_of_medians: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)  # the case's extra_info


def load(paths: list[Path]) -> tuple[dict[str, list[Row]], dict[str, Any]]:
    """Rows by group (in GROUPS order) and the first run's metadata.

    Several files (the legs of one ``make bench``) merge; a case measured in
    more than one keeps its first measurement."""
    datas = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    groups: dict[str, list[Row]] = {}
    seen: set[tuple[str, str]] = set()
    for b in (b for data in datas for b in data["benchmarks"]):
        info = b.get("extra_info", {})
        if "ops" not in info or b.get("group") not in GROUPS:
            continue
        if (b["group"], info["impl"]) in seen:
            continue
        seen.add((b["group"], info["impl"]))
        stats = b["stats"]
        median = stats["median"]
        groups.setdefault(b["group"], []).append(
            Row(
                group=b["group"],
                impl=info["impl"],
                label=info["label"],
                per_op=median / info["ops"],
                spread=stats["iqr"] / median if median else math.nan,
                rounds=stats["rounds"],
                ref=bool(info.get("ref")),
                note=str(info.get("note", "")),
                paired=info.get("paired_ratio"),
                info=info,
            )
        )
    for rows in groups.values():
        refs = [r for r in rows if r.ref]
        for r in rows:
            r.ratio_of_medians = r.per_op / refs[0].per_op if refs else math.nan
            r.ratio = 1.0 if r.ref else r.paired if r.paired is not None else r.ratio_of_medians
        rows.sort(key=lambda r: (0.0 if math.isnan(r.ratio) else r.ratio, r.per_op))
    ordered = {g: groups[g] for g in GROUPS if g in groups}
    return ordered, datas[0]


def fmt_time(seconds: float) -> str:
    """A per-operation time with a unit a reader takes in at a glance."""
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.2f} ms"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:,.2f} µs"
    return f"{seconds * 1e9:,.1f} ns"


def fmt_ratio(ratio: float) -> str:
    if math.isnan(ratio):
        return "–"
    return f"{ratio:.2f}×" if ratio < 100 else f"{ratio:,.0f}×"


def machine(data: dict[str, Any]) -> str:
    """The machine the run measured, as the README names it."""
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {})
    brand = cpu.get("brand_raw") or mi.get("processor") or mi.get("machine", "?")
    count = cpu.get("count", "?")
    return (
        f"{brand}, {count} cores, {mi.get('system', '?')} {mi.get('release', '')}; "
        f"{mi.get('python_implementation', 'Python')} {mi.get('python_version', '?')}"
    ).strip()


# --------------------------------------------------------------------- targets


@dataclass
class Target:
    """One target of issue 13: a ratio between two cases of one group and its limit
    (or, with ``versus`` empty, the case's time per operation in seconds, or with
    ``metric`` the time in seconds its benchmark recorded under that name)."""

    text: str
    group: str
    impl: str
    versus: str
    limit: float
    at_most: bool = True  # False: the ratio must be at least the limit
    invert: bool = False  # compare versus/impl (a throughput) instead of impl/versus
    metric: str = ""  # a time in the case's extra_info instead of its time per op

    def shown(self, value: float) -> str:
        return fmt_time(value) if not self.versus else f"{value:.2f}"


def _contended_targets() -> list[Target]:
    targets = [
        Target(
            "2 threads on a pool of 1, CPU work: compiled ≤ 2× SimpleQueue's time per pair",
            "pool-contended-cpu-2",
            "ppp-cython",
            "SimpleQueue",
            2.0,
        )
    ]
    for work, what in (("cpu", "CPU work"), ("nogil", "GIL-releasing work")):
        for n in (8, 32):
            targets.append(
                Target(
                    f"{n} threads on {n // 2}, {what}: compiled ≤ 1.5× SimpleQueue's time per pair",
                    f"pool-contended-{work}-{n}",
                    "ppp-cython",
                    "SimpleQueue",
                    1.5,
                )
            )
    return targets


TARGETS = [
    Target(
        "Pool get+ret, 1 thread, compiled ≤ 1.5× SimpleQueue get+put",
        "pool-pair",
        "ppp-cython",
        "SimpleQueue",
        1.5,
    ),
    Target(
        "Pool get+ret, 1 thread, pure ≤ 0.25× ProxyPatternPool 11.6",
        "pool-pair",
        "ppp-python",
        "ProxyPatternPool",
        0.25,
    ),
    *_contended_targets(),
    Target(
        "Proxy read, shared object, compiled ≤ 3.5× a direct read",
        "proxy-read-shared",
        "ppp-cython",
        "direct",
        3.5,
    ),
    Target(
        "Proxy read, per-thread pooled object, compiled ≤ 7× a direct read",
        "proxy-read-pooled",
        "ppp-cython",
        "direct",
        7.0,
    ),
    Target(
        "Proxy read, VERSATILE from a plain thread, compiled ≤ 20× a direct read",
        "proxy-read-versatile",
        "ppp-cython",
        "direct",
        20.0,
    ),
    Target(
        "Housekeeping round, 10,000 idle objects none expiring, compiled ≤ 15 ns per object",
        "pool-expiry-scan",
        "ppp-cython",
        "",
        15e-9,
    ),
    *(
        Target(
            f"get+ret in another thread while stats() runs over 1,000,000 objects, {twin}: "
            "longest stall (median of the rounds) ≤ 5 ms",
            "pool-stats-stall",
            impl,
            "",
            5e-3,
            metric="stall",
        )
        for impl, twin in (("ppp-cython", "compiled"), ("ppp-python", "pure"))
    ),
]


def check_targets(groups: dict[str, list[Row]]) -> list[tuple[Target, float | None, bool | None]]:
    results: list[tuple[Target, float | None, bool | None]] = []
    for t in TARGETS:
        by_impl = {r.impl: r for r in groups.get(t.group, [])}
        a, b = by_impl.get(t.impl), by_impl.get(t.versus)
        if a is None or (t.versus and b is None) or (t.metric and t.metric not in a.info):
            results.append((t, None, None))
            continue
        if t.metric:  # an absolute limit on a time the benchmark recorded
            value = float(a.info[t.metric])
        elif b is None:  # an absolute limit: time per operation
            value = a.per_op
        elif t.invert:
            value = b.ratio / a.ratio
        else:
            value = a.ratio / b.ratio
        met = value <= t.limit if t.at_most else value >= t.limit
        results.append((t, value, met))
    return results


# --------------------------------------------------------------------- outputs


def summary(groups: dict[str, list[Row]]) -> list[str]:
    """One line per group: the reference, both twins, and the best peer, as ratios."""
    lines = [
        "| case | reference | ppp compiled | ppp pure | best peer |",
        "|---|---:|---:|---:|---|",
    ]
    for group, rows in groups.items():
        refs = [r for r in rows if r.ref]
        by_impl = {r.impl: r for r in rows}
        peers = [
            r for r in rows if not r.ref and not r.impl.startswith(("ppp-", "direct", "bare-"))
        ]

        def cell(impl: str, by_impl: dict[str, Row] = by_impl) -> str:
            r = by_impl.get(impl)
            return "–" if r is None else f"{fmt_time(r.per_op)} ({fmt_ratio(r.ratio)})"

        ref = f"{refs[0].label}: {fmt_time(refs[0].per_op)}" if refs else "–"
        if group == "proxy-churn":  # the target is the case that forgets _ret_obj()
            compiled, pure = cell("ppp-cython:noret"), cell("ppp-python:noret")
        else:
            compiled, pure = cell("ppp-cython"), cell("ppp-python")
        best = min(peers, key=lambda r: r.ratio, default=None)
        peer = "–" if best is None else f"{best.label}: {fmt_ratio(best.ratio)}"
        if group == "pool-options":
            continue  # one line per option would not fit; see its own table
        lines.append(f"| {GROUPS[group][0]} | {ref} | {compiled} | {pure} | {peer} |")
    return lines


def markdown(groups: dict[str, list[Row]], data: dict[str, Any], chart: str | None) -> str:
    commit = data.get("commit_info", {})
    lines = [
        "# ppp benchmarks",
        "",
        f"Machine: {machine(data)}.  ",
        f"Run: {data.get('datetime', '?')}, commit {str(commit.get('id', '?'))[:10]}"
        + (" (dirty)" if commit.get("dirty") else "")
        + f", pytest-benchmark {data.get('version', '?')}.",
        "",
        "Times are medians per operation (a round is a loop of many operations; "
        "contended cases are wall time over all threads divided by the pairs done). "
        "The ratio compares each case with its group's reference (**bold**), measured "
        "in the same run: for single-thread loops and thread churn it is *paired*, the "
        "median over rounds of the round's time over the reference's timed just before "
        "it, which cancels the drift of this shared machine's load; the ratio of the two "
        "medians is shown beside it. Spread is the interquartile range of the rounds "
        "over their median. Targets compare paired ratios.",
        "",
    ]
    if chart:
        lines += [f"![ratios]({chart})", ""]
    lines += ["## Targets", "", "| target | measured | limit | met |", "|---|---:|---:|---|"]
    for t, value, met in check_targets(groups):
        sign = "≤" if t.at_most else "≥"
        shown = "not measured" if value is None else t.shown(value)
        verdict = "–" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {t.text} | {shown} | {sign} {t.shown(t.limit)} | {verdict} |")
    lines += ["", "## Summary", "", "Time per operation, and ratio to the group's reference.", ""]
    lines += summary(groups)
    lines.append("")
    for group, rows in groups.items():
        title, unit = GROUPS[group]
        lines += [
            f"## {title}",
            "",
            f"`{group}`: {unit}.",
            "",
        ]
        notes = any(r.note for r in rows)
        lines += [
            "| case | time per op | ratio | ratio of medians | spread | rounds |"
            + (" note |" if notes else ""),
            "|---|---:|---:|---:|---:|---:|" + ("---|" if notes else ""),
        ]
        for r in rows:
            label = f"**{r.label}**" if r.ref else r.label
            lines.append(
                f"| {label} | {fmt_time(r.per_op)} | {fmt_ratio(r.ratio)} | "
                f"{fmt_ratio(r.ratio_of_medians)} | {r.spread:.0%} | {r.rounds} |"
                + (f" {r.note} |" if notes else "")
            )
        lines.append("")
    return "\n".join(lines)


def color(impl: str, ref: bool) -> str:
    if ref:
        return "#999999"
    if impl.startswith("ppp-cython"):
        return "#1f4e9c"
    if impl.startswith("ppp-python"):
        return "#6fa8dc"
    return "#e69138"


def chart(groups: dict[str, list[Row]], data: dict[str, Any], path: Path) -> None:
    """One panel per group: each case's ratio to the reference, on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    ncols = 2
    nrows = math.ceil(len(names) / ncols)
    heights = [
        max(len(groups[n]) for n in names[i * ncols : (i + 1) * ncols]) for i in range(nrows)
    ]
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(15, 0.28 * sum(heights) + 1.1 * nrows + 1),
        gridspec_kw={"height_ratios": [h + 2 for h in heights]},
        squeeze=False,
    )
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        rows = groups[name][::-1]  # fastest on top
        ratios = [r.ratio if not math.isnan(r.ratio) else 1.0 for r in rows]
        ax.barh(
            range(len(rows)),
            ratios,
            color=[color(r.impl, r.ref) for r in rows],
        )
        ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize=8)
        ax.set_xscale("log")
        ax.axvline(1.0, color="black", linewidth=0.6)
        for i, (r, x) in enumerate(zip(rows, ratios, strict=True)):
            ax.text(x, i, f" {fmt_ratio(r.ratio)}  {fmt_time(r.per_op)}", va="center", fontsize=7)
        ax.set_xlim(min(ratios + [1.0]) / 1.5, max(ratios + [1.0]) * 12)
        ax.set_title(GROUPS[name][0].replace("`", ""), fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(
        f"ppp: time per operation relative to each group's reference (grey)\n{machine(data)}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.975))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "json", type=Path, nargs="+", help="pytest-benchmark JSON files (--benchmark-json)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-chart", action="store_true", help="write the table only")
    args = parser.parse_args(argv)
    groups, data = load(args.json)
    if not groups:
        print(
            f"{args.json}: no tagged benchmarks (was it run with --benchmark-disable?)",
            file=sys.stderr,
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    png = None
    if not args.no_chart:
        png = "bench.png"
        chart(groups, data, args.out / png)
    md = args.out / "bench.md"
    md.write_text(markdown(groups, data, png), encoding="utf-8")
    print(f"wrote {md}" + (f" and {args.out / png}" if png else ""))
    for t, value, met in check_targets(groups):
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        shown = "" if value is None else f" ({t.shown(value)}, limit {t.shown(t.limit)})"
        print(f"  {verdict:12} {t.text}{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
