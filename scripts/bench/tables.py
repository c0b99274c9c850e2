"""Writing tables: GitHub markdown (numbers right-aligned) and CSV, from the same header and rows."""

from __future__ import annotations

import csv
from pathlib import Path


def fmt(value, digits: int = 1) -> str:
    """A cell: '' for nothing, thousands separators for large numbers, `digits` decimals for small ones."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown(header: list[str], rows: list[list], digits: int | list[int] = 1) -> str:
    """A markdown table; a column whose cells are all numbers (or empty) is right-aligned. `digits`: decimals
    of small floats, for all columns or per column."""
    digits = digits if isinstance(digits, list) else [digits] * len(header)
    numeric = [bool(rows) and all(r[i] is None or isinstance(r[i], (int, float)) for r in rows)
               for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(cell, d) for cell, d in zip(row, digits, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if c is None else round(c, 4) if isinstance(c, float) else c for c in row])
