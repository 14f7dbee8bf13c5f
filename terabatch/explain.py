"""Plans as text: what ``Dataset.explain()`` prints, and what plan tests compare against."""

from __future__ import annotations

from terabatch.plan.nodes import (
    Aggregate,
    Drop,
    Filter,
    Head,
    Join,
    MapBatches,
    Node,
    Rename,
    Scan,
    Select,
    Sort,
    TopK,
    Unique,
    Window,
    WithColumns,
    lineage,
)
from terabatch.plan.optimize import optimize
from terabatch.plan.overlap import groups
from terabatch.plan.stages import Sizes, outline_stages
from terabatch.run.memory import format_size


def _exprs(exprs) -> str:
    return ", ".join(str(e) for e in exprs)


def describe_node(node: Node) -> str:
    """One line for one node."""
    if isinstance(node, Scan):
        source = node.source
        size = sum(f.size for f in source.files)
        text = f"scan {source.format}: {len(source.files)} file(s), {format_size(size)}"
        if source.skipped_files:
            text += f" ({len(source.skipped_files)} bad file(s) skipped)"
        columns = "*" if node.columns is None else ", ".join(node.columns)
        text += f"; columns [{columns}]"
        if node.predicate is not None and source.format == "parquet":
            text += f"; row groups pruned by {node.predicate}"
        return text
    if isinstance(node, Filter):
        return f"filter {node.predicate}"
    if isinstance(node, WithColumns):
        return f"with_columns {_exprs(node.exprs)}"
    if isinstance(node, Select):
        return f"select {_exprs(node.exprs)}"
    if isinstance(node, Drop):
        return f"drop {', '.join(node.columns)}"
    if isinstance(node, Rename):
        return "rename " + ", ".join(f"{a} -> {b}" for a, b in node.mapping)
    if isinstance(node, MapBatches):
        size = f", batch_size={node.batch_size}" if node.batch_size else ""
        return f"map_batches {node.name}{size}"
    if isinstance(node, Head):
        return f"head {node.n}"
    if isinstance(node, TopK):
        return f"{'top' if node.largest else 'bottom'}_k {node.k} by {_exprs(node.by)}"
    if isinstance(node, Aggregate):
        return f"group_by {_exprs(node.keys)} agg {_exprs(node.aggs)}"
    if isinstance(node, Unique):
        subset = ", ".join(node.subset) if node.subset is not None else "all columns"
        return f"unique on {subset}, keep={node.keep}"
    if isinstance(node, Window):
        return f"with_columns (windows over {', '.join(node.keys)}) {_exprs(node.exprs)}"
    if isinstance(node, Join):
        keys = ", ".join(f"{a} = {b}" for a, b in zip(node.left_on, node.right_on, strict=True))
        return f"{node.how} join on {keys} with:"
    if isinstance(node, Sort):
        order = ", ".join(
            f"{k} {'desc' if d else 'asc'}" for k, d in zip(node.by, node.descending, strict=True)
        )
        return f"sort by {order}" + (", nulls last" if node.nulls_last else "")
    raise TypeError(type(node).__name__)


def explain_plan(plan: Node, optimized: bool = True) -> str:
    """Render a plan, bottom (the scan) first, then the stages it runs as.

    Each shuffle is numbered in the plan (``[shuffle 1]``) and in the stages that write and
    read it; a stage says which aggregations its map tasks pre-combine.

    >>> import tempfile, pathlib, polars as pl, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("a,b\\n1,2\\n")
    >>> print(tb.read_csv(path).filter(pl.col("a") > 0).select("b").explain())
    scan csv: 1 file(s), 8 B; columns [a, b]
      filter [(col("a")) > (dyn int: 0)]
      select col("b")
    stage 1: streaming, no shuffle; operators fused into each task
    """
    if not optimized:
        return "\n".join(_tree(plan, {}))
    plan = optimize(plan)
    stages, notes = outline_stages(plan, Sizes(0, 0, 1, None))
    lines = _tree(plan, notes)
    with_first = {i: group[0] for group in groups(stages) for i in group[1:]}
    for i, stage in enumerate(stages):
        alongside = (
            f"; runs at the same time as stage {with_first[i] + 1}" if i in with_first else ""
        )
        lines.append(f"stage {i + 1}: {stage.detail}{alongside}")
    return "\n".join(lines)


def _tree(plan: Node, notes: dict[int, str], indent: str = "") -> list[str]:
    """The plan's nodes, one per line; a join's right side indented below it."""
    scan, ops = lineage(plan)
    lines = [indent + describe_node(scan)]
    for op in ops:
        note = f"  [{notes[id(op)]}]" if id(op) in notes else ""
        lines.append(f"{indent}  {describe_node(op)}{note}")
        if isinstance(op, Join):
            lines += _tree(op.other, notes, indent + "    ")
    return lines
