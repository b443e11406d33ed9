"""The grammars of conf/prompts/ and grammar-constrained generation on the hf backend.

Every string a grammar accepts must parse with the domain's own parser. The strings come from a
random walk over the grammar: xgrammar's matcher, over a vocabulary of single characters, says at
each step which characters may come next, and the walk picks one (or ends, where it may).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xgrammar
from conftest import SOLVER_PROGRAM

from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.config import GeneratorConfig, RunConfig
from envisions_ray.envs.logic_program import LogicError, answer, parse
from envisions_ray.envs.web_actions import parse_program
from envisions_ray.errors import UserError
from envisions_ray.prompts import PromptBook
from envisions_ray.run_state import Run
from envisions_ray.tokens import encode_prompt

# Printable ASCII, the newline, and characters a careless string rule would let through: a letter
# outside ASCII, a tab, and line breaks that str.splitlines (both parsers) splits on.
CHARACTERS = [chr(code) for code in range(32, 127)] + ["\n", "Ö", "\t", "\r", "\x0b", "\x85", "\u2028"]
END = len(CHARACTERS)  # the vocabulary's stop token
WALKS = 150


def walk(grammar: str, count: int, seed: int) -> list[str]:
    """`count` random strings of the grammar's language."""
    info = xgrammar.TokenizerInfo([*CHARACTERS, "<end>"], vocab_type=xgrammar.VocabType.RAW, stop_token_ids=[END])
    compiled = xgrammar.GrammarCompiler(info).compile_grammar(grammar)
    bitmask = xgrammar.allocate_token_bitmask(1, END + 1)
    rng, strings = random.Random(seed), []
    for _ in range(count):
        matcher, text = xgrammar.GrammarMatcher(compiled), []
        while not matcher.is_terminated():
            matcher.fill_next_token_bitmask(bitmask)
            bits = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[: END + 1]
            allowed = np.flatnonzero(bits).tolist()
            # Ending half the time it may keeps strings short; every other choice is uniform.
            token = (
                END if END in allowed and rng.random() < 0.5 else rng.choice([t for t in allowed if t != END] or [END])
            )
            assert matcher.accept_token(token)
            if token != END:
                text.append(CHARACTERS[token])
        strings.append("".join(text))
    return strings


def accepts(grammar: str, text: str) -> bool:
    info = xgrammar.TokenizerInfo([*CHARACTERS, "<end>"], vocab_type=xgrammar.VocabType.RAW, stop_token_ids=[END])
    matcher = xgrammar.GrammarMatcher(xgrammar.GrammarCompiler(info).compile_grammar(grammar))
    return matcher.accept_string(text) and matcher.accept_token(END)


LOGIC = PromptBook.load("conf/prompts/logic.yaml")
WEB = PromptBook.load("conf/prompts/web.yaml")


def test_every_string_of_the_logic_grammar_parses_and_the_engine_answers_it():
    strings = walk(LOGIC.grammar, WALKS, seed=0)
    assert len(set(strings)) == WALKS
    for text in strings:
        program = parse(text.strip())  # the driver stores the stripped text
        assert program.facts and not any(a.startswith("$") for a in program.query.arguments)
    # Well-formed is more than parsed: the engine answers, except where a rule's head uses a
    # variable its body does not bind (clingo refuses it), which only semantics can fix.
    for text in strings[:20]:
        try:
            assert answer(text, timeout_s=5.0) in ("True", "False", "Unknown")
        except LogicError as err:
            assert "unsafe" in str(err), text


def test_every_string_of_the_web_grammar_parses():
    strings = walk(WEB.grammar, WALKS, seed=1)
    assert len(set(strings)) > 0.9 * WALKS  # press("Enter") may well come twice
    verbs = set()
    for text in strings:
        verbs.update(step.verb for step in parse_program(text.strip()))
    assert verbs == {"click", "type", "press", "select", "mouse_click"}  # click_text parses into click


@pytest.mark.parametrize("book", [LOGIC, WEB], ids=["logic", "web"])
def test_the_demonstrations_are_in_their_grammar(book):
    """The shots show the model the language the grammar holds it to."""
    for shot in book.shots:
        assert accepts(book.grammar, shot.solution), shot.solution


DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "proofwriter_dev.jsonl"


def grammar_form(program: str) -> str:
    """A GPT-4 dev program as the grammar writes it: no `:::` comments, no blank lines, entities
    capitalised (34 programs write `cat` beside `Cat`, one constant to the engine)."""
    lines = (line.split(":::", 1)[0].strip() for line in program.splitlines())
    text = "\n".join(line for line in lines if line)
    return re.sub(r"(?<=\()[a-z]|(?<=, )(?!bool\))[a-z]", lambda m: m.group(0).upper(), text)


