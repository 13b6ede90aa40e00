"""The statistics behind the paper's figures (SPEC.md §6), as SQL plus a readable report.

``spatialvid stats`` runs the queries below against the warehouse and writes PNG plots
and a Markdown and an HTML summary into one folder:

- the funnel from crawled hours to HQ hours (videos -> clips -> scored -> passed ->
  annotated -> captioned -> HQ);
- the motion-direction (MotionTrends) distribution, full set vs HQ set;
- the tag distributions (scene type with its second level, time of day, weather,
  crowd density, lighting);
- histograms of aesthetic, luminance, motion, rotAngle, moveDist and trajTurns for the
  full set, the HQ set and any comparison set;
- caption lengths in words (OptCamMotion, SceneSummary, ShotImmersion; the paper
  reports means of 50.3, 28.6 and 89.7).

Every query reads the latest row per clip (``argMax`` over the row's timestamp, kept
at insert time in ``clip_latest``: see :func:`latest_sql`), takes
its sets as tables of ``clip_id`` and binds every value as a parameter. ``QueryFn`` is
any function ``(sql, parameters) -> {"columns", "rows"}``, so the same code runs in the
owning process, through the owner's endpoint, or against a ClickHouse server.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

QueryFn = Callable[[str, dict[str, Any] | None], dict[str, Any]]

#: Metric -> (source, column, low edge, high edge, bins). Sources are latest-per-clip
#: subqueries (see :func:`latest_sql`).
METRICS: dict[str, tuple[str, str, float, float, int]] = {
    "aesthetic": ("scores", "aesthetic", 2.0, 8.0, 30),
    "luminance": ("scores", "luminance_mean", 0.0, 255.0, 32),
    "motion": ("scores", "motion", 0.0, 20.0, 40),
    "rot_angle": ("annotations", "rot_angle", 0.0, 10.0, 40),
    "move_dist": ("annotations", "move_dist", 0.0, 5.0, 40),
    "traj_turns": ("annotations", "traj_turns", 0.0, 10.0, 10),
}
TAGS = ("scene_type_first", "time_of_day", "weather", "crowd_density", "lighting")
CAPTION_FIELDS = {"opt_cam_motion": 50.3, "scene_summary": 28.6, "shot_immersion": 89.7}
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


#: Source -> (flag column of ``clip_latest``, column -> state column). The flag counts the
#: clip's rows of that kind (scores, successful annotations, captions).
LATEST: dict[str, tuple[str, dict[str, str]]] = {
    "scores": ("score_rows", {c: f"s_{c}" for c in (
        "video_id", "duration_s", "aesthetic", "luminance_mean", "ocr_ratio", "motion", "passed")}),
    "annotations": ("ann_rows", {c: f"a_{c}" for c in (
        "move_dist", "rot_angle", "traj_turns", "dist_level", "motion_trends", "dynamic_ratio")}),
    "clean_annotations": ("clean_rows", {c: f"n_{c}" for c in (
        "move_dist", "rot_angle", "traj_turns", "dist_level", "motion_trends")}),
    "captions": ("caption_rows", {**{c: f"c_{c}" for c in TAGS + ("scene_type_second", "motion_trends")},
                                  **{f"{f}_words": f"c_{f}_words" for f in CAPTION_FIELDS}}),
}


def latest_sql(db: str, source: str) -> str:
    """The latest row per clip of a record table, as a subquery.

    Reads ``clip_latest`` (schemas/views.sql), which materialized views keep at insert
    time: the clip's newest row, the same values as ``argMax((columns...), <table's
    timestamp>) ... GROUP BY clip_id`` over the record table (scores; successful annotations; successful non-anomalous
    ones for ``clean_annotations``; captions), without grouping millions of clip ids
    on every read. Caption texts are kept as word counts (``<field>_words``, -1 when
    the text is empty).
    """
    if source not in LATEST:
        raise ValueError(f"unknown source {source!r}")
    flag, cols = LATEST[source]
    return (f"(SELECT clip_id, {', '.join(f'{s} AS {c}' for c, s in cols.items())} "
            f"FROM {db}.clip_latest FINAL WHERE {flag} > 0)")


def latest_groupby_sql(db: str, source: str) -> str:
    """The defining GROUP BY of :func:`latest_sql` over the record table (for checks)."""
    if source == "scores":
        cols, ts, table, where = LATEST[source][1], "scored_at", "clip_scores", ""
    elif source in ("annotations", "clean_annotations"):
        cols, ts, table = LATEST[source][1], "annotated_at", "clip_annotations"
        where = " WHERE success" + (" AND NOT ifNull(anomaly, false)" if source == "clean_annotations" else "")
    elif source == "captions":
        cols, ts, table, where = LATEST[source][1], "captioned_at", "clip_captions", ""
    else:
        raise ValueError(f"unknown source {source!r}")

    def expr(c: str) -> str:
        if c.endswith("_words"):
            f = c[: -len("_words")]
            return f"if(empty({f}), -1, toInt64({c}))"  # the record counts its words once
        return c

    # The whole newest row: argMax of a tuple (argMax of a Nullable column alone would skip
    # NULLs and mix an older row's value into the newest row).
    row = f"argMax(({', '.join(expr(c) for c in cols)}), {ts})"
    return (f"(SELECT clip_id, {', '.join(f'r.{i} AS {c}' for i, c in enumerate(cols, 1))} "
            f"FROM (SELECT clip_id, {row} AS r FROM {db}.{table}{where} GROUP BY clip_id))")


def check_table(name: str) -> str:
    """A table name safe to place in SQL (identifiers cannot be bound as parameters)."""
    if not _TABLE.match(name):
        raise ValueError(f"{name!r} is not a table name (db.table or table)")
    return name


def _in_set(table: str | None) -> str:
    return "" if table is None else f" WHERE clip_id IN (SELECT clip_id FROM {check_table(table)})"


def funnel_sql(db: str, hq_table: str | None) -> str:
    """One row per funnel step: step, clips, hours (from crawled video hours to HQ hours).

    One pass over ``clip_latest``: the latest score of every clip, and whether it has a
    successful annotation and a caption (the row counts kept beside the tuples).
    """
    hq = (f"(SELECT count(), sum(duration_s) / 3600 FROM {check_table(hq_table)})" if hq_table
          else "(SELECT toUInt64(0), 0.0)")
    return f"""
