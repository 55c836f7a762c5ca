"""The agent's view of resources: placeholders, format, the pinned map."""

from __future__ import annotations

import pytest

from streamrl.resources import PromptTemplate, ResourceError, ResourceMap, TextResource, placeholders, view
from streamrl.schemas import Resource


@pytest.mark.parametrize(
    ("template", "names"),
    [
        ("plain text", set()),
        ("Answer {question} about {topic}.", {"question", "topic"}),
        ("{user.name} wants {items[0]} {x:>{width}}", {"user", "items", "x", "width"}),
        ('A JSON example: {{"name": "f"}} for {q}', {"q"}),
    ],
)
def test_placeholders(template: str, names: set[str]) -> None:
    assert placeholders(template) == names


@pytest.mark.parametrize(("template", "why"), [("a { b", "not a valid template"), ("{} {0}", "positional")])
def test_bad_templates_are_named(template: str, why: str) -> None:
    with pytest.raises(ResourceError, match=why):
        placeholders(template)


def test_format_fills_and_names_what_is_missing() -> None:
    t = view(Resource.create("system_prompt", 'Call {tool} like {{"name": "{tool}"}}.'))
    assert isinstance(t, PromptTemplate) and t.placeholders == {"tool"}
    assert t.format(tool="f") == 'Call f like {"name": "f"}.'
    with pytest.raises(ResourceError, match=r"no value for placeholder\(s\) \['tool'\]"):
        t.format()
    assert str(t) == t.template


def test_other_kinds_are_text_and_a_broken_template_names_its_version() -> None:
    r = Resource.create("notes", "{ not a template", kind="text")
    assert isinstance(view(r), TextResource) and str(view(r)) == "{ not a template"
    bad = Resource.create("p", "{ oops")
    with pytest.raises(ResourceError, match=f"resource p/{bad.version}"):
        view(bad)


def test_the_pinned_map() -> None:
    r = Resource.create("system_prompt", "Hi")
    m = ResourceMap.of({"system_prompt": r})
    assert m["system_prompt"].version == r.version and list(m) == ["system_prompt"] and len(m) == 1
    assert m.get("other") is None
    with pytest.raises(KeyError, match=r"'other' is not pinned .*pinned: \['system_prompt'\]"):
        m["other"]
    assert len(ResourceMap()) == 0
