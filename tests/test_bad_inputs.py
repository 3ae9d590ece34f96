"""The bad-input catalogue: everything a user can get wrong, run as a user would (`python -m opforge.cli` in a
project folder holding their own files). Each case asserts the exit code, one `opforge: error:` line naming the
thing at fault, no traceback, and every file of the project byte-identical afterwards (nothing written, nothing
deleted). Add a row to CASES for each new way in.

Cases that lower or build (TVM, nvcc) are at the end; the slow ones are marked `slow`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

OPSET = [helper.make_opsetid("", 18)]


def _model(path: Path, nodes, inputs, outputs) -> Path:
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=OPSET), str(path))
    return path


def _relu(path: Path, elem=TensorProto.FLOAT, shape=(4, 8), op="Relu") -> Path:
    return _model(
        path,
        [helper.make_node(op, ["x"], ["y"], name="r")],
        [helper.make_tensor_value_info("x", elem, list(shape))],
        [helper.make_tensor_value_info("y", elem, list(shape))],
    )


def _duplicate_names(path: Path) -> Path:
    return _model(
        path,
        [helper.make_node("Relu", ["x"], ["t"], name="r"), helper.make_node("Neg", ["t"], ["y"], name="r")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
    )


def _cast_to(path: Path, elem) -> Path:
    """A float input cast to `elem`, then an op on that dtype: the plugin would take a tensor of `elem`."""
    return _model(
        path,
        [
            helper.make_node("Cast", ["x"], ["c"], name="cast", to=elem),
            helper.make_node("Abs", ["c"], ["y"], name="abs"),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", elem, [4, 8])],
    )


def project(root: Path) -> Path:
    """A user's project folder: their files, and the models the cases use."""
    p = root / "proj"
    (p / "src").mkdir(parents=True)
    (p / "plans").mkdir()
    (p / "src" / "train.py").write_text("print('train')\n")
    (p / "src" / "app.py").write_text("print('app')\n")
    (p / "plans" / "roadmap.md").write_text("# roadmap\n")
    (p / "manifest.json").write_text('{"name": "my project"}\n')
    _relu(p / "m.onnx")
    _relu(p / "other.onnx", op="Neg")
    _relu(p / "f64.onnx", TensorProto.DOUBLE)
    _cast_to(p / "u32.onnx", TensorProto.UINT32)
    _duplicate_names(p / "dup.onnx")
    return p


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def opforge(*args, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "opforge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=e,
        cwd=cwd,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("opforge: error: ")]
    assert len(errors) == 1, proc.stderr
    assert needle in errors[0], (needle, errors[0])
    # nothing but opforge's own lines (no TVM/LLVM noise)
    assert all(ln.startswith("opforge") for ln in proc.stderr.splitlines() if ln.strip()), proc.stderr


@dataclass
class Case:
    id: str
    args: list[str]
    code: int
    needle: str
    env: dict = field(default_factory=dict)
    setup: object = None  # callable(project) run before the snapshot


def _fake_opforge_folder(p: Path) -> None:
    """An `opforge generate` folder (manifest only) for the GPU commands to refuse."""
    from opforge.core.manifest import Manifest

    (p / "made").mkdir()
    Manifest("0", str(p / "m.onnx"), "m.opforge.onnx", {}, "", []).save(p / "made")
    (p / "bundle").mkdir()
    (p / "bundle" / "tune.json").write_text("{}")


def _no_cuda_python(p: Path) -> None:
    """A `cuda` package that cannot be imported, first on PYTHONPATH (this machine may have cuda-python)."""
    (p / "shim" / "cuda").mkdir(parents=True)
    (p / "shim" / "cuda" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'cuda.bindings'\")\n")


SHIM = {"PYTHONPATH": "shim" + os.pathsep + os.environ.get("PYTHONPATH", "")}