WITH
    (SELECT (count(), sum(duration_s) / 3600) FROM {db}.videos) AS crawled,
    (SELECT (count(), sum(timestamp_end - timestamp_start) / 3600) FROM {db}.clips) AS clipped,
    (SELECT (count(), sum(duration_s) / 3600,
             countIf(passed), sumIf(duration_s, passed) / 3600,
             countIf(annotated), sumIf(duration_s, annotated) / 3600,
             countIf(captioned), sumIf(duration_s, captioned) / 3600)
     FROM (SELECT s_duration_s AS duration_s, s_passed AS passed,
                  ann_rows > 0 AS annotated, caption_rows > 0 AS captioned
           FROM {db}.clip_latest FINAL WHERE score_rows > 0)) AS sc,
    {hq} AS hq
SELECT step, toUInt64(c) AS clips, toFloat64(h) AS hours FROM (
    SELECT arrayJoin([
        ('crawled', crawled.1, crawled.2), ('clips', clipped.1, clipped.2), ('scored', sc.1, sc.2),
        ('passed', sc.3, sc.4), ('annotated', sc.5, sc.6), ('captioned', sc.7, sc.8), ('hq', hq.1, hq.2)
    ]) AS t, t.1 AS step, t.2 AS c, ifNull(t.3, 0) AS h
)"""


def histogram_sql(db: str, metric: str, table: str | None) -> str:
    """Counts per bin of ``metric`` (bins clamped to the edges) for a clip set."""
    source, col, lo, hi, bins = METRICS[metric]
    width = (hi - lo) / bins
    return (f"SELECT least(greatest(toInt64(floor(({col} - {lo}) / {width})), 0), {bins - 1}) AS bin, count() "
            f"FROM {latest_sql(db, source)}{_in_set(table)} {'AND' if table else 'WHERE'} {col} IS NOT NULL "
            f"GROUP BY bin ORDER BY bin")


def motion_direction_sql(db: str, table: str | None) -> str:
    """Clips per motion trend (a clip with several trends counts once for each)."""
    return (f"SELECT trend, count() AS clips FROM {latest_sql(db, 'annotations')} "
            f"ARRAY JOIN motion_trends AS trend{_in_set(table)} GROUP BY trend ORDER BY clips DESC, trend")


def tag_sql(db: str, tag: str, table: str | None) -> str:
    """Clips per value of a caption tag (scene type also by its second level)."""
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}")
    second = ", scene_type_second" if tag == "scene_type_first" else ", ''"
    return (f"SELECT {tag} AS value{second} AS second, count() AS clips FROM {latest_sql(db, 'captions')}"
            f"{_in_set(table)} GROUP BY value, second ORDER BY clips DESC, value, second")


def caption_length_sql(db: str, table: str | None) -> str:
    """Per caption field: mean words and how many captions have each word count (the
    counts, not the millions of lengths: the figure bins them in 5s)."""
    parts = [f"SELECT '{f}' AS field, avg({f}_words) AS mean_words, "
             f"sumMap([{f}_words], [toUInt64(1)]) AS lengths FROM {latest_sql(db, 'captions')}"
             f"{_in_set(table)} {'AND' if table else 'WHERE'} {f}_words >= 0" for f in CAPTION_FIELDS]
    return " UNION ALL ".join(parts)


@dataclass
class Report:
    """Everything ``spatialvid stats`` computed (also written as ``stats.json``)."""

    sets: dict[str, str | None]
    funnel: list[tuple[str, int, float]] = field(default_factory=list)
    motion: dict[str, dict[str, int]] = field(default_factory=dict)
    tags: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    scene_second: dict[str, dict[str, int]] = field(default_factory=dict)
    histograms: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    caption_means: dict[str, dict[str, float]] = field(default_factory=dict)
    caption_lengths: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)  # words -> captions


def compute(query: QueryFn, db: str, hq_table: str | None = None, compare: dict[str, str] | None = None) -> Report:
    """Run every statistics query. Sets: ``full`` (everything), ``hq`` and ``compare``."""
    sets: dict[str, str | None] = {"full": None}
    if hq_table:
        sets["hq"] = hq_table
    sets.update(compare or {})
    rep = Report(sets=sets)
    rep.funnel = [(str(s), int(c), float(h or 0)) for s, c, h in query(funnel_sql(db, hq_table), None)["rows"]]
    for name, table in sets.items():
        rep.motion[name] = {str(t): int(n) for t, n in query(motion_direction_sql(db, table), None)["rows"]}
        rep.tags[name] = {}
        for tag in TAGS:
            counts: dict[str, int] = {}
            for value, second, n in query(tag_sql(db, tag, table), None)["rows"]:
                counts[str(value)] = counts.get(str(value), 0) + int(n)
                if tag == "scene_type_first" and name == "full":
                    rep.scene_second.setdefault(str(value), {})[str(second) or "-"] = int(n)
            rep.tags[name][tag] = counts
        rep.histograms[name] = {}
        for metric, (_, _, _, _, bins) in METRICS.items():
            h = [0] * bins
            for b, n in query(histogram_sql(db, metric, table), None)["rows"]:
                h[int(b)] = int(n)
            rep.histograms[name][metric] = h
        rep.caption_means[name], rep.caption_lengths[name] = {}, {}
        for f, mean, lengths in query(caption_length_sql(db, table), None)["rows"]:
            rep.caption_means[name][str(f)] = float(mean) if mean == mean and mean is not None else 0.0
            rep.caption_lengths[name][str(f)] = {int(w): int(n) for w, n in zip(*lengths)}
    return rep


# -- rendering ------------------------------------------------------------------------
def _plt():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("`spatialvid stats` draws its plots with matplotlib: pip install 'spatialvid-stream[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _share(counts: dict[str, int]) -> dict[str, float]:
    t = sum(counts.values()) or 1
    return {k: v / t for k, v in counts.items()}


def render(rep: Report, out_dir: str | Path) -> dict[str, Path]:
    """Draw the figures into ``out_dir``; returns figure name -> PNG path."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}

    def save(fig: Any, name: str) -> None:
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figs[name] = path

    fig, ax = plt.subplots(figsize=(8, 4))
    steps = [s for s, _, _ in rep.funnel]
    ax.barh(steps[::-1], [h for _, _, h in rep.funnel][::-1], color="#4c72b0")
    for i, (_, c, h) in enumerate(rep.funnel[::-1]):
        ax.text(h, i, f" {h:.2f} h ({c} clips)", va="center", fontsize=8)
    ax.set_xlabel("hours")
    ax.set_title("Funnel: crawled hours to HQ hours")
    save(fig, "funnel")

    def grouped_bars(data: dict[str, dict[str, int]], title: str, name: str) -> None:
        keys = sorted({k for d in data.values() for k in d}, key=lambda k: -data.get("full", {}).get(k, 0))
        fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(keys) + 2), 4))
        width = 0.8 / max(len(data), 1)
        for i, (set_name, counts) in enumerate(data.items()):
            share = _share(counts)
            ax.bar([j + i * width for j in range(len(keys))], [share.get(k, 0) for k in keys], width, label=set_name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], keys, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("share of clips")
        ax.set_title(title)
        ax.legend()
        save(fig, name)

    grouped_bars(rep.motion, "Motion direction (MotionTrends)", "motion_direction")
    for tag in TAGS:
        grouped_bars({s: rep.tags[s][tag] for s in rep.sets}, f"Tag: {tag}", f"tag_{tag}")
    if rep.scene_second:  # the sunburst of the paper, as a two-ring pie
        fig, ax = plt.subplots(figsize=(6, 6))
        inner = {k: sum(v.values()) for k, v in rep.scene_second.items()}
        outer_labels, outer = [], []
        for k in inner:
            for s, n in sorted(rep.scene_second[k].items(), key=lambda kv: -kv[1]):
                outer_labels.append(s if n / max(sum(inner.values()), 1) > 0.03 else "")
                outer.append(n)
        ax.pie(list(inner.values()), labels=list(inner), radius=0.7, wedgeprops={"width": 0.35, "edgecolor": "w"},
               labeldistance=0.45, textprops={"fontsize": 8})
        ax.pie(outer, labels=outer_labels, radius=1.0, wedgeprops={"width": 0.3, "edgecolor": "w"},
               textprops={"fontsize": 7})
        ax.set_title("Scene type (inner) and second level (outer)")
        save(fig, "scene_type_sunburst")
    for metric, (_, _, lo, hi, bins) in METRICS.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        for set_name, hists in rep.histograms.items():
            h = hists[metric]
            t = sum(h) or 1
            ax.stairs([v / t for v in h], edges, label=f"{set_name} ({sum(h)})", fill=set_name == "full", alpha=0.6)
        ax.set_title(f"{metric}")
        ax.set_ylabel("share of clips")
        ax.legend(fontsize=8)
        save(fig, f"hist_{metric}")
    fig, axes = plt.subplots(1, len(CAPTION_FIELDS), figsize=(12, 3.5))
    for ax, (f, paper) in zip(axes, CAPTION_FIELDS.items()):
        for set_name, lengths in rep.caption_lengths.items():
            if lengths.get(f):
                ax.hist(list(lengths[f]), weights=list(lengths[f].values()), bins=range(0, 160, 5), alpha=0.6,
                        density=True, label=set_name)
        ax.axvline(paper, color="k", ls="--", lw=1, label=f"paper mean {paper}")
        ax.set_title(f"{f} (words)")
        ax.legend(fontsize=7)
    save(fig, "caption_lengths")
    return figs


