"""The HQ subset in SQL (SPEC.md §6): raised thresholds, then balanced, seedable sampling.

The paper raises the thresholds of the key quality metrics and then balances semantic
tags and trajectory statistics "so that no class dominates". Here that is, step by step,
all inside ClickHouse:

1. **Candidates**: the latest score row of every clip that passed the filters and meets
   the raised ``[hq]`` thresholds, with its latest successful, non-anomalous
   annotation and its latest caption (one scan of ``clip_latest``, which materialized
   views keep at insert time; equal to the ``argMax ... GROUP BY`` definition). Each candidate gets one value per balanced
   attribute (scene type, time of day, weather, crowd, lighting, main motion trend,
   trajTurns bucket, distLevel); missing tags read ``Unknown``. The scan reads every
   state column it needs once for every clip (that reading is most of the run's
   time), into an in-memory table; the caption's motion trends, the costliest column,
   are read only for candidates whose annotation has none.
2. **Priority**: a weighted random key per clip, ``-ln(u) / w`` with
   ``u = cityHash64(seed, clip_id)`` mapped to (0, 1) (Efraimidis–Spirakis weighted
   sampling) and ``w`` the product over attributes of ``1 / share`` of the clip's value
   (shares from one small count per value, bound as parameters: no window sort).
   With independent attributes, a small weighted sample then has every marginal
   uniform at once (``E[w | v] ∝ 1 / share(v)``); rare values come first, and the order
   is a pure function of (data, seed).
3. **Quotas**: per attribute, one cap ``c_a`` on the hours of any single value, set by
   water-filling (rare values are taken whole, common ones are cut to the same level)
   so that ``sum_v min(hours_v, c_a) = target``. A value's quota is
   ``min(hours_v, s * c_a)``.
4. **Selection**: walking each value's clips in priority order, a clip is inside its
   value's quota while the running sum of hours (including it) stays within the quota;
   a clip is selected when it is inside the quota of every attribute and the running
   total (in priority order) has not yet reached the target. Because the attributes
   interact, the common slack ``s >= 1`` is found by bisection (a handful of cheap scans)
   as the smallest that reaches the target, or everything when the data is short.
   The candidates are sorted once, into one row of arrays in priority order; each
   value's running sums are cumulative sums over those arrays (``work_sql``), bit for
   bit the sums of a ``sum() OVER (PARTITION BY value ORDER BY priority, clip_id)``
   window, without a sort per attribute.

Running sums count every candidate of the value, selected or not, so no value ever
exceeds its quota. The selection is written as ``{db}.hq_{name}_v{N}`` (a new version
per run) with ``{db}.hq_{name}`` a view of the latest version, and registered in
``{db}.hq_selections``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Sequence

from clickhouse_connect.driver.client import Client

from .config import Config, HQConfig
from spatialvid.schemas.ddl import create_table_sql
from spatialvid.schemas.records import Record, UInt32, utcnow

#: Balanced attributes: name -> SQL over the clip's latest state (``s_*`` score, ``a_*``
#: annotation, ``c_*`` caption columns of the candidate scan). Tags a stage has not
#: produced yet read 'Unknown'.
ATTRIBUTES: dict[str, str] = {
    "scene_type": "if(empty(c_scene_type_first), 'Unknown', c_scene_type_first)",
    "time_of_day": "if(empty(c_time_of_day), 'Unknown', c_time_of_day)",
    "weather": "if(empty(c_weather), 'Unknown', c_weather)",
    "crowd_density": "if(empty(c_crowd_density), 'Unknown', c_crowd_density)",
    "lighting": "if(empty(c_lighting), 'Unknown', c_lighting)",
    # The main motion trend: the geometric one (annotation), else the captioner's.
    "motion_trend": "if(notEmpty(a_motion_trends), a_motion_trends[1], "
                    "if(notEmpty(c_motion_trends), c_motion_trends[1], 'None'))",
    "traj_turns": "multiIf(isNull(a_traj_turns), 'Unknown', a_traj_turns >= 3, '3+', toString(a_traj_turns))",
    "dist_level": "if(isNull(a_dist_level), 'Unknown', toString(a_dist_level))",
}

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class HQSelectionRecord(Record):
    """One HQ selection run (table ``hq_selections``; not a Kafka topic)."""

    topic: ClassVar[str] = ""
    table: ClassVar[str] = "hq_selections"
    order_by: ClassVar[tuple[str, ...]] = ("name", "version")

    name: str
    version: UInt32
    table_name: str
    seed: int
    target_hours: float
    selected_hours: float
    clips: int
    candidates: int
    candidate_hours: float
    slack: float
    config_json: str
    created_at: datetime


@dataclass
class Distribution:
    """Hours per value of one attribute, before (candidates) and after (selection)."""

    attribute: str
    before: dict[str, float]
    after: dict[str, float]
    quota: dict[str, float]

    @property
    def evenness_before(self) -> float:
        return evenness(self.before, len(self.before))

    @property
    def evenness_after(self) -> float:
        # Over the classes of the input: a class that vanished counts against evenness.
        return evenness(self.after, len(self.before))


@dataclass
class HQResult:
    """What one HQ run selected, and how the distributions changed."""

    name: str
    version: int
    table: str
    view: str
    seed: int
    target_hours: float
    selected_hours: float
    clips: int
    candidates: int
    candidate_hours: float
    slack: float
    distributions: list[Distribution] = field(default_factory=list)


def evenness(hours: dict[str, float], classes: int | None = None) -> float:
    """Normalised Shannon entropy of a distribution, ``H / ln(K)`` in [0, 1] (1 = even).

    ``classes`` is K (default: the number of keys); a single class gives 1.0.
    """
    k = classes if classes is not None else len(hours)
    total = sum(hours.values())
    if k <= 1 or total <= 0:
        return 1.0
    h = -sum((v / total) * math.log(v / total) for v in hours.values() if v > 0)
    return h / math.log(k)


def waterfill_cap(hours: Sequence[float], target: float) -> float:
    """The cap ``c`` with ``sum(min(h, c)) == target`` (the largest value when short)."""
    hs = sorted(h for h in hours if h > 0)
    if not hs:
        return 0.0
    if sum(hs) <= target:
        return hs[-1]
    below = 0.0
    for i, h in enumerate(hs):
        rest = len(hs) - i  # values that would be cut at a cap <= h
        c = (target - below) / rest
        if c <= h:
            return c
        below += h
    return hs[-1]


def parse_attributes(spec: str) -> list[str]:
    """The balanced attributes of ``hq.balance`` (comma-separated), checked."""
    names = [a.strip() for a in spec.split(",") if a.strip()]
    unknown = [a for a in names if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"hq.balance: unknown attribute(s) {unknown}; known: {', '.join(ATTRIBUTES)}")
    return names


def candidates_sql(db: str, hq: HQConfig, attributes: Sequence[str]) -> str:
    """SELECT of the candidate clips with their attribute values (parameters: thresholds)."""
    def thr(col: str, cond: str) -> str:
        return f"({col} IS NULL OR {cond})" if hq.allow_unscored else f"({col} IS NOT NULL AND {cond})"

    score_where = " AND ".join([
        "passed",
        thr("aesthetic", "aesthetic >= {aesthetic_min:Float64}"),
        thr("luminance_mean", "luminance_mean BETWEEN {luminance_min:Float64} AND {luminance_max:Float64}"),
        thr("ocr_ratio", "ocr_ratio <= {ocr_max:Float64}"),
        thr("motion", "motion BETWEEN {motion_min:Float64} AND {motion_max:Float64}"),
    ])
    attrs = "".join(f",\n    {ATTRIBUTES[a]} AS tag_{a}" for a in attributes)
    # One scan of clip_latest (schemas/views.sql): the latest score, annotation and caption
    # of every clip, kept at insert time, instead of three GROUP BYs over millions of clip
    # ids and two joins. A clip without a (clean) annotation or caption reads what the
    # LEFT JOIN of those GROUP BYs read: NULL numbers, empty arrays and strings.
    ann, ann_rows = ("n", "clean_rows") if hq.drop_anomalies else ("a", "ann_rows")
    state = ", ".join(
        [f"s_{c} AS {c}" for c in ("video_id", "duration_s", "aesthetic", "luminance_mean", "ocr_ratio", "motion", "passed")]
        + [f"{ann}_{c} AS a_{c}" for c in ("move_dist", "rot_angle", "traj_turns", "dist_level", "motion_trends")]
        + [f"c_{c}" for c in ("scene_type_first", "time_of_day", "weather", "crowd_density", "lighting", "motion_trends")])
    need_ann = f" AND {ann_rows} > 0" if hq.require_annotation else ""
    return f"""
