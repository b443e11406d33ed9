"""Word problems generated from a seed: `builtin:arith` and the `builtin:story` curriculum.

`builtin:arith` problems have one shape (a quantity changed 1-3 times). Real word problems differ in
ways a weak model must learn to read past: prices and change, rates over time, unit conversions,
fractions and percentages, comparisons between people, a question asked before its facts, and
numbers that do not matter. Each shape below writes one such problem with its integer answer; the
numbers are drawn so that every intermediate result is a whole number. The shapes are generic
school arithmetic, written for this project.
"""

from __future__ import annotations

import random

NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Ivy", "Jack", "Lena", "Omar"]
ITEMS = ["apples", "marbles", "stickers", "books", "cookies", "pencils", "shells", "cards", "coins"]
STORY_NAMES = [*NAMES, "Priya", "Sam"]
STORY_ITEMS = [*ITEMS, "beads"]
GOODS = [("notebook", "notebooks"), ("pen", "pens"), ("ticket", "tickets"), ("plant", "plants"), ("mug", "mugs")]
# One sentence with a number the answer does not use.
DISTRACTORS = [
    "{other} is {n} years old.",
    "The shop opened {n} years ago.",
    "{other} lives {n} blocks away.",
    "It rained on {n} days last month.",
]
FRACTIONS = [(2, "half"), (3, "a third"), (4, "a quarter")]
PERCENTS = [10, 20, 25, 50]


def story_problem(rng: random.Random) -> tuple[str, int]:
    """One problem of a random shape, sometimes with a distractor or with the question first."""
    shape = rng.choice(SHAPES)
    facts, question, answer = shape(rng)
    if rng.random() < 0.5:
        distractor = rng.choice(DISTRACTORS).format(other=rng.choice(STORY_NAMES), n=rng.randint(3, 40))
        facts.insert(rng.randint(0, len(facts)), distractor)
    if rng.random() < 0.3:
        return f"{question} " + " ".join(facts), answer
    return " ".join([*facts, question]), answer


def change(rng: random.Random) -> tuple[list[str], str, int]:
    name, (_, many) = rng.choice(STORY_NAMES), rng.choice(GOODS)
    count, price = rng.randint(2, 9), rng.randint(2, 15)
    bill = next(b for b in (10, 20, 50, 100, 200) if b >= count * price)
    facts = [f"{name} buys {count} {many} that cost ${price} each.", f"{name} pays with a ${bill} bill."]
    return facts, f"How much change does {name} get, in dollars?", bill - count * price


def rate(rng: random.Random) -> tuple[list[str], str, int]:
    name, per_day, days = rng.choice(STORY_NAMES), rng.randint(3, 25), rng.choice([4, 5, 6, 7, 10, 14])
    done = rng.randint(0, per_day * days // 2)
    facts = [f"{name} reads {per_day} pages every day for {days} days.", f"{name} had already read {done} pages."]
    return facts, f"How many pages has {name} read in total?", done + per_day * days


def units(rng: random.Random) -> tuple[list[str], str, int]:
    name, days = rng.choice(STORY_NAMES), rng.choice([3, 4, 5, 6])
    hours_total = rng.randint(1, 4) * days
    facts = [f"{name} practises piano for {hours_total * 60 // days} minutes a day, {days} days a week."]
    return facts, f"How many hours does {name} practise in a week?", hours_total


def fraction(rng: random.Random) -> tuple[list[str], str, int]:
    name, other, items = rng.sample(STORY_NAMES, 2) + [rng.choice(STORY_ITEMS)]
    denominator, word = rng.choice(FRACTIONS)
    total = denominator * rng.randint(3, 15)
    bought = rng.randint(1, 20)
    facts = [f"{name} has {total} {items}.", f"{name} gives {word} of them to {other}, then buys {bought} more."]
    return facts, f"How many {items} does {name} have now?", total - total // denominator + bought


def percent(rng: random.Random) -> tuple[list[str], str, int]:
    name, (one, many) = rng.choice(STORY_NAMES), rng.choice(GOODS)
    off, price, count = rng.choice(PERCENTS), 20 * rng.randint(1, 10), rng.randint(2, 4)
    facts = [f"A {one} costs ${price}.", f"This week every {one} is {off}% off.", f"{name} buys {count} {many}."]
    return facts, f"How much does {name} pay, in dollars?", count * (price - price * off // 100)


def comparison(rng: random.Random) -> tuple[list[str], str, int]:
    first, second, items = rng.sample(STORY_NAMES, 2) + [rng.choice(STORY_ITEMS)]
    base, more, times = rng.randint(4, 30), rng.randint(2, 15), rng.randint(2, 3)
    if rng.random() < 0.5:
        facts = [f"{first} has {base} {items}.", f"{second} has {more} more {items} than {first}."]
        second_has = base + more
    else:
        facts = [f"{first} has {base} {items}.", f"{second} has {times} times as many {items} as {first}."]
        second_has = base * times
    return facts, f"How many {items} do {first} and {second} have together?", base + second_has


def groups(rng: random.Random) -> tuple[list[str], str, int]:
    name, items = rng.choice(STORY_NAMES), rng.choice(STORY_ITEMS)
    boxes, per_box = rng.randint(2, 9), rng.randint(3, 12)
    left = rng.randint(1, per_box - 1)  # less than a box: else another box would be filled
    facts = [f"{name} packs {boxes * per_box + left} {items} into boxes of {per_box}."]
    return facts, f"How many {items} are left over after filling {boxes} boxes?", left


def difference(rng: random.Random) -> tuple[list[str], str, int]:
    first, second = rng.sample(STORY_NAMES, 2)
    weekly, weeks = rng.randint(5, 20), rng.randint(2, 8)
    spent = rng.randint(1, weekly * weeks // 2)
    savings = weekly * weeks - spent
    other = rng.randint(0, savings - 1)
    facts = [
        f"{first} saves ${weekly} a week for {weeks} weeks and then spends ${spent}.",
        f"{second} has saved ${other}.",
    ]
    return facts, f"How many more dollars does {first} have than {second}?", savings - other


SHAPES = [change, rate, units, fraction, percent, comparison, groups, difference]


def arithmetic_problem(rng: random.Random) -> tuple[str, int]:
    """A word problem with 1-3 operations on one quantity, and its integer answer."""
    name, items = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(3, 30)
    sentences = [f"{name} has {value} {items}."]
    for _ in range(rng.randint(1, 3)):
        operation = rng.choice(["add", "sub", "mul"] if value <= 60 else ["add", "sub"])
        if operation == "add":
            amount = rng.randint(2, 25)
            sentences.append(f"Then {name} gets {amount} more {items}.")
            value += amount
        elif operation == "sub" and value > 2:
            amount = rng.randint(1, value - 1)
            sentences.append(f"Then {name} gives away {amount} {items}.")
            value -= amount
        else:
            factor = rng.randint(2, 4)
            sentences.append(f"Then the number of {items} {name} has becomes {factor} times as large.")
            value *= factor
    sentences.append(f"How many {items} does {name} have now?")
    return " ".join(sentences), value