CASES = [
    # the output folder
    Case("generate-into-project-folder", ["generate", "m.onnx", "-o", ".", "-n", "r"], 2, "not made by opforge"),
    Case("generate-into-src", ["generate", "m.onnx", "-o", "src", "-n", "r"], 2, "output folder src is not empty"),
    Case(
        "force-onto-users-manifest",
        ["generate", "m.onnx", "-o", ".", "-n", "r", "--force"],
        2,
        "manifest.json exists and is not opforge's",
    ),
    Case("output-is-a-file", ["generate", "m.onnx", "-o", "src/train.py", "-n", "r"], 2, "is a file"),
    Case("output-under-a-file", ["generate", "m.onnx", "-o", "/dev/null/out", "-n", "r"], 1, "/dev/null/out"),
    Case(
        "cache-not-writable",
        ["generate", "m.onnx", "-o", "out", "-n", "r"],
        1,
        "cache folder /dev/null/cache",
        env={"OPFORGE_CACHE": "/dev/null/cache", "HOME": "/dev/null/home"},
    ),
    Case(
        "home-not-writable",
        ["generate", "m.onnx", "-o", "out", "-n", "r"],
        1,
        "set OPFORGE_CACHE",
        env={"OPFORGE_CACHE": "", "HOME": "/dev/null/home"},
    ),
    # --input-shapes
    *[
        Case(f"input-shapes-{i}", ["generate", "m.onnx", "-o", "out", "-n", "r", "--input-shapes", v], 2, needle)
        for i, (v, needle) in enumerate(
            [
                ("x:4x-8", "'-8'"),
                ("x:4xx8", "dimension '' of 'x'"),
                ("x:4 x 8", "'4 '"),
                ("x:4.5x8", "'4.5'"),
                ("x:0x8", "'0'"),
                ("x:4x8x2", "rank 3"),
                ("x", "is not NAME:D0xD1"),
                ("x:4x8,x:4x8", "given twice"),
                ("y:4x8", "'y', which is not a graph input"),
            ]
        )
    ],
    Case("inspect-input-shapes-unknown", ["inspect", "m.onnx", "--input-shapes", "y:4x8"], 2, "'y'"),
    Case("auto-input-shapes-unknown", ["auto", "m.onnx", "-o", "out", "--input-shapes", "y:4x8"], 2, "'y'"),
    Case("auto-input-shapes-bad", ["auto", "m.onnx", "-o", "out", "--input-shapes", "x:4x-8"], 2, "--input-shapes"),
    Case("dynamic-batch-bad", ["generate", "m.onnx", "-o", "out", "-n", "r", "--dynamic-batch", "4,2,1"], 2, "MIN"),
    # selection, names and dtypes (all before lowering)
    Case("generate-unknown-node", ["generate", "m.onnx", "-o", "out", "-n", "nope"], 2, "'nope'"),
    Case("generate-unknown-type", ["generate", "m.onnx", "-o", "out", "-t", "OneHot"], 2, "'OneHot'"),
    Case("auto-unknown-node", ["auto", "m.onnx", "-o", "out", "-n", "nope"], 2, "'nope'"),
    Case("auto-unknown-type", ["auto", "m.onnx", "-o", "out", "-t", "OneHot"], 2, "'OneHot'"),
    Case("plugin-name-not-c", ["generate", "m.onnx", "-o", "out", "-p", '{"r": "1bad"}'], 2, "not a C identifier"),
    Case("plugin-name-onnx-op", ["generate", "m.onnx", "-o", "out", "-p", '{"r": "Relu"}'], 2, "ONNX op type"),
    Case("plugin-names-not-json", ["generate", "m.onnx", "-o", "out", "-p", "{r"], 2, "--plugin-names"),
    Case("duplicate-node-names", ["generate", "dup.onnx", "-o", "out", "-t", "Neg"], 2, "'r' is used twice"),
    Case("auto-duplicate-node-names", ["auto", "dup.onnx", "-o", "out"], 2, "'r' is used twice"),
    Case("float64", ["generate", "f64.onnx", "-o", "out", "-n", "r"], 1, "tensor 'x' is DOUBLE"),
    Case("uint32", ["generate", "u32.onnx", "-o", "out", "-n", "abs"], 1, "tensor 'c' is UINT32"),
    Case("no-selection", ["generate", "m.onnx", "-o", "out"], 2, "select nodes"),
    Case("missing-model", ["generate", "nope.onnx", "-o", "out", "-n", "r"], 1, "no such model file"),
    Case("not-a-model", ["generate", "src/train.py", "-o", "out", "-n", "r"], 1, "not a readable ONNX model"),
    # GPU commands on a machine without cuda-python / a GPU
    Case("verify-not-opforge-folder", ["verify", "src"], 1, "not an `opforge generate` output folder"),
    Case("check-no-cuda-python", ["check", "made"], 1, "needs cuda-python", SHIM, _fake_opforge_folder),
    Case("verify-no-cuda-python", ["verify", "made"], 1, "pip install 'opforge[gpu]'", SHIM, _fake_opforge_folder),
    Case("tune-measure-no-cuda", ["tune", "--measure", "bundle"], 1, "needs cuda-python", SHIM, _fake_opforge_folder),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path):
    p = project(tmp_path)
    if case.setup:
        _no_cuda_python(p)
        case.setup(p)
    before = snapshot(p)
    e = {**os.environ, **case.env}
    if e.get("OPFORGE_CACHE") == "":  # the default cache, under HOME
        del e["OPFORGE_CACHE"]
    proc = subprocess.run(
        [sys.executable, "-m", "opforge.cli", *case.args], capture_output=True, text=True, env=e, cwd=p, timeout=300
    )
    assert_one_line_error(proc, case.code, case.needle)
    assert snapshot(p) == before, "a file of the project changed, appeared or disappeared"