SELECT clip_id, video_id, duration_s, aesthetic, luminance_mean, ocr_ratio, motion,
    a_move_dist AS move_dist, a_rot_angle AS rot_angle, a_traj_turns AS traj_turns, a_dist_level AS dist_level{attrs}
FROM (SELECT clip_id, {state} FROM {db}.clip_latest FINAL WHERE score_rows > 0{need_ann})
WHERE {score_where} AND duration_s > 0"""


def _threshold_params(hq: HQConfig) -> dict[str, Any]:
    return {k: float(getattr(hq, k)) for k in
            ("aesthetic_min", "luminance_min", "luminance_max", "ocr_max", "motion_min", "motion_max")}


def select_hq(client: Client, cfg: Config, hours: float | None = None, seed: int | None = None,
              name: str | None = None) -> HQResult:
    """Select the HQ subset and write it as a new version of table ``hq_{name}``."""
    hq = cfg.hq
    db = cfg.warehouse.database
    hours = hq.hours if hours is None else float(hours)
    seed = hq.seed if seed is None else int(seed)
    name = hq.name if name is None else name
    if not _NAME.match(name):
        raise ValueError(f"HQ name {name!r}: use lower-case letters, digits and '_' (starting with a letter)")
    if hours <= 0:
        raise ValueError(f"--hours must be positive, got {hours}")
    attrs = parse_attributes(hq.balance)
    target_s = hours * 3600.0
    tag = uuid.uuid4().hex[:12]
    cand, work = f"{db}.`_hq_cand_{tag}`", f"{db}.`_hq_work_{tag}`"
    params = {**_threshold_params(hq), "seed": seed}
    try:
        # Memory tables: the work is read whole a few times and dropped; no sort, no parts.
        client.command(f"CREATE TABLE {cand} ENGINE = Memory AS {candidates_sql(db, hq, attrs)}",
                       parameters=_threshold_params(hq))
        # Clips per value of every attribute (small): the weights look their value's count
        # up here instead of one window sort per attribute.
        counts = _per_value(client, cand, attrs)[0]
        before: dict[str, dict[str, float]] = {}
        n_total = sum(counts[attrs[0]].values()) if attrs else 0
        for a in attrs:
            params[f"k_{a}"], params[f"n_{a}"] = list(counts[a]), list(counts[a].values())
        params["n_total"] = n_total
        client.command(f"CREATE TABLE {work} ENGINE = Memory AS {work_sql(cand, attrs, [len(counts[a]) for a in attrs])}",
                       parameters=params)
        if attrs:  # hours per value, summed in priority order (independent of the scan's threads)
            tots = client.query(f"SELECT {', '.join(f'tot_{a}' for a in attrs)} FROM {work}").result_rows[0]
            before = {a: {v: float(x) / 3600.0 for v, x in zip(counts[a], tot)} for a, tot in zip(attrs, tots)}
        return _select_from_work(client, cfg, cand, work, attrs, before, target_s, seed, name, hours)
    finally:
        for t in (work, cand):
            client.command(f"DROP TABLE IF EXISTS {t}")


#: Up to this many values, an attribute's running sums are one masked cumulative sum per
#: value (K linear passes); above it, one sort by value and a cumulative sum per group.
MASKED_VALUES_MAX = 16


def _running_sums(t: str, k: int) -> tuple[str, str]:
    """SQL of ``(cum, tot)`` for one attribute: over the arrays ``ds`` (durations, priority
    order) and ``t`` (value codes 1..k), ``cum[i]`` is the sum of ``ds[j]`` over ``j <= i`` with
    ``t[j] = t[i]``, and ``tot[v - 1]`` the sum over all ``j`` with ``t[j] = v``. Both add the
    durations one by one in priority order, as a running-sum window would."""
    if k <= 1:
        return "arrayCumSum(ds)", "[arrayCumSum(ds)[-1]]" if k else "CAST([], 'Array(Float64)')"
    if k <= MASKED_VALUES_MAX:
        # the durations of value v, 0.0 elsewhere: adding 0.0 changes no bit of a sum
        per_value = [f"arrayCumSum(arrayMap((d, t) -> if(t = {v}, d, 0.), ds, {t}))" for v in range(1, k + 1)]
        pick = ", ".join(f"t = {v}, c{v}" for v in range(1, k)) + f", c{k}"
        args = ", ".join(f"c{v}" for v in range(1, k + 1))
        return (f"arrayMap((t, {args}) -> multiIf({pick}), {t}, {', '.join(per_value)})",
                "[" + ", ".join(f"{c}[-1]" for c in per_value) + "]")
    # (value, position) as one integer key: a stable grouping of the clips by value
    key = "bitOr(bitShiftLeft(toUInt64(t), 32), i)"
    grouped = f"arraySort((d, t, i) -> {key}, ds, {t}, arrayEnumerate({t}))"
    codes = f"arraySort({t})"
    starts = f"arrayMap((t, prev) -> t != prev, {codes}, arrayPushFront(arrayPopBack({codes}), 0))"
    groups = f"arrayMap(g -> arrayCumSum(g), arraySplit((d, s) -> s, {grouped}, {starts}))"
    positions = f"arraySort((i, t) -> {key}, arrayEnumerate({t}), {t})"
    # back to priority order: the j-th grouped sum belongs at positions[j]
    return f"arraySort((c, p) -> p, arrayFlatten({groups}), {positions})", f"arrayMap(g -> g[-1], {groups})"


def work_sql(cand: str, attrs: Sequence[str], n_values: Sequence[int]) -> str:
    """One row of arrays over the candidates in priority order (parameters: seed, counts).

    ``ids``, ``pr`` (priority), ``ds`` (duration), and per attribute ``cum_{a}``: the
    running sum of seconds of the clip's value of ``a`` up to and including the clip, in
    ``(priority, clip_id)`` order, and ``tot_{a}``: the seconds of each value (in the
    order of the bound value list ``k_{a}``). One sort for all attributes instead of one
    window sort each; the sums add the same Float64 numbers in the same order as
    ``sum(duration_s) OVER (PARTITION BY tag ORDER BY priority, clip_id ROWS UNBOUNDED
    PRECEDING)``, so they are bit for bit those of the window, and they do not depend on
    how threads split the scan (the selection is a pure function of data, config and seed).
    """
    # ln w = sum over attributes of ln(N / n_value): rarer values get larger weights
    # (the same Float64 operations, in the same order, as a count() OVER (PARTITION BY)).
    log_w = " + ".join(
        f"log({{n_total:UInt64}} / {{n_{a}:Array(UInt64)}}[indexOf({{k_{a}:Array(String)}}, tag_{a})])"
        for a in attrs) or "0"
    # Each value as its 1-based index in the bound value list (k_a), a small integer.
    codes = "".join(f", toUInt32(indexOf({{k_{a}:Array(String)}}, tag_{a})) AS t_{i}" for i, a in enumerate(attrs))
    tup = ", ".join(["priority", "clip_id", "duration_s"] + [f"t_{i}" for i in range(len(attrs))])
    sums = []
    for i, (a, k) in enumerate(zip(attrs, n_values)):
        cum, tot = _running_sums(f"s.{4 + i}", k)
        sums += [f"{cum} AS cum_{a}", f"{tot} AS tot_{a}"]
    return f"""