@pytest.mark.skipif(not DEV.is_file(), reason="shared data not beside this checkout")
def test_the_logic_grammar_holds_the_dev_programs():
    """The bounds are the dev theories' counts (benchmarks/bench_logic_grammar.py): at least 90 % of
    the GPT-4 dev programs are in the grammar whole, and the rest only for what it means to refuse."""
    programs = [grammar_form(json.loads(line)["logic_program"]) for line in DEV.read_text().splitlines()]
    held = [text for text in programs if accepts(LOGIC.grammar, text)]
    assert len(held) >= 0.9 * len(programs)
    for text in programs:
        if text not in held:  # negation with `!`, or a predicate of two words (NotSmart)
            assert "!" in text or re.search(r"(^|[ !])[A-Z][a-z]+[A-Z]\w*\(", text, re.M), text
    for text in held[:: len(held) // 20]:
        assert parse(text).rules


def test_the_grammars_refuse_what_the_parsers_refuse():
    assert not accepts(
        LOGIC.grammar, "Predicates:\nBig($x, bool)\nFacts:\nBig(Bob, True)\nRules:\nQuery:\nBig($x, True)"
    )
    assert not accepts(LOGIC.grammar, "The bear is kind.")
    assert not accepts(WEB.grammar, 'click_text("a")\n\nclick(ref=1)')  # a blank line ends a program
    assert not accepts(WEB.grammar, 'press("F13")')
    assert not accepts(WEB.grammar, 'type(ref=1, "a\u2028b")')


def test_a_prompt_file_with_a_broken_grammar_is_refused_in_one_line(tmp_path: Path):
    text = Path("conf/prompts/logic.yaml").read_text().replace('value ::= "True" | "False"', "value ::= truth")
    path = tmp_path / "logic.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=r"grammar is not valid EBNF: .*truth") as raised:
        PromptBook.load(path)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("setting", "domain", "expected"), [(True, "logic", True), (False, "logic", False), (True, "math", False)]
)
def test_the_switch_gives_the_generators_the_prompt_files_grammar_or_none(setting, domain, expected):
    cfg = RunConfig(run_dir="unused")
    cfg.generator.grammar = setting
    prompts = PromptBook.load(f"conf/prompts/{domain}.yaml")
    run = Run(cfg, Path("unused"), "model", prompts, [], {})
    assert run.grammar == (prompts.grammar if expected else "")
    assert bool(run.grammar) == expected


# --- the hf backend under a grammar -------------------------------------------------------------

DIGIT = "root ::= [0-9]"


@pytest.fixture(scope="module")
def backend(tiny_solver) -> HFBackend:
    return HFBackend(GeneratorConfig(backend="hf", stop=["\n\n"], num_cpus=1, top_p=1.0), tiny_solver, "float32")


def digit_logprob(backend: HFBackend, prompt: str, digit: str) -> float:
    """log p(digit | prompt) under the unmasked model: one character, one token, no other way to write it."""
    ids = encode_prompt(backend.tokenizer, prompt) + backend.tokenizer(digit, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(encode_prompt(backend.tokenizer, prompt)) + 1
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([ids])).logits[0, -2].float()
    return torch.log_softmax(logits, dim=-1)[ids[-1]].item()


def test_constrained_samples_keep_the_unmasked_policys_self_reward(backend):
    prompt = PromptBook.load("conf/prompts/math.yaml").explore("Tom has 5 apples and buys 7 more. How many?")
    [samples] = backend.sample([prompt], 16, 1.0, 8, True, DIGIT)
    assert all(len(s.text) == 1 and s.text.isdigit() and s.num_tokens == 1 for s in samples)
    assert len({s.text for s in samples}) > 1
    for sample in samples:
        raw = digit_logprob(backend, prompt, sample.text)
        assert sample.self_reward == pytest.approx(raw, abs=1e-4)
    # The solver writes programs: any digit first is unlikely, far less so than among 10 digits.
    assert max(s.self_reward for s in samples) < np.log(0.1) - 1


def test_a_grammar_that_allows_the_policys_answer_changes_nothing(backend):
    prompt = PromptBook.load("conf/prompts/math.yaml").explore("Tom has 5 apples and buys 7 more. How many?")
    exact = 'root ::= "' + SOLVER_PROGRAM.replace("\n", "\\n") + '"'
    [[free]] = backend.sample([prompt], 1, 0.0, 32, True)
    [[held]] = backend.sample([prompt], 1, 0.0, 32, True, exact)
    assert held == free and held.text == SOLVER_PROGRAM