def test_stale_staging_folders_are_removed(tmp_path):
    from opforge.core.outdir import STAGING_PREFIX, remove_stale_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{STAGING_PREFIX}{int(dead.stdout)}-abc"
    old_style = tmp_path / f"{STAGING_PREFIX}k3j2h1"
    live = tmp_path / f"{STAGING_PREFIX}1-abc"  # pid 1 is alive
    for d in (stale, old_style, live):
        (d / "plans").mkdir(parents=True)
    removed = remove_stale_staging(tmp_path)
    assert sorted(removed) == sorted([stale, old_style])
    assert live.is_dir() and not stale.exists() and not old_style.exists()


def test_inspect_wide_shows_whole_reasons(tmp_path, monkeypatch):
    from opforge.cli import inspect as cli_inspect
    from opforge.inspect_model import InspectReport, RejectedNode

    reason = "a reason longer than seventy characters, " * 4
    report = InspectReport("m.onnx", "fake", 1, [RejectedNode(0, "n", "OneHot", reason, None)])
    monkeypatch.setattr("opforge.inspect_model.inspect_model", lambda *a, **k: report)
    import argparse

    for wide in (False, True):
        args = argparse.Namespace(
            model=Path("m.onnx"), input_shapes=None, no_lowering=True, json=False, quiet=False, verbose=False, wide=wide
        )
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            cli_inspect.run(args)
        assert (reason in buf.getvalue()) == wide


# ---- cases that lower (TVM) -------------------------------------------------------------------------------------


