"""Checkpoints: model folders on disk, their content hash and their metadata.

A checkpoint is an ordinary Hugging Face folder (weights, config, tokenizer, generation
config) plus ``flywheel_checkpoint.json``: where it came from, what it was trained on and
how training went. The sha256 covers every other file in the folder, so the metadata
(which records the hash) never changes it, and two builds with the same seed and data have
the same hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

META_FILE = "flywheel_checkpoint.json"
_SKIPPED = {META_FILE, "training_args.bin"}  # the metadata itself; a pickle that differs run to run


@dataclass
class CheckpointMeta:
    """What the warehouse records about a checkpoint; JSON-only values."""

    path: str
    sha256: str
    kind: str = "base"  # base | sft | rft | grpo
    base_checkpoint: str | None = None
    base_sha256: str | None = None
    round: str | None = None
    data_counts: dict[str, int] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    rewards: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)  # plan.TrainingPlan as planned, plus what each stage ran

    def reproducible(self) -> dict[str, Any]:
        """The metadata without what follows the wall clock (seconds, tokens per second): what
        the warehouse keeps, so the same seed and settings give the same rows on any load."""
        return _without_timings(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckpointMeta":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


_TIMING_KEYS = {"seconds", "tokens_per_second"}


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in _TIMING_KEYS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def folder_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 over (relative path, size, content) of every file, in sorted path order."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"checkpoint folder {root} does not exist")
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel in _SKIPPED:
            continue
        digest.update(rel.encode() + b"\0" + str(file.stat().st_size).encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def build_once(path: str | os.PathLike[str], build: Callable[[Path], None]) -> Path:
    """The checkpoint at ``path``, built by ``build(folder)`` (which writes its metadata) when
    absent: into a sibling folder renamed into place, so a crash mid-build never leaves a
    half-written checkpoint behind."""
    path = Path(path)
    if read_meta(path) is None:
        tmp = path.with_name(path.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return path


def write_meta(path: str | os.PathLike[str], **info: Any) -> CheckpointMeta:
    """Hash the folder and write its metadata file; returns the metadata."""
    root = Path(path)
    meta = CheckpointMeta(path=str(root.resolve()), sha256=folder_sha256(root), **info)
    (root / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
    return meta


def read_meta(path: str | os.PathLike[str]) -> CheckpointMeta | None:
    file = Path(path) / META_FILE
    return CheckpointMeta.from_dict(json.loads(file.read_text())) if file.exists() else None


def verify(path: str | os.PathLike[str]) -> bool:
    """Whether the folder still has the content its metadata was written for."""
    meta = read_meta(path)
    return meta is not None and meta.sha256 == folder_sha256(path)


def save_checkpoint(model: Any, tokenizer: Any, path: str | os.PathLike[str], **info: Any) -> CheckpointMeta:
    """Save model and tokenizer as a Hugging Face folder, then hash it and write metadata."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(root, safe_serialization=True)
    tokenizer.save_pretrained(root)
    return write_meta(root, **info)


def load_checkpoint(path: str | os.PathLike[str], *, dtype: Any = None, device: str | None = None,
                    check_hash: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from a folder; with ``check_hash`` the folder must match its metadata."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = Path(path)
    if not (root / "config.json").exists():
        raise FileNotFoundError(f"{root} is not a model folder (no config.json)")
    if check_hash and not verify(root):
        raise ValueError(f"checkpoint {root} does not match the sha256 in its {META_FILE}")
    tokenizer = AutoTokenizer.from_pretrained(root)
    model = AutoModelForCausalLM.from_pretrained(root, dtype=dtype or "auto")
    if device:
        model = model.to(device)
    return model, tokenizer