SELECT s.2 AS ids, s.1 AS pr, s.3 AS ds{''.join(', ' + c for c in sums)}
FROM (
    -- tuples sort by (priority, clip_id): clip ids are unique, the rest never decides
    SELECT arraySort(groupArray(({tup}))) AS s
    FROM (
        SELECT clip_id, duration_s{codes},
            -- u in (0, 1) from the seeded hash; key = -ln(u) / w  (smaller = earlier)
            -log((toFloat64(cityHash64({{seed:Int64}}, clip_id)) + 0.5) / 18446744073709551616.0)
                / exp({log_w}) AS priority
        FROM {cand}
    )
)"""


def _per_value(client: Client, table: str, attrs: Sequence[str]) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    """Clips and hours per value of every attribute of ``table``."""
    counts: dict[str, dict[str, int]] = {a: {} for a in attrs}
    hours: dict[str, dict[str, float]] = {a: {} for a in attrs}
    if not attrs:
        return counts, hours
    # One small GROUP BY per attribute, as branches of one UNION ALL (they run in parallel).
    per_attr = " UNION ALL ".join(
        f"SELECT '{a}' AS a, toString(tag_{a}) AS v, count() AS n, sum(duration_s) AS s FROM {table} GROUP BY v"
        for a in attrs)
    for a, v, n, secs in client.query(f"SELECT a, v, n, s FROM ({per_attr}) ORDER BY a, v").result_rows:
        counts[a][str(v)], hours[a][str(v)] = int(n), float(secs) / 3600.0
    return counts, hours


def _select_from_work(client: Client, cfg: Config, cand: str, work: str, attrs: list[str],
                      before: dict[str, dict[str, float]], target_s: float, seed: int, name: str,
                      hours: float) -> HQResult:
    db = cfg.warehouse.database
    n_cand, cand_s = client.query(f"SELECT length(ds), arraySum(ds) FROM {work}").result_rows[0]
    n_cand, cand_s = int(n_cand), float(cand_s or 0.0)
    caps = {a: waterfill_cap(list(before[a].values()), target_s / 3600.0) * 3600.0 for a in attrs}
    # Slack bounds: s = 1 is the water-filled quota; s_max lets every candidate in.
    s_max = max([max(before[a].values()) * 3600.0 / caps[a] for a in attrs if caps[a] > 0] + [1.0])
    # ok: the clip is inside its value's quota for every attribute (array of 0/1, priority order)
    cum_args = "".join(f", cum_{a}" for a in attrs)
    lam = ", ".join(f"c_{a}" for a in attrs)
    cond = " AND ".join(f"c_{a} <= {{q_{a}:Float64}}" for a in attrs)
    ok = f"arrayMap(({lam}) -> {cond}{cum_args})" if attrs else "arrayMap(d -> 1, ds)"

    def total(s: float) -> float:
        p = {f"q_{a}": caps[a] * s for a in attrs}
        return float(client.query(f"SELECT arraySum(arrayFilter((d, k) -> k, ds, {ok})) FROM {work}",
                                  parameters=p).result_rows[0][0] or 0)

    if total(s_max * (1 + 1e-9)) <= target_s or not attrs:
        slack = s_max * (1 + 1e-9)
    elif total(1.0) >= target_s:
        slack = 1.0
    else:
        lo, hi = 1.0, s_max * (1 + 1e-9)
        for _ in range(30):  # bisection: total(s) is monotone in s
            mid = (lo + hi) / 2
            if total(mid) >= target_s:
                hi = mid
            else:
                lo = mid
            if hi / lo < 1.0005:
                break
        slack = hi
    quota_params = {f"q_{a}": caps[a] * slack for a in attrs}

    version = int(client.query(
        f"SELECT ifNull(max(version), 0) + 1 FROM {db}.hq_selections WHERE name = {{name:String}}",
        parameters={"name": name}).result_rows[0][0]) if _has_registry(client, db) else 1
    table = f"{db}.hq_{name}_v{version}"
    keep = ["clip_id", "video_id", "duration_s", "aesthetic", "luminance_mean", "ocr_ratio", "motion",
            "move_dist", "rot_angle", "traj_turns", "dist_level"] + [f"tag_{a}" for a in attrs]
    # In priority order: a clip inside every quota is selected while the running total of
    # such clips before it is short of the target (the running total adds 0.0 for the
    # others: the same sums as a window over the clips inside every quota).
    client.command(f"""