def markdown(rep: Report, figs: dict[str, Path]) -> str:
    """The summary as Markdown (figures referenced by file name)."""
    lines = ["# SpatialVID statistics", "", "Sets: " + ", ".join(f"`{k}` = {v or 'every clip'}" for k, v in rep.sets.items()),
             "", "## Funnel", "", "| step | clips | hours |", "|---|---:|---:|"]
    lines += [f"| {s} | {c} | {h:.3f} |" for s, c, h in rep.funnel]
    lines += ["", "![funnel](funnel.png)", "", "## Motion direction (MotionTrends)", ""]
    lines += _table_md(rep.motion)
    lines += ["", "![motion](motion_direction.png)", "", "## Tags", ""]
    for tag in TAGS:
        lines += [f"### {tag}", ""] + _table_md({s: rep.tags[s][tag] for s in rep.sets}) + ["", f"![{tag}](tag_{tag}.png)", ""]
    if "scene_type_sunburst" in figs:
        lines += ["![scene types](scene_type_sunburst.png)", ""]
    lines += ["## Histograms", "", "| metric | " + " | ".join(f"{s} clips" for s in rep.sets) + " |",
              "|---|" + "---:|" * len(rep.sets)]
    lines += [f"| {m} | " + " | ".join(str(sum(rep.histograms[s][m])) for s in rep.sets) + " |" for m in METRICS]
    lines += [""] + [f"![{m}](hist_{m}.png)" for m in METRICS]
    lines += ["", "## Caption lengths (mean words)", "", "| field | paper | " + " | ".join(rep.sets) + " |",
              "|---|---:|" + "---:|" * len(rep.sets)]
    lines += [f"| {f} | {p} | " + " | ".join(f"{rep.caption_means[s].get(f, 0):.1f}" for s in rep.sets) + " |"
              for f, p in CAPTION_FIELDS.items()]
    lines += ["", "![caption lengths](caption_lengths.png)", ""]
    return "\n".join(lines)