def test_failed_lowering_leaves_no_output_folder(tmp_path):
    p = project(tmp_path)
    _model(
        p / "det.onnx",
        [helper.make_node("Det", ["x"], ["y"], name="det")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    before = snapshot(p)
    proc = opforge("generate", "det.onnx", "-o", "out", "-n", "det", cwd=p)
    assert_one_line_error(proc, 1, "node 'det' (Det)")
    assert snapshot(p) == before and not (p / "out").exists()


# ---- cases that build (nvcc): slow --------------------------------------------------------------------------------


def _plugins_in(out: Path) -> tuple[set[str], set[str]]:
    """(plugin op types the rewritten model names, creators its library exports per the manifest and nm)."""
    m = json.loads((out / "manifest.json").read_text())
    model = onnx.load(str(out / m["output_model"]))
    named = {n.op_type for n in model.graph.node if n.domain == "opforge"}
    held = set()
    for lib, names in m["libraries"].items():
        syms = subprocess.run(["nm", "-D", "--defined-only", str(out / lib)], capture_output=True, text=True).stdout
        assert "getCreators" in syms
        held |= set(names)
    for rel in m["files"]:
        assert (out / rel).is_file(), rel
    return named, held


@pytest.mark.slow
def test_force_keeps_user_files_and_reruns_replace_only_ours(tmp_path):
    p = project(tmp_path)
    (p / "manifest.json").unlink()  # no collision left: --force may write here
    before = snapshot(p)
    proc = opforge("generate", "m.onnx", "-o", ".", "-n", "r", "--force", cwd=p)
    assert proc.returncode == 0, proc.stderr
    assert all(ln.startswith("opforge: ") for ln in proc.stderr.splitlines()), proc.stderr  # no TVM/LLVM noise
    assert "[1/1] lowering node r (Relu)" in proc.stderr
    after = snapshot(p)
    assert {k: after[k] for k in before} == before
    ours = set(json.loads((p / "manifest.json").read_text())["files"])
    assert ours == set(after) - set(before)
    named, held = _plugins_in(p)
    assert named and named <= held
    # a re-run (no --force needed: the folder has opforge's manifest) replaces only opforge's files
    (p / "src" / "notes.txt").write_text("mine\n")
    before = snapshot(p)
    proc = opforge("generate", "m.onnx", "-o", ".", "-n", "r", cwd=p)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(p)["src/notes.txt"] == before["src/notes.txt"]
    assert all(snapshot(p)[k] == v for k, v in before.items() if k not in ours)
    # another model into the same folder: refused, naming the model; the folder still works for the first
    before = snapshot(p)
    proc = opforge("generate", "other.onnx", "-o", ".", "-n", "r", cwd=p)
    assert_one_line_error(proc, 2, "another model")
    assert "m.onnx" in proc.stderr and snapshot(p) == before
    # TPAT's API: the same rules for the folder holding the output model
    from opforge import onnx2plugin
    from opforge.core.errors import UsageError

    fresh = project(tmp_path / "api")
    before = snapshot(fresh)
    with pytest.raises(UsageError, match="not made by opforge"):
        onnx2plugin(str(fresh / "m.onnx"), str(fresh / "model_trt.onnx"), node_names=["r"])
    assert snapshot(fresh) == before


@pytest.mark.slow
def test_concurrent_runs_on_an_empty_cache(tmp_path):
    p = project(tmp_path)
    env = {"OPFORGE_CACHE": str(tmp_path / "fresh-cache")}
    headers = Path(os.environ.get("OPFORGE_CACHE", "")) / "tensorrt-include-10.14"
    if headers.is_dir() and "TENSORRT_INCLUDE_DIR" not in os.environ:  # no second download: same headers
        env["TENSORRT_INCLUDE_DIR"] = str(headers)

    def start(*args):
        return subprocess.Popen(
            [sys.executable, "-m", "opforge.cli", *args],
            cwd=p,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # different output folders, one cache
    runs = [start("generate", "m.onnx", "-o", f"out{k}", "-n", "r", "-q") for k in range(2)]
    for r in runs:
        _, err = r.communicate(timeout=600)
        assert r.returncode == 0, err
    for k in range(2):
        named, held = _plugins_in(p / f"out{k}")
        assert named and named <= held
    # one output folder: one waits for the other; both succeed, the folder is consistent
    runs = [start("generate", "m.onnx", "-o", "same", "-n", "r") for _ in range(2)]
    errs = []
    for r in runs:
        _, err = r.communicate(timeout=600)
        assert r.returncode == 0, err
        errs.append(err)
    assert sum("waiting for another opforge run on same" in e for e in errs) <= 1
    named, held = _plugins_in(p / "same")
    assert named and named <= held
    assert not list((p / "same").glob(".opforge-staging-*"))
    # two models into one new folder: one succeeds, the other is refused naming the first; the folder is consistent
    runs = [start("generate", m, "-o", "shared", "-n", "r") for m in ("m.onnx", "other.onnx")]
    codes = sorted(r.wait(timeout=600) for r in runs)
    assert codes == [0, 2]
    named, held = _plugins_in(p / "shared")
    assert named and named <= held


@pytest.mark.slow
def test_sigterm_cleans_up(tmp_path):
    p = project(tmp_path)
    env = {**os.environ, "OPFORGE_CACHE": str(tmp_path / "fresh-cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opforge.cli", "generate", "m.onnx", "-o", "out", "-n", "r"],
        cwd=p,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((p / "out").glob(".opforge-staging-*")):
        time.sleep(0.05)
    assert list((p / "out").glob(".opforge-staging-*")), "the run never started staging"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "opforge: terminated" in err and "Traceback" not in err
    assert not (p / "out").exists()  # the run created it; a failed run leaves things as they were


def test_folder_of_an_older_opforge_owns_its_generated_files_only(tmp_path):
    """A manifest without a file list (opforge before issue 18): its named files and generated sources are opforge's,
    a user's file next to them is not."""
    from opforge.core.manifest import Manifest
    from opforge.core.outdir import OutputFolder

    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    for rel in ("src/opforge_library.cpp", "src/p_Relu_opf1_kernels.cu", "src/train.py", "m.opforge.onnx"):
        (out / rel).write_text("x")
    Manifest("0", str(tmp_path / "m.onnx"), "m.opforge.onnx", {}, "", []).save(out)
    with OutputFolder(out, tmp_path / "m.onnx") as folder:
        assert {"src/opforge_library.cpp", "src/p_Relu_opf1_kernels.cu", "m.opforge.onnx"} <= folder.owned
        assert "src/train.py" not in folder.owned
    assert not list(out.glob(".opforge-staging-*"))


def test_a_folder_made_by_a_concurrent_run_between_check_and_mkdir(tmp_path, monkeypatch):
    """Two runs into one new folder: the second saw no folder, then the first made it before the second's mkdir.
    The second used to fail (exit 1, "File exists") instead of taking its turn; it must open the folder as not its
    own (and so never remove it)."""
    from opforge.core.outdir import OutputFolder

    out = tmp_path / "shared"
    real_exists = type(out).exists
    asked = []

    def exists_after_a_race(self, *args, **kwargs):
        if self == out and not real_exists(self):
            asked.append(self)
            if len(asked) == 2:  # the check before mkdir: the other run wins the race right after it
                self.mkdir()
            return False
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(type(out), "exists", exists_after_a_race)
    with OutputFolder(out, tmp_path / "m.onnx") as folder:
        assert not folder.created
    monkeypatch.undo()
    assert len(asked) == 2 and out.is_dir()  # the race was played; the folder stays: another run made it
