"""``cosim export``: one device's final model as a standard PEFT adapter directory."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import PreTrainedModel

from cosim.learning.bases import load_pretrained
from cosim.learning.data import FactsTask
from cosim.learning.learner import SlotLearner
from cosim.learning.model import build_tiny_base
from cosim.learning.peft_io import to_peft_model
from cosim.scenario import ScenarioError, parse_scenario
from cosim.trace.writer import same_mode_as

__all__ = ["ExportError", "export_device", "load_learner"]


class ExportError(ValueError):
    """A run directory or device that cannot be exported; the message is for the user."""


def load_learner(run_dir: Path) -> SlotLearner:
    """Rebuild a finished run's learner (base model, projections, final slot copies)."""
    manifest_path = run_dir / "manifest.json"
    state_path = run_dir / "state.safetensors"
    if not manifest_path.is_file():
        raise ExportError(f"{run_dir}: not a run directory (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{manifest_path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or "scenario" not in manifest:
        raise ExportError(f"{manifest_path}: not a run manifest (no scenario in it)")
    if manifest.get("status") != "complete":
        raise ExportError(f"{run_dir}: the run is not complete (status {manifest.get('status')!r})")
    missing = [p.name for p in (state_path, run_dir / "state.json") if not p.is_file()]
    if missing:
        raise ExportError(f"{run_dir}: the run's final state is missing ({', '.join(missing)})")
    raw = manifest["scenario"]
    if isinstance(raw, dict) and isinstance(raw.get("data"), dict) and raw["data"].get("task") == "file":
        # A pretrained model's slots do not depend on the data: the data file need not be there.
        raw = {**raw, "data": {"task": "facts"}}
    try:
        scenario = parse_scenario(raw, source=str(manifest_path))
    except ScenarioError as err:
        raise ExportError(str(err)) from None
    learner = SlotLearner(
        model=scenario.model,
        data=scenario.data,
        training=scenario.training,
        device_ids=scenario.device_ids,
        leavers=scenario.leavers,
        newcomers=scenario.newcomers,
    )
    try:
        tensors = load_file(str(state_path))
        for name in learner.copies:
            learner.copies[name] = tensors[name]
        meta = json.loads((run_dir / "state.json").read_text())
        learner.slot_of = {int(d): int(s) for d, s in meta["slot_of"].items()}
        learner.tombstoned = {int(d): set(s) for d, s in meta["tombstoned"].items()}
    except (SafetensorError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ExportError(
            f"{run_dir}: the run's final state (state.safetensors, state.json) cannot be read: "
            f"{type(err).__name__}: {err}"
        ) from None
    return learner


def _make_room(out_dir: Path, overwrite: bool) -> None:
    """Refuse an ``out_dir`` that holds anything but an earlier export (and that without
    ``overwrite``), so that no file of the user's is written over."""
    if not out_dir.is_dir():
        return
    held = sorted(p.name for p in out_dir.iterdir())
    if not held:
        return
    if not (out_dir / "adapter_config.json").is_file():
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise ExportError(f"DIR {out_dir}: not empty (holds {shown}); export into a new or empty directory")
    if not overwrite:
        raise ExportError(
            f"DIR {out_dir}: already holds an exported adapter; pass --overwrite to replace it, "
            "or choose another DIR"
        )
    # The adapter's own files are written over; the base model's are removed first, so no
    # shard of an earlier, differently split base is left beside the new one.  A link named
    # base is removed, not followed: what it points to is not the export's.
    base = out_dir / "base"
    try:
        if base.is_symlink() or base.is_file():
            base.unlink()
        elif base.exists():
            shutil.rmtree(base)
    except OSError as err:
        raise ExportError(f"DIR {out_dir}: the earlier export's base cannot be removed ({err})") from None


def export_device(run_dir: Path, device: int, out_dir: Path, overwrite: bool = False) -> None:
    """Write ``device``'s model: ``out_dir`` holds the adapter, ``out_dir/base`` the base model.

    ``out_dir`` must be new or empty, or, with ``overwrite``, hold an earlier export.
    """
    learner = load_learner(run_dir)
    if device not in learner.slot_of:
        live = sorted(learner.slot_of)
        raise ExportError(f"--device {device}: not a live device at the end of the run; allowed: {live}")
    _make_room(out_dir, overwrite)
    spec = learner.model_spec
    _, adapter = learner.device_adapter(device)
    tokenizer = None
    base: PreTrainedModel
    if isinstance(learner.task, FactsTask):
        base = build_tiny_base(spec.tiny, learner.task.vocab_size, seed=spec.seed)
    else:
        base, tokenizer = load_pretrained(spec.base)
    out_dir.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Writing model shards" on stderr, for a file of a few MB
    try:
        with warnings.catch_warnings():
            # transformers' own deprecation notices, raised by its save path, not by this call
            warnings.simplefilter("ignore", FutureWarning)
            base.save_pretrained(out_dir / "base")
            if tokenizer is not None:
                tokenizer.save_pretrained(out_dir / "base")
            model = to_peft_model(
                base, adapter, rank=spec.rank, alpha=spec.alpha, target_modules=spec.target_modules
            )
            model.peft_config["default"].base_model_name_or_path = "base"
            model.save_pretrained(str(out_dir), save_embedding_layers=False)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for path in out_dir.rglob("*.safetensors"):
        same_mode_as(path, out_dir / "adapter_config.json")
