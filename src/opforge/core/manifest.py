"""manifest.json: what an `opforge generate` run wrote into its output folder, as typed data.

Written by generate, read by verify, check, auto and tune. Versioned like the kernel plan: a manifest of another
version is refused with a message, not misread.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from opforge.core.errors import OpforgeError
from opforge.core.fsutil import atomic_write_text

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 2


@dataclass
class PluginEntry:
    """One plugin of the output folder: the plan it runs and the nodes of the model it replaces."""

    name: str
    op_type: str
    nodes: list[str]
    plan: str  # paths relative to the output folder
    fatbin: str
    subgraph: str
    library: str
    inputs: list[dict] = field(default_factory=list)  # TensorSpec fields of the plan
    outputs: list[dict] = field(default_factory=list)
    dims: list[dict] = field(default_factory=list)
    fields: list[dict] = field(default_factory=list)  # {"name", "type"} of each plugin field
    launches: int = 0
    workspace: str = "0"


@dataclass
class Manifest:
    opforge_version: str
    input_model: str  # absolute (manifests written before issue 14: as given on the command line)
    output_model: str  # relative to the output folder
    libraries: dict[str, list[str]]  # library file -> plugin names
    harness: str
    plugins: list[PluginEntry]
    nodes: dict[str, str] = field(default_factory=dict)  # node name -> plugin name
    dynamic_batch: dict | None = None  # {"min", "opt", "max"} of the batch profile
    build: dict = field(default_factory=dict)  # nvcc, arch, gencode, TensorRT headers
    files: list[str] = field(default_factory=list)  # every file the run wrote, relative to the output folder
    input_model_relative: str = ""  # the input model relative to the output folder (found after moving both)
    manifest_version: int = MANIFEST_VERSION

    def plugin(self, name: str) -> PluginEntry:
        for p in self.plugins:
            if p.name == name:
                return p
        raise KeyError(name)

    def save(self, out_dir: Path) -> Path:
        path = out_dir / MANIFEST_FILE
        atomic_write_text(path, json.dumps(asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, out_dir: Path) -> Manifest:
        """The manifest of an output folder; an OpforgeError naming the folder if it has none or it is unreadable."""
        path = out_dir / MANIFEST_FILE
        if not path.is_file():
            raise OpforgeError(f"{out_dir}: no {MANIFEST_FILE} (not an `opforge generate` output folder)")
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise OpforgeError(f"{path}: unreadable ({e})") from None
        version = d.get("manifest_version", 1)
        if version == 1:  # opforge 0.1 wrote no version and no file list
            d.setdefault("files", [])
            d["manifest_version"] = MANIFEST_VERSION
        elif version != MANIFEST_VERSION:
            raise OpforgeError(f"{path}: manifest version {version}, this opforge reads {MANIFEST_VERSION}")
        known = {f.name for f in fields(PluginEntry)}
        try:
            d["plugins"] = [PluginEntry(**{k: v for k, v in p.items() if k in known}) for p in d["plugins"]]
            return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})
        except (TypeError, KeyError) as e:
            raise OpforgeError(f"{path}: not an opforge manifest ({e})") from None
