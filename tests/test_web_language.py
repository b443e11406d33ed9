"""The web action language and page rendering: pure functions, no browser."""

import numpy as np
import pytest

from envisions_ray.envs.web_actions import ActionError, Step, Target, matches, parse_program
from envisions_ray.envs.web_dom import Element, page_elements, render


def test_every_action_parses_into_its_step():
    program = """
    # a comment, then one action per line
    click(ref=12)
    click_text("Submit")
    type(ref=5, "hello, world")
    press("Enter")
    press("ArrowUp", times=3)
    select(id="options", "Orange")
    mouse_click(cls="ui-spinner-up")
    click(tag="span", cls="like", nth=2)
    type(text='Name', "it's")
    """
    assert parse_program(program) == [
        Step(3, "click", Target(ref=12)),
        Step(4, "click", Target(text="Submit")),
        Step(5, "type", Target(ref=5), "hello, world"),
        Step(6, "press", None, "Enter"),
        Step(7, "press", None, "ArrowUp", 3),
        Step(8, "select", Target(id="options"), "Orange"),
        Step(9, "mouse_click", Target(cls="ui-spinner-up")),
        Step(10, "click", Target(tag="span", cls="like", nth=2)),
        Step(11, "type", Target(text="Name"), "it's"),
    ]


@pytest.mark.parametrize(
    "program, message",
    [
        ("", "the program has no actions"),
        ("import os", "line 1: 'import os' is not an action"),
        ("click(ref=1)\n__import__('os').system('x')", "line 2:"),
        ("exec('click(ref=1)')", "line 1: 'exec('click(ref=1)')' is not an action"),
        ("click()", "line 1: click needs an element"),
        ("click(ref=1, ref=2)", "line 1: ref is given twice"),
        ('click(ref="1")', "line 1: ref must be a number"),
        ("click(ref=1+1)", "line 1: cannot read the arguments"),
        ('click(ref=1, "x")', "line 1: click takes no quoted string"),
        ("type(ref=5)", "line 1: type takes one quoted string"),
        ('press("F13")', "line 1: unknown key 'F13'"),
        ('press("Enter", times=0)', "line 1: times must be a number from 1 to 100"),
        ('press("Enter", ref=3)', "line 1: press takes no ref"),
        ('click(href="x")', "line 1: click has no argument 'href'"),
        ("click(ref=1, nth=0)", "line 1: nth counts from 1"),
    ],
)
def test_a_bad_program_is_refused_with_its_line(program, message):
    with pytest.raises(ActionError) as refused:
        parse_program(program)
    assert str(refused.value).startswith(message)


def test_a_target_matches_on_every_field_it_names():
    button = Element(4, 2, "button", "Submit ", "", "subbtn", "secondary-action big", "", 0, 0, 10, 10)
    assert matches(Target(text=" Submit"), button)  # surrounding space does not matter
    assert not matches(Target(text="submit"), button) and matches(Target(text="submit"), button, exact_case=False)
    assert matches(Target(tag="button", cls="big", id="subbtn"), button)
    assert not matches(Target(text="Sub"), button)  # whole text only
    assert not matches(Target(tag="button", cls="small"), button)
    assert not matches(Target(ref=5), button)


def element(ref, parent, tag, text="", value="", id_="", classes="", bg=(0, 0, 0, 0), box=(0, 0, 10, 10)):
    left, top, width, height = box
    return {
        "ref": ref,
        "parent": parent,
        "tag": tag,
        "text": text,
        "value": value,
        "id": id_,
        "classes": classes,
        "bg_color": np.array(bg, dtype=np.float32),
        "left": np.array([left]),
        "top": np.array([top]),
        "width": np.array([width]),
        "height": np.array([height]),
    }


def test_text_runs_fold_into_their_element_and_colour_shows_only_without_text():
    dom = [
        element(1, 0, "body"),
        element(2, 1, "label"),
        element(3, 2, "input_checkbox", id_="ch0"),
        element(-7, 2, "t", text="fzzqo"),
        element(4, 1, "div", classes="color", bg=(1, 0, 0, 1)),
        element(5, 1, "button", text="Submit", bg=(0.9, 0.9, 0.9, 1), box=(20, 30, 40, 10)),
        element(6, 1, "input_text", value="abc", id_="tt"),
    ]
    elements = page_elements(dom)
    assert [e.line() for e in elements] == [
        "[1] body",
        '  [2] label "fzzqo"',
        "    [3] input_checkbox #ch0",
        "  [4] div .color bg=#ff0000",
        '  [5] button "Submit"',
        '  [6] input_text value="abc" #tt',
    ]
    assert (elements[4].left, elements[4].width) == (20.0, 40.0)  # for mouse_click's centre


def test_a_long_page_is_cut_to_the_bound_bare_wrappers_first():
    dom = (
        [element(1, 0, "body")]
        + [element(2 + i, 1, "div") for i in range(50)]
        + [element(100 + i, 1, "span", text=f"item {i}") for i in range(200)]
    )
    page = render("Click item 3.", page_elements(dom), max_chars=500)
    assert len(page) <= 500 + len("... 200 more elements")
    assert page.startswith("Task: Click item 3.\nPage:\n")
    assert "[2] div" not in page and '[100] span "item 0"' in page
    assert page.splitlines()[-1].endswith("more elements")
    short = render("Click item 3.", page_elements(dom[:3]), max_chars=500)
    assert "[2] div" in short and "more elements" not in short
