"""`opforge auto`: inspect -> plugins for every rejected node opforge can lower -> build -> verify (GPU present) ->
report (report.md, report.html with a chart, report.json)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from opforge import __version__, trt_parser
from opforge.core.errors import OpforgeError, UsageError
from opforge.core.fsutil import atomic_write_bytes
from opforge.core.manifest import Manifest
from opforge.core.outdir import OutputFolder
from opforge.extract import load_model
from opforge.extract.select import check_names_exist, check_unique_names
from opforge.extract.subgraph import Dim, check_input_shapes
from opforge.generate import DynamicBatch, generate
from opforge.inspect_model import check_graph_input_shapes, inspect_model, name_nodes, sort_nodes


def gpu_available() -> bool:
    """Whether the CUDA driver sees a GPU, asked in a child process: verification then runs in forked workers,
    which cannot use CUDA once this process has started it (opforge.runtime.isolated)."""
    from opforge.runtime.gpu import gpu_count

    return gpu_count() > 0


def auto(
    model_path: str | Path,
    out_dir: str | Path,
    node_names: list[str] | None = None,
    node_types: list[str] | None = None,
    input_shapes: dict[str, list[Dim]] | None = None,
    dynamic_batch: DynamicBatch | None = None,
    verify: str = "auto",
    progress=None,
    fuse: bool = True,
    force: bool = False,
) -> dict:
    """Inspect the model, generate plugins for every rejected node opforge can lower (and the nodes/types given),
    verify them when a GPU is present, and write report.{md,html,json,svg} into out_dir. The user's inputs are all
    checked before the first lowering; out_dir follows opforge.core.outdir's rules. `fuse`: see generate."""
    say = progress or (lambda m: None)
    model_path, out_dir = Path(model_path), Path(out_dir)
    model = load_model(model_path)
    check_unique_names(model)
    check_input_shapes(model, input_shapes)
    check_graph_input_shapes(model, input_shapes)
    check_names_exist(model, node_names)
    present = {n.op_type for n in model.graph.node}
    for t in node_types or ():
        if t not in present:
            raise UsageError(f"-t: op type {t!r} does not occur in the model")
    # Unnamed nodes get names so they can be selected, unsorted nodes are sorted (generate reads this copy).
    sort_nodes(model)
    name_nodes(model)
    with OutputFolder(out_dir, model_path, force, say) as folder:
        say("inspecting with TensorRT's ONNX parser")
        report = inspect_model(model, input_shapes, progress=say)
        report.model = str(model_path)
        chosen = [r.name for r in report.rejected if r.plugin]
        chosen += [n for n in (node_names or []) if n not in chosen]
        result: dict = {"inspect": report.as_dict(), "plugins": [], "verification": None, "after": None}
        if not chosen and not node_types:
            # Nothing to rewrite: what TensorRT's parser rejects in the model stays rejected.
            remaining = [{"node": "", "op_type": "", "reason": m.reason, "note": m.note} for m in report.model_errors]
            remaining += [
                {"node": r.name, "op_type": r.op_type, "reason": r.reason, "note": r.plugin_note}
                for r in report.rejected
            ]
            result["after"] = {"parser": report.parser, "plugin_lookups": [], "other_errors": remaining}
            result["ok"] = not remaining
            folder.commit(
                Manifest(__version__, str(model_path.resolve()), "", {}, "", [])  # a folder of this run, no plugin
            )
            _write_report(folder, result, say)
            return result
        gen = generate(
            model_path,
            out_dir,
            chosen,
            node_types,
            None,
            input_shapes,
            dynamic_batch,
            output_name=f"{model_path.stem}.opforge.onnx",
            progress=say,
            folder=folder,
            model=model,
            fuse=fuse,
        )
        result["model"] = str(gen.model)
        result["library"] = [str(p) for p in gen.libraries]
        result["plugins"] = [
            {"name": s.name, "op_type": s.plan.op_type, "nodes": s.nodes, "kernels": len(s.plan.launches)}
            for s in gen.plugins
        ]
        plugin_names = {s.name for s in gen.plugins}
        rewritten = load_model(gen.model)
        after = trt_parser.parse_any(rewritten)
        for e in after.errors:  # the parser names some nodes by index only
            if not e.node and 0 <= e.index < len(rewritten.graph.node):
                e.node = rewritten.graph.node[e.index].name
        notes = {r.name: r.plugin_note for r in report.rejected}
        notes[""] = "; ".join(m.note for m in report.model_errors)
        result["after"] = {
            "parser": after.parser,
            "plugin_lookups": sorted({e.op_type for e in after.errors if e.op_type in plugin_names}),
            # What the parser still rejects once opforge's plugins stand in: nodes opforge could not lower (with
            # the reason), and failures of the model as a whole (an initializer TensorRT cannot hold, ...).
            "other_errors": [
                {**vars(e), "note": notes.get(e.node, "")} for e in after.errors if e.op_type not in plugin_names
            ],
        }
        result["ok"] = not result["after"]["other_errors"]
        if verify == "always" or (verify == "auto" and gpu_available()):
            from opforge.verify.results import run_metadata

            say("verifying on the GPU")
            result["verification"] = _verify_and_time(out_dir)
            result["verification_meta"] = run_metadata(
                result["verification"][0]["device"] if result["verification"] else "?"
            )
        _write_report(folder, result, say)
        return result


