"""Charts as data for inline SVG, drawn server-side (no script, no library).

``stacked_bars`` (changes per hour) gives rectangles; ``stacked_areas`` (requests per
minute) gives one path per series. Both give axis ticks and the totals the page states
in words, so the chart is never the only way to read the numbers.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

WIDTH = 640  # viewBox units; the SVG scales to its box, text with it
PLOT_H = 150
LEFT = 34
BOTTOM = 20


def nice_max(value: float) -> int:
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return int(math.ceil(step * magnitude))
    return int(value)


def _y_ticks(top: int) -> list[dict]:
    return [{"y": round(PLOT_H - PLOT_H * f, 1), "label": _short(top * f)} for f in (0, 0.5, 1)]


def _short(n: float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
    if n >= 1000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n:g}" if n != int(n) else str(int(n))


def stacked_bars(counts: list[tuple[str, str, int]], series: tuple[str, ...], end: datetime, hours: int = 168) -> dict:
    """``counts`` are ``(hour "YYYY-MM-DDTHH", series, n)``; one bar per hour up to ``end``."""
    slot = (WIDTH - LEFT - 4) / hours
    first = (end - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    keys = [(first + timedelta(hours=i)).strftime("%Y-%m-%dT%H") for i in range(hours)]
    index = {k: i for i, k in enumerate(keys)}
    grid = [[0] * len(series) for _ in keys]
    totals = dict.fromkeys(series, 0)
    for hour, name, n in counts:
        if hour in index and name in series:
            grid[index[hour]][series.index(name)] += n
            totals[name] += n
    top = nice_max(max((sum(col) for col in grid), default=0))
    rects = []
    for i, column in enumerate(grid):
        y = PLOT_H
        for s, n in enumerate(column):
            if n:
                h = PLOT_H * n / top
                y -= h
                rects.append({"x": round(LEFT + i * slot, 2), "y": round(y, 2), "w": round(slot * 0.8, 2), "h": round(h, 2),
                              "series": s, "title": f"{keys[i].replace('T', ' ')}:00 UTC — {n} {series[s]}"})
    x_ticks = [{"x": round(LEFT + i * slot, 2), "label": keys[i][5:10]} for i in range(hours) if keys[i].endswith("T00")]
    return {"width": WIDTH, "height": PLOT_H + BOTTOM, "plot_h": PLOT_H, "left": LEFT,
            "rects": rects, "y_ticks": _y_ticks(top), "x_ticks": x_ticks, "series": series, "totals": totals,
            "total": sum(totals.values())}


def stacked_areas(counts: list[tuple[str, int, int]], classes: tuple[int, ...], end: datetime, minutes: int = 1440) -> dict:
    """``counts`` are ``(minute "YYYY-MM-DDTHH:MM", status class 2..5, n)``."""
    slot = (WIDTH - LEFT - 4) / minutes
    first = (end - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    keys = [(first + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M") for i in range(minutes)]
    index = {k: i for i, k in enumerate(keys)}
    grid = [[0] * len(classes) for _ in keys]
    totals = dict.fromkeys(classes, 0)
    for minute, cls, n in counts:
        if minute in index and cls in classes:
            grid[index[minute]][classes.index(cls)] += n
            totals[cls] += n
    top = nice_max(max((sum(col) for col in grid), default=0))
    paths, below = [], [0] * minutes
    for s in range(len(classes)):
        if not totals[classes[s]]:
            continue
        upper = [below[i] + grid[i][s] for i in range(minutes)]
        points = [(LEFT + i * slot, PLOT_H - PLOT_H * upper[i] / top) for i in range(minutes)]
        back = [(LEFT + i * slot, PLOT_H - PLOT_H * below[i] / top) for i in reversed(range(minutes))]
        d = "M" + " L".join(f"{x:.2f},{y:.1f}" for x, y in _thin(points) + _thin(back)) + " Z"
        paths.append({"d": d, "series": s})
        below = upper
    x_ticks = [{"x": round(LEFT + i * slot, 2), "label": keys[i][11:16]} for i in range(minutes)
               if keys[i].endswith(("T00:00", "T06:00", "T12:00", "T18:00"))]
    return {"width": WIDTH, "height": PLOT_H + BOTTOM, "plot_h": PLOT_H, "left": LEFT,
            "paths": paths, "y_ticks": _y_ticks(top), "x_ticks": x_ticks, "series": tuple(f"{c}xx" for c in classes),
            "totals": {f"{c}xx": n for c, n in totals.items()}, "total": sum(totals.values()), "peak": top}


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Drop the middle of each run of equal heights (long quiet stretches cost nothing)."""
    kept = []
    for i, point in enumerate(points):
        if 0 < i < len(points) - 1 and points[i - 1][1] == point[1] == points[i + 1][1]:
            continue
        kept.append(point)
    return kept
