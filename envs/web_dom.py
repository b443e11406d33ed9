"""The observation the model reads: the task's utterance and a compact, bounded rendering of the DOM.

miniwob reports every visible element (ref, parent, tag, text, value, id, classes, colours) in page
order, and each run of text as a pseudo-element of tag `t` with a fresh negative ref. The text is
folded into its parent here, so every line the model sees is an element it can name:

    [4] button "ONE" #subbtn
    [7] input_text value="abc" #tt .form-control
    [9] span bg=#ff0000

A colour is shown only for elements without text: for them it is all there is to tell them apart
(click-color's boxes, click-shades' swatches). SVG shapes show their size. miniwob does not report
an SVG fill, so click-shape's colour questions cannot be answered from the page.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_TAG = "t"
OPAQUE = 0.5  # alpha above which a background colour is what the user sees
SVG_SHAPES = ("rect", "circle", "ellipse", "polygon", "path", "text")


@dataclass(frozen=True)
class Element:
    ref: int
    depth: int
    tag: str
    text: str
    value: str
    id: str
    classes: str
    colour: str  # "#rrggbb" of a visible background, or ""
    left: float
    top: float
    width: float
    height: float

    def line(self) -> str:
        parts = [f"{'  ' * self.depth}[{self.ref}] {self.tag}"]
        if self.text:
            parts.append(f'"{self.text}"')
        if self.value:
            parts.append(f'value="{self.value}"')
        if self.id:
            parts.append(f"#{self.id}")
        if self.classes.split():
            parts.append("." + ".".join(self.classes.split()))
        if self.tag in SVG_SHAPES:  # a shape's size is what tells "large" from "small"
            parts.append(f"size={self.width:.0f}x{self.height:.0f}")
        if self.colour:
            parts.append(f"bg={self.colour}")
        return " ".join(parts)


def page_elements(dom_elements) -> list[Element]:
    """miniwob's elements -> ours, in page order, with text pseudo-elements folded into their parents."""
    texts: dict[int, list[str]] = {}
    for raw in dom_elements:
        if raw["tag"] == TEXT_TAG and raw["text"].strip():
            texts.setdefault(int(raw["parent"]), []).append(raw["text"].strip())
    depth: dict[int, int] = {0: -1}
    elements = []
    for raw in dom_elements:
        if raw["tag"] == TEXT_TAG:
            continue
        ref, parent = int(raw["ref"]), int(raw["parent"])
        depth[ref] = depth.get(parent, -1) + 1
        text = " ".join((raw["text"].strip(), *texts.get(ref, []))).strip()
        left, top = float(raw["left"][0]), float(raw["top"][0])
        elements.append(
            Element(
                ref,
                depth[ref],
                raw["tag"],
                text,
                str(raw["value"]),
                raw["id"],
                raw["classes"],
                "" if text else _colour(raw["bg_color"]),
                left,
                top,
                float(raw["width"][0]),
                float(raw["height"][0]),
            )
        )
    return elements


def _colour(rgba) -> str:
    red, green, blue, alpha = (float(x) for x in rgba)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}" if alpha > OPAQUE else ""


def render(utterance: str, elements: list[Element], max_chars: int) -> str:
    """The utterance, then one line per element, cut to `max_chars` with a note of what was left out.

    Over the budget, bare wrappers (no text, value, id, class or colour) go first, since they
    carry only structure; then the tail of the page.
    """
    lines = [e.line() for e in elements]
    head = f"Task: {utterance}\nPage:\n"
    if len(head) + sum(len(line) + 1 for line in lines) > max_chars:
        lines = [e.line() for e in elements if e.text or e.value or e.id or e.classes.strip() or e.colour]
    kept, used = [], len(head)
    for line in lines:
        if used + len(line) + 1 > max_chars:
            kept.append(f"... {len(lines) - len(kept)} more elements")
            break
        kept.append(line)
        used += len(line) + 1
    return head + "\n".join(kept)
