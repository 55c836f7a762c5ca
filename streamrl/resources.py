"""What an agent reads through ``llm.resources``: named, versioned resources, a prompt template first.

A sample may pin resource versions (``Sample.resources``: name -> version); the worker resolves the
pins to :class:`~streamrl.schemas.Resource` records (:mod:`streamrl.resource_store`) and hands the
agent a read-only mapping, :class:`ResourceMap`, of views:

- ``prompt_template`` -> :class:`PromptTemplate`: a Python ``str.format`` template. ``{name}`` is a
  placeholder the agent fills with :meth:`PromptTemplate.format`; ``{{`` and ``}}`` are literal
  braces (so a JSON example inside a template is written with doubled braces).
- any other kind (``text``, or a kind a newer writer added) -> :class:`TextResource`: the content as
  it is.

An agent that takes its prompt from StreamRL changes one line::

    system = llm.resources["system_prompt"].format()            # or .format(tool=task["tool"])

and ``llm.resources.get("system_prompt")`` is None when the sample pinned none (an agent may fall
back to its own default). This module loads no Kafka client: importing the SDK stays cheap.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamrl.schemas import Resource, ResourceKind
from streamrl.schemas.errors import StreamRLError

__all__ = ["PromptTemplate", "ResourceError", "ResourceMap", "TextResource", "placeholders", "view"]


class ResourceError(StreamRLError):
    """A resource cannot be used: a malformed template, a placeholder left unfilled, a pinned version
    that cannot be found (the message names the resource, its version and what is wrong)."""


def placeholders(template: str) -> frozenset[str]:
    """The names of the placeholders of a ``str.format`` template (``{a.b}``/``{a[0]}`` count as ``a``;
    placeholders nested in a format spec, ``{x:{width}}``, count too).

    Raises:
        ResourceError: the template does not parse (a single ``{`` or ``}``) or has a positional
            field (``{}``, ``{0}``): placeholders must be named.
    """
    names: set[str] = set()
    _collect(template, names, depth=0)
    return frozenset(names)


def _collect(text: str, names: set[str], depth: int) -> None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ResourceError(f"not a valid template ({exc}); write a literal brace as {{{{ or }}}}") from None
    for _literal, field_name, spec, _conversion in parsed:
        if field_name is None:
            continue
        root = field_name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ResourceError(
                f"positional field {{{field_name}}} in the template: placeholders must be named ({{question}})"
            )
        names.add(root)
        if spec and depth < 2:
            _collect(spec, names, depth + 1)


@dataclass(frozen=True)
class PromptTemplate:
    """A ``prompt_template`` resource as the agent sees it.

    Attributes:
        name: the resource name (``system_prompt``).
        version: its version (16 hex digits, the head of the content's sha256).
        template: the template text.
    """

    name: str
    version: str
    template: str
    _names: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def placeholders(self) -> frozenset[str]:
        """The placeholder names :meth:`format` needs."""
        return self._names or placeholders(self.template)

    def format(self, **values: Any) -> str:
        """The template with its placeholders filled (``str.format``; ``{{``/``}}`` become braces).

        Raises:
            ResourceError: a placeholder has no value (the message lists the missing ones).
        """
        missing = sorted(self.placeholders - set(values))
        if missing:
            raise ResourceError(
                f"resource {self.name}/{self.version}: no value for placeholder(s) {missing}; "
                f"call .format({', '.join(f'{m}=...' for m in missing)})"
            )
        return self.template.format(**values)

    def __str__(self) -> str:
        return self.template


@dataclass(frozen=True)
class TextResource:
    """A resource of any other kind: its content, as it is."""

    name: str
    version: str
    kind: str
    content: str

    def __str__(self) -> str:
        return self.content


def view(record: Resource) -> PromptTemplate | TextResource:
    """The agent's view of a resource record (:class:`PromptTemplate` for ``prompt_template``).

    Raises:
        ResourceError: a prompt template that does not parse.
    """
    if record.kind == ResourceKind.prompt_template.value:
        try:
            names = placeholders(record.content)
        except ResourceError as exc:
            raise ResourceError(f"resource {record.key()}: {exc}") from None
        return PromptTemplate(record.name, record.version, record.content, names)
    return TextResource(record.name, record.version, record.kind, record.content)


class ResourceMap(Mapping[str, Any]):
    """``llm.resources``: the resources the rollout's sample pinned, by name (read-only).

    ``resources[name]`` raises ``KeyError`` naming the pinned ones when ``name`` was not pinned;
    ``resources.get(name)`` gives None instead.
    """

    def __init__(self, views: Mapping[str, PromptTemplate | TextResource] | None = None) -> None:
        self._views = dict(views or {})

    @classmethod
    def of(cls, records: Mapping[str, Resource]) -> ResourceMap:
        """The map of resolved records (name -> record).

        Raises:
            ResourceError: a prompt template that does not parse.
        """
        return cls({name: view(rec) for name, rec in records.items()})

    def __getitem__(self, name: str) -> PromptTemplate | TextResource:
        try:
            return self._views[name]
        except KeyError:
            pinned = sorted(self._views) or "none"
            raise KeyError(
                f"resource {name!r} is not pinned by this rollout's sample (pinned: {pinned}); "
                "use llm.resources.get(name) to fall back to a default"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def __repr__(self) -> str:
        return "ResourceMap({" + ", ".join(f"{n!r}: {v.version}" for n, v in self._views.items()) + "})"