CREATE TABLE {table} ENGINE = MergeTree ORDER BY clip_id AS
SELECT {', '.join(f'c.{k} AS {k}' for k in keep)}, w.priority AS priority FROM {cand} AS c INNER JOIN (
    SELECT sel.1 AS clip_id, sel.2 AS priority FROM (
        SELECT ids, pr, ds, {ok} AS ok, arrayCumSum(arrayMap((d, k) -> if(k, d, 0.), ds, ok)) AS cum_total
        FROM {work}
    ) ARRAY JOIN arrayFilter((x, k, c, d) -> k AND c - d < {{target:Float64}}, arrayZip(ids, pr), ok, cum_total, ds) AS sel
) AS w ON w.clip_id = c.clip_id""", parameters={**quota_params, "target": target_s})
    client.command(f"CREATE OR REPLACE VIEW {db}.hq_{name} AS SELECT * FROM {table}")
    n_sel, sel_s = client.query(f"SELECT count(), sum(duration_s) FROM {table}").result_rows[0]
    after = _per_value(client, table, attrs)[1]
    dists = [Distribution(a, before[a], after[a],
                          {v: min(h, caps[a] * slack / 3600.0) for v, h in before[a].items()}) for a in attrs]
    result = HQResult(name=name, version=version, table=table, view=f"{db}.hq_{name}", seed=seed,
                      target_hours=hours, selected_hours=float(sel_s or 0) / 3600.0, clips=int(n_sel),
                      candidates=n_cand, candidate_hours=cand_s / 3600.0, slack=slack, distributions=dists)
    _register(client, cfg, result)
    return result


def _has_registry(client: Client, db: str) -> bool:
    return bool(client.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'hq_selections'",
                             parameters={"db": db}).result_rows[0][0])


def _register(client: Client, cfg: Config, r: HQResult) -> None:
    db = cfg.warehouse.database
    client.command(create_table_sql(HQSelectionRecord, db))
    hq_cfg = {k: getattr(cfg.hq, k) for k in cfg.hq.__dataclass_fields__}
    cols = list(HQSelectionRecord.model_fields)
    # The record is the result's run fields plus where it was written and with what config.
    rec = HQSelectionRecord(**{c: getattr(r, c) for c in cols if c in HQResult.__dataclass_fields__},
                            table_name=r.table, config_json=json.dumps(hq_cfg, sort_keys=True), created_at=utcnow())
    client.insert(f"{db}.hq_selections", [[getattr(rec, c) for c in cols]], column_names=cols)


def latest_hq_table(client: Client, db: str, name: str = "hq") -> str | None:
    """The table of the latest version of HQ selection ``name``, or None."""
    if not _has_registry(client, db):
        return None
    rows = client.query(f"SELECT table_name FROM {db}.hq_selections FINAL WHERE name = {{n:String}} "
                        "ORDER BY version DESC LIMIT 1", parameters={"n": name}).result_rows
    return str(rows[0][0]) if rows else None


def format_result(r: HQResult, top: int = 8) -> str:
    """Before/after distributions and evenness per attribute, for a person."""
    lines = [
        f"HQ selection {r.name} v{r.version} -> {r.table}  (view {r.view}; seed {r.seed})",
        f"  candidates  {r.candidates} clips, {r.candidate_hours:.2f} h after the raised thresholds",
        f"  selected    {r.clips} clips, {r.selected_hours:.2f} h of {r.target_hours:g} h asked"
        + ("  (all candidates: not enough data for the target)" if r.selected_hours < r.target_hours * 0.999 else ""),
        f"  quota slack {r.slack:.3f} (1 = water-filled quotas)",
        "",
        f"  {'attribute':<14} {'evenness before':>16} {'after':>7}",
    ]
    for d in r.distributions:
        lines.append(f"  {d.attribute:<14} {d.evenness_before:>16.3f} {d.evenness_after:>7.3f}")
    for d in r.distributions:
        lines += ["", f"  {d.attribute}: hours (share) before -> after, quota"]
        tb, ta = sum(d.before.values()) or 1.0, sum(d.after.values()) or 1.0
        for v, h in sorted(d.before.items(), key=lambda kv: -kv[1])[:top]:
            a = d.after.get(v, 0.0)
            lines.append(f"    {v:<22} {h:>9.2f} ({h / tb:>5.1%}) -> {a:>8.2f} ({a / ta:>5.1%})   quota {d.quota[v]:.2f}")
        if len(d.before) > top:
            lines.append(f"    ... {len(d.before) - top} more values")
    return "\n".join(lines)