def complete_report(out_dir: Path, progress=None) -> dict:
    """On a GPU host: verify and time the plugins of an `auto` output folder made elsewhere, and rewrite its report."""
    path = out_dir / "report.json"
    if not path.is_file():
        raise OpforgeError(f"{out_dir}: no report.json (not an `opforge auto` output folder)")
    result = json.loads(path.read_text())
    result["verification"] = _verify_and_time(out_dir)
    from opforge.verify.results import run_metadata

    result["verification_meta"] = run_metadata(result["verification"][0]["device"] if result["verification"] else "?")
    for rel, data in _report_files(result).items():  # files the auto run listed in its manifest
        atomic_write_bytes(out_dir / rel, data)
    (progress or (lambda m: None))(f"report: {out_dir / 'report.md'}")
    return result


def _verify_and_time(out_dir: Path) -> list[dict]:
    from opforge.core.kernel_plan import KernelPlan
    from opforge.plan.planner import load_subgraph
    from opforge.runtime.launcher import Context, PlanRunner
    from opforge.verify.check import input_shapes
    from opforge.verify.inputs import make_inputs
    from opforge.verify.plugins import default_dims, verify_folder

    manifest = Manifest.load(out_dir)
    dims_for = default_dims(manifest)
    rows = verify_folder(out_dir, dims_for)
    device = Context(0).name
    rng = np.random.default_rng()
    for row, entry in zip(rows, manifest.plugins):
        plan = KernelPlan.load(out_dir / entry.plan)
        dims = dims_for(entry, plan)[-1]  # the largest profile point
        runner = PlanRunner(plan, (out_dir / entry.fatbin).read_bytes())
        inputs = make_inputs(load_subgraph(out_dir / entry.subgraph), input_shapes(plan, dims), rng)
        row["time_us"] = round(runner.time_ms(inputs) * 1000, 2)
        row["time_dims"] = dims
        row["device"] = device
        runner.close()
    return rows


def _svg_bars(items: list[tuple[str, float]], unit: str, caption: str = "") -> str:
    width, bar_h, left = 640, 22, 230
    top = max((v for _, v in items), default=1.0) or 1.0
    rows = []
    for i, (label, v) in enumerate(items):
        w = (width - left - 80) * v / top
        y = 10 + i * (bar_h + 6)
        rows.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" font-size="12">{html.escape(label)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#4a7bd0"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 15}" font-size="12">{v:g} {unit}</text>'
        )
    height = 20 + len(items) * (bar_h + 6)
    if caption:
        rows.append(f'<text x="8" y="{height + 4}" font-size="10" fill="#555">{html.escape(caption)}</text>')
        height += 14
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif">{"".join(rows)}</svg>'
    )


def _write_report(folder: OutputFolder, result: dict, say) -> None:
    folder.add_files(_report_files(result))
    say(f"report: {folder.path / 'report.md'}")