def _table_md(data: dict[str, dict[str, int]]) -> list[str]:
    keys = sorted({k for d in data.values() for k in d}, key=lambda k: -data.get("full", {}).get(k, 0))
    shares = {s: _share(c) for s, c in data.items()}
    out = ["| value | " + " | ".join(data) + " |", "|---|" + "---:|" * len(data)]
    out += [f"| {k} | " + " | ".join(f"{data[s].get(k, 0)} ({shares[s].get(k, 0):.1%})" for s in data) + " |"
            for k in keys]
    return out


def html_page(md: str) -> str:
    """A self-contained-enough HTML page from the Markdown (tables, headings, images)."""
    body, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-:"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        m = re.match(r"!\[(.*)\]\((.*)\)", line)
        if m:
            body.append(f'<img alt="{html.escape(m[1])}" src="{html.escape(m[2])}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>SpatialVID statistics</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def write_report(query: QueryFn, db: str, out_dir: str | Path, hq_table: str | None = None,
                 compare: dict[str, str] | None = None) -> tuple[Report, dict[str, Path]]:
    """Compute, draw and write ``report.md``, ``report.html`` and ``stats.json``."""
    rep = compute(query, db, hq_table, compare)
    out = Path(out_dir)
    figs = render(rep, out)
    md = markdown(rep, figs)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(html_page(md))
    (out / "stats.json").write_text(json.dumps(rep.__dict__, indent=1, default=str))
    return rep, {"markdown": out / "report.md", "html": out / "report.html", "json": out / "stats.json", **figs}
