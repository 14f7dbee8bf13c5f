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
    Shuffle,
    Sort,
    TopK,
    Unique,
    Window,
    WithColumns,
    lineage,
)
from terabatch.plan.optimize import optimize
from terabatch.plan.precombine import split_aggregations
from terabatch.plan.stages import describe_shuffle
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
        right = "\n".join("    " + line for line in explain_plan(node.other, False).splitlines())
        return f"{node.how} join on {keys} with:\n{right}"
    if isinstance(node, Sort):
        order = ", ".join(
            f"{k} {'desc' if d else 'asc'}" for k, d in zip(node.by, node.descending, strict=True)
        )
        return f"sort by {order}" + (", nulls last" if node.nulls_last else "")
    raise TypeError(type(node).__name__)


def explain_plan(plan: Node, optimized: bool = True) -> str:
    """Render a plan, bottom (the scan) first, then the stages it runs as.

    >>> import tempfile, pathlib, polars as pl, terabatch as tb
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("a,b\\n1,2\\n")
    >>> print(tb.read_csv(path).filter(pl.col("a") > 0).select("b").explain())
    scan csv: 1 file(s), 8 B; columns [a, b]
      filter [(col("a")) > (dyn int: 0)]
      select col("b")
    stage 1: streaming, no shuffle; operators fused into each task
    """
    if optimized:
        plan = optimize(plan)
    scan, ops = lineage(plan)
    lines = [describe_node(scan)]
    lines += ["  " + describe_node(op) for op in ops]
    if optimized:
        lines += _stages(ops)
    return "\n".join(lines)


def _precombined(op: Shuffle) -> str:
    """Which work the map tasks do per batch before shuffling."""
    if isinstance(op, Unique):
        return "unique per batch (pre-combined), " if op.keep != "none" else ""
    if isinstance(op, Window | Sort | Join):
        return ""
    split = split_aggregations(op.aggs)
    if split is None:
        return "no pre-combining (an aggregation needs all rows of a group), "
    return f"pre-combined per batch: {', '.join(k.lower() for k in split.kinds)}; "


def _stages(ops: list) -> list[str]:
    heads = [op for op in ops if isinstance(op, Head | TopK)]
    keep = ""
    if heads and isinstance(heads[0], Head):
        keep = f"; the driver keeps the first {heads[0].n} rows in input order"
    elif heads:
        keep = f"; each task keeps its top {heads[0].k}, the driver the top {heads[0].k} of those"
    shuffle = next((op for op in ops if isinstance(op, Shuffle)), None)
    if shuffle is None:
        return [f"stage 1: streaming, no shuffle; operators fused into each task{keep}"]
    reduce = (
        f"reduce: {describe_shuffle(shuffle)} on each whole partition, then the operators "
        f"after it{keep}"
    )
    if isinstance(shuffle, Join):
        return [
            "if the right side's input is small (and the join keeps left rows: inner, left, semi, "
            "anti): stage 1 collects it, stage 2 joins every batch of the left side with it "
            "(broadcast join, no shuffle); otherwise:",
            f"stage 1: map left: operators before the join, hash shuffle on "
            f"{', '.join(shuffle.left_on)}",
            f"stage 2: map right: its operators, hash shuffle on {', '.join(shuffle.right_on)}",
            f"stage 3: {reduce}",
        ]
    if isinstance(shuffle, Sort):
        return [
            "stage 1: sample: operators before the sort, keep a sample of the keys",
            "stage 2: map: operators before the sort again, then range shuffle on "
            f"{', '.join(shuffle.by)} (boundaries from the sample; Arrow IPC files)",
            f"stage 3: {reduce}; partitions come out in key order",
        ]
    if isinstance(shuffle, Aggregate):
        keys = _exprs(shuffle.keys)
    elif isinstance(shuffle, Window):
        keys = ", ".join(shuffle.keys)
    else:
        keys = ", ".join(shuffle.subset) if shuffle.subset is not None else "all columns"
    return [
        f"stage 1: map: operators before the shuffle, {_precombined(shuffle)}then hash shuffle "
        f"on {keys} (Arrow IPC files; partitions sized from the input and the memory budget)",
        f"stage 2: {reduce}",
    ]