def _report_files(result: dict) -> dict[str, bytes]:
    """report.svg, report.md, report.json and report.html of a result."""
    insp = result["inspect"]
    ver = {r["plugin"]: r for r in (result["verification"] or [])}
    lines = [
        f"# opforge auto: {Path(insp['model']).name}",
        "",
        f"Parser: {insp['parser']}. Nodes: {insp['nodes']}. Rejected: {len(insp['rejected'])}.",
        "",
    ]
    for m in insp.get("model_errors", []):
        lines += [f"**The parser fails the model as a whole**: {m['reason']}", "", f"{m['note']}.", ""]
    lines += [
        "## Nodes TensorRT's parser rejects",
        "",
        "| # | node | op | reason | plugin |",
        "|---|---|---|---|---|",
    ]
    for r in insp["rejected"]:
        plug = "yes" if r["plugin"] else f"no: {r['plugin_note']}" if r["plugin"] is False else "not tried"
        lines.append(f"| {r['index']} | {r['name']} | {r['op_type']} | {r['reason'][:120]} | {plug[:160]} |")
    if insp.get("subgraphs"):
        lines += [
            "",
            "## Partition (TensorRT-supported subgraphs)",
            "",
            "| nodes | first | last | supported |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {s['nodes']} | {s['first']} | {s['last']} | {'yes' if s['supported'] else 'no'} |"
            for s in insp["subgraphs"]
        ]
    lines += ["", "## Plugins", ""]
    if not result["plugins"]:
        lines.append("No plugin was built.")
    else:
        lines += ["| plugin | op | nodes | kernels | verified | time (µs) |", "|---|---|---|---|---|---|"]
        for p in result["plugins"]:
            v = ver.get(p["name"])
            status = "not run (no GPU)" if v is None else ("pass" if v["ok"] else "FAIL")
            t = f"{v['time_us']}" if v and "time_us" in v else "–"
            lines.append(
                f"| {p['name']} | {p['op_type']} | {', '.join(p['nodes'])} | {p['kernels']} | {status} | {t} |"
            )
        after = result["after"]
        lines += [
            "",
            f"After rewriting, {after['parser']} reports plugin look-ups for: "
            f"{', '.join(after['plugin_lookups']) or 'none'}.",
        ]
        if result["verification"]:
            meta = result.get("verification_meta", {})
            lines += [
                "",
                "Verification: harness (IPluginV3 sequence, 2 contexts, 2 poisons) against onnxruntime "
                "on fresh random inputs at each profile point; time: device time of one enqueue (all the plan's "
                "kernels), from CUDA-graph replays of 50 enqueues timed with CUDA events (median of 20), at the "
                "largest profile shape.",
                "",
                f"- device: {meta.get('device', '?')}",
                f"- date (UTC): {meta.get('date_utc', '?')}",
                f"- command: `{meta.get('command', '?')}`",
            ]
    lines += _remaining_lines(result)
    timed = [(p["name"], ver[p["name"]]["time_us"]) for p in result["plugins"] if "time_us" in ver.get(p["name"], {})]
    meta = result.get("verification_meta") or {}
    caption = f"{meta['device']}, {meta['date_utc']} UTC, {meta['command']}" if meta else ""
    chart = (
        _svg_bars(timed, "µs", caption)
        if timed
        else _svg_bars([(p["name"], p["kernels"]) for p in result["plugins"]], "kernels")
    )
    lines += ["", "![chart](report.svg)", ""]
    md = "\n".join(lines) + "\n"
    body = _md_table_html(lines)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>opforge auto report</title>"
        f"<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}"
        f"td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}</style></head><body>{body}{chart}"
        f"</body></html>"
    )
    return {
        "report.svg": chart.encode(),
        "report.md": md.encode(),
        "report.json": json.dumps(result, indent=1, default=str).encode(),
        "report.html": page.encode(),
    }


def _remaining_lines(result: dict) -> list[str]:
    """The verdict: does TensorRT's parser accept the (rewritten) model but for opforge's plugins? If not, what
    stays rejected, by name, and why opforge did not make a plugin of it."""
    after = result.get("after")
    if after is None:
        return []
    rest = after["other_errors"]
    if not rest:
        what = "but for opforge's plugins" if result["plugins"] else "as it is"
        return ["", "## Verdict", "", f"TensorRT's parser accepts the model {what}."]
    lines = [
        "",
        "## Verdict: TensorRT's parser still rejects the model",
        "",
        f"{len(rest)} error(s) remain after opforge's work:",
        "",
        "| node | op | parser's reason | why opforge did not help |",
        "|---|---|---|---|",
    ]
    for e in rest:
        node = e.get("node") or "(the model)"
        reason = e["reason"].strip().splitlines()[0] if e["reason"].strip() else ""
        why = (e.get("note") or "not selected").replace("|", "/")
        lines.append(f"| {node} | {e.get('op_type', '')} | {reason[:120].replace('|', '/')} | {why[:200]} |")
    return lines


def _md_table_html(lines: list[str]) -> str:
    """The report's markdown (headings, paragraphs, tables) as HTML."""
    out, in_table = [], False
    for ln in lines:
        if ln.startswith("|"):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if ln.startswith("#"):
            level = len(ln) - len(ln.lstrip("#"))
            out.append(f"<h{level}>{html.escape(ln.lstrip('#').strip())}</h{level}>")
        elif ln and not ln.startswith("!["):
            out.append(f"<p>{html.escape(ln)}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)
