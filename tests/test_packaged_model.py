"""Packaged models: a GGUF split over PyPI packages is joined in order, checked, and converted once,
never leaving half a file or half a model in the cache; and Qwen2.5-Coder's token conventions (EOS
`<|im_end|>`, pad `<|endoftext|>`, no BOS) hold from training targets to the hf backend's self-reward,
on a tiny random Qwen2 (conftest.tiny_qwen)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor, PreTrainedModel

from envisions_ray import model as packaged
from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.config import GeneratorConfig
from envisions_ray.errors import UserError
from envisions_ray.model import (
    PACKAGED_MODELS,
    PackagedModel,
    check_model_path,
    load_model_and_tokenizer,
    packaged_gguf,
    resolve_model_path,
)
from envisions_ray.prompts import PromptBook
from envisions_ray.tokens import IGNORE, encode_prompt, target_ids, tokenize
from envisions_ray.types import TrainExample

FAKE = "fake-split"  # the PACKAGED_MODELS entry the fake part packages make
CHUNKS = [b"GGUF first part, ", b"the second, ", b"and the last."]
PROMPT = PromptBook.load("conf/prompts/math.yaml").explore(
    "Tom has 5 apples and buys 7 more. How many apples does he have?"
)
PROGRAM = "def solution():\n    apples = 5\n    return apples + 7"


def install_parts(tmp_path: Path, monkeypatch, chunks: list[bytes]) -> list[Path]:
    """Packages fake_sns_part1..N on sys.path, each with one data/partNN.bin, and a PACKAGED_MODELS
    entry expecting their concatenation. Returns the part files."""
    site = tmp_path / "site"
    parts = []
    for n, chunk in enumerate(chunks, start=1):
        package = site / f"fake_sns_part{n}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        parts.append(package / "data" / f"part{n:02d}.bin")
        parts[-1].write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))  # also invalidates importlib's caches
    whole = b"".join(chunks)
    spec = PackagedModel(
        "Fake.gguf",
        tuple(f"fake_sns_part{n}" for n in range(1, len(chunks) + 1)),
        tuple(f"data/part{n:02d}.bin" for n in range(1, len(chunks) + 1)),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
    )
    monkeypatch.setitem(PACKAGED_MODELS, FAKE, spec)
    return parts


def still_open(descriptor: int, path: Path) -> bool:
    """Is `descriptor` open on the file at `path` (and not closed, or reused for another file)?"""
    try:
        return os.fstat(descriptor).st_ino == path.stat().st_ino
    except OSError:
        return False


def test_parts_join_in_order_into_the_cache_once(tmp_path, monkeypatch):
    install_parts(tmp_path, monkeypatch, CHUNKS)
    monkeypatch.setattr(packaged, "HASH_BLOCK", 5)  # several reads per part, parts ending mid-block
    made = []
    mkstemp = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda **kwargs: made.append(mkstemp(**kwargs)) or made[-1])
    cache = tmp_path / "cache"
    gguf = packaged_gguf(FAKE, cache)
    assert gguf == cache / "Fake.gguf" and gguf.read_bytes() == b"".join(CHUNKS)
    [(descriptor, _)] = made
    assert not still_open(descriptor, gguf)  # mkstemp's descriptor was closed, not leaked
    assert [p.name for p in cache.iterdir()] == ["Fake.gguf"]  # no .assembling- file left beside it
    assert gguf.stat().st_mode & 0o777 == 0o644  # mkstemp's file is private; the cache is shared
    monkeypatch.setattr(packaged, "_assembled", lambda *args: pytest.fail("assembled a second time"))
    assert packaged_gguf(FAKE, cache) == gguf


def test_a_stale_file_of_the_wrong_size_is_assembled_again(tmp_path, monkeypatch):
    install_parts(tmp_path, monkeypatch, CHUNKS)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "Fake.gguf").write_bytes(CHUNKS[0])  # half a file, as a copy cut short leaves
    assert packaged_gguf(FAKE, cache).read_bytes() == b"".join(CHUNKS)


@pytest.mark.parametrize(
    "damage",
    [lambda chunk: chunk[:3] + b"?" + chunk[4:], lambda chunk: chunk[:-1]],
    ids=["a byte changed", "cut short"],
)
def test_a_damaged_part_is_refused_naming_the_packages_and_leaves_nothing(tmp_path, monkeypatch, damage):
    parts = install_parts(tmp_path, monkeypatch, CHUNKS)
    parts[1].write_bytes(damage(CHUNKS[1]))
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as refused:
        resolve_model_path(FAKE, str(cache))
    message = str(refused.value)
    assert "\n" not in message and "reinstall fake-sns-part1 fake-sns-part2 fake-sns-part3" in message
    assert list(cache.iterdir()) == []  # neither the joined file nor its .assembling- staging


@pytest.mark.parametrize("what", ["package", "data file"])
def test_a_missing_part_is_named_in_one_line(tmp_path, monkeypatch, what):
    parts = install_parts(tmp_path, monkeypatch, CHUNKS)
    if what == "package":
        shutil.rmtree(parts[1].parent.parent)  # fake_sns_part2 uninstalled
        importlib.invalidate_caches()
    else:
        parts[1].unlink()
    cache = tmp_path / "cache"
    for call in (lambda: check_model_path(FAKE), lambda: resolve_model_path(FAKE, str(cache))):
        with pytest.raises(UserError) as refused:
            call()
        message = str(refused.value)
        assert "\n" not in message and "fake-sns-part2" in message
        assert "part1" not in message and "part3" not in message
    assert not cache.exists()


def write_gguf(model_dir: str, path: Path) -> None:
    """The model at `model_dir` (a Qwen2 with a byte-level BPE tokenizer) as an F32 GGUF file, with the
    metadata llama.cpp's converter writes and transformers reads back."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in tokenizer.all_special_tokens else 1 for t in tokens])  # 3: control
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_token_merges([" ".join(merge) for merge in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, config.num_hidden_layers)
    for name, tensor in AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items():
        base, suffix = name.rsplit(".", 1)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", tensor.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_an_interrupted_conversion_leaves_nothing_and_the_next_one_succeeds(tiny_qwen, tmp_path, monkeypatch):
    gguf_file = tmp_path / "tiny.gguf"
    write_gguf(tiny_qwen, gguf_file)
    whole = gguf_file.read_bytes()
    install_parts(tmp_path, monkeypatch, [whole[:1000], whole[1000:]])
    cache = tmp_path / "cache"
    written: list[str] = []
    save = PreTrainedModel.save_pretrained

    def save_then_interrupt(self, directory, *args, **kwargs):
        save(self, directory, *args, **kwargs)
        written.extend(p.name for p in Path(directory).iterdir())
        raise KeyboardInterrupt  # Ctrl-C with the weights written and the tokenizer not yet

    with monkeypatch.context() as interrupted:
        interrupted.setattr(PreTrainedModel, "save_pretrained", save_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            resolve_model_path(FAKE, str(cache))
    assert "model.safetensors" in written  # half a model was on disk
    assert [p.name for p in cache.iterdir()] == ["Fake.gguf"]  # no .converting- dir, no Fake/

    converted = Path(resolve_model_path(FAKE, str(cache)))
    assert converted == cache / "Fake" and sorted(p.name for p in cache.iterdir()) == ["Fake", "Fake.gguf"]
    assert converted.stat().st_mode & 0o777 == 0o755  # the cache is shared: so is the model, every file of it
    assert {p.stat().st_mode & 0o777 for p in converted.iterdir()} == {0o644}
    model, tokenizer = load_model_and_tokenizer(str(converted))
    original, original_tokenizer = load_model_and_tokenizer(tiny_qwen)
    ids = torch.tensor([tokenizer(PROMPT + PROGRAM)["input_ids"]])
    assert ids.tolist() == [original_tokenizer(PROMPT + PROGRAM)["input_ids"]]
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, original(input_ids=ids).logits)  # F32: lossless
    special = ("eos_token", "pad_token", "bos_token", "unk_token")
    assert [getattr(tokenizer, s) for s in special] == [getattr(original_tokenizer, s) for s in special]


@pytest.fixture(scope="module")
def qwen(tiny_qwen):
    return load_model_and_tokenizer(tiny_qwen)[1]


def test_qwen_keeps_its_pad_apart_from_eos_and_has_no_bos_to_add(qwen):
    assert (qwen.eos_token, qwen.pad_token, qwen.bos_token) == ("<|im_end|>", "<|endoftext|>", "<|endoftext|>")
    assert qwen.pad_token_id != qwen.eos_token_id and qwen.padding_side == "left"
    assert qwen(PROMPT)["input_ids"] == qwen(PROMPT, add_special_tokens=False)["input_ids"]  # BOS is never added


def test_qwen_targets_end_with_im_end_after_a_prompt_without_bos(qwen):
    row = tokenize(qwen, TrainExample(PROMPT, PROGRAM, "l1"), 1024)
    prompt_length = row.labels.count(IGNORE)
    prompt_ids = row.input_ids[:prompt_length]
    assert prompt_ids == encode_prompt(qwen, PROMPT) == qwen(PROMPT, add_special_tokens=False)["input_ids"]
    target = target_ids(qwen, PROMPT, PROGRAM)
    assert qwen.decode(target) == PROGRAM
    end = target + [qwen.convert_tokens_to_ids("<|im_end|>")]
    assert row.input_ids[prompt_length:] == row.labels[prompt_length:] == end
    assert qwen.pad_token_id not in row.input_ids  # <|endoftext|>, the pad and the unused BOS


class Scripted(LogitsProcessor):
    """Forces each row to generate its script of tokens, then leaves it to the model. `generate` keeps
    the raw logits before any processor, so the self-reward is still the model's own."""

    def __init__(self, scripts: list[list[int]], prompt_width: int):
        self.scripts, self.prompt_width = scripts, prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        forced = scores.clone()
        for row, script in enumerate(self.scripts):
            if step < len(script):
                forced[row] = -float("inf")
                forced[row, script[step]] = 0.0
        return forced


def teacher_forced_mean(backend: HFBackend, prompt: str, tokens: list[int]) -> float:
    ids = torch.tensor([encode_prompt(backend.tokenizer, prompt) + tokens])
    with torch.inference_mode():
        logits = backend.model(input_ids=ids).logits[0, -len(tokens) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(tokens)[:, None]).mean().item()


def test_qwen_self_reward_counts_the_program_and_its_stop_string_never_eos_or_pad(tiny_qwen, monkeypatch):
    backend = HFBackend(GeneratorConfig(backend="hf", stop=["\n\n\n", "\nQuestion:"], num_cpus=1), tiny_qwen, "float32")
    tokenizer = backend.tokenizer
    short, short_prompt = "def solution():\n    return 7", "Question: 3 + 4?\n"
    # Row 0 runs into a stop string of several tokens, with more after it that must never come;
    # row 1 ends on EOS early and is then padded while row 0 goes on.
    stopped = tokenizer(PROGRAM + "\nQuestion:", add_special_tokens=False)["input_ids"]
    script = tokenizer(PROGRAM + "\nQuestion: Ann has 2 pens.", add_special_tokens=False)["input_ids"]
    assert script[: len(stopped)] == stopped and len(stopped) > len(tokenizer(PROGRAM)["input_ids"]) + 1
    ended = tokenizer(short, add_special_tokens=False)["input_ids"]
    seen = {}
    generate = backend.model.generate

    def scripted_generate(**kwargs):
        seen.update(kwargs)
        kwargs["logits_processor"].append(
            Scripted([script, ended + [tokenizer.eos_token_id]], kwargs["input_ids"].shape[1])
        )
        return generate(**kwargs)

    monkeypatch.setattr(backend.model, "generate", scripted_generate)
    [[long], [early]] = backend.sample([PROMPT, short_prompt], 1, 0.0, 64, True)
    for row, prompt in enumerate((PROMPT, short_prompt)):  # conditioned without BOS (which is also the pad)
        conditioned = seen["input_ids"][row][seen["attention_mask"][row].bool()].tolist()
        assert conditioned == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert (long.text, long.num_tokens) == (PROGRAM, len(stopped))
    assert long.self_reward == pytest.approx(teacher_forced_mean(backend, PROMPT, stopped), abs=1e-4)
    assert (early.text, early.num_tokens) == (short, len(ended))
    assert early.self_reward == pytest.approx(teacher_forced_mean(backend, short_prompt, ended), abs=1e-4)
