"""Which attributes a response carries (RFC 7644 §3.4.2.5, §3.9; RFC 7643 §7 ``returned``).

``select`` narrows a resource as served (core attributes at the top level, each extension
as an object under its schema URN) to what the client asked for with ``attributes`` or
``excludedAttributes``. It never mutates the resource it is given; nested values it does
not narrow are shared with the input, so treat both as read-only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from domain.errors import InvalidValue
from domain.filter import AttrPath, split_attr_path
from domain.schemas import COMMON_ATTRIBUTES, Attribute, ResourceType

MAX_ATTRIBUTE_LIST_LENGTH = 4096
MAX_ATTRIBUTE_LIST_ENTRIES = 100

# Canonical keys from the resource root down to one attribute, e.g. ("name", "givenName")
# or ("urn:…:enterprise:2.0:User", "manager", "value"). Lists are transparent: a key path
# into a multi-valued attribute applies to each of its elements.
KeyPath = tuple[str, ...]


def parse_attribute_list(text: str | None) -> tuple[AttrPath, ...]:
    """Parse an ``attributes``/``excludedAttributes`` value: comma-separated attribute paths.

    Names that are not attribute paths are dropped: RFC 7644 lets a server ignore what it
    cannot resolve. Only absurd input (too long, too many entries) is an error.
    """
    if text is None:
        return ()
    if len(text) > MAX_ATTRIBUTE_LIST_LENGTH:
        raise InvalidValue(
            f"The attribute list is too long: {len(text)} characters, at most {MAX_ATTRIBUTE_LIST_LENGTH} are allowed."
        )
    names = [name.strip() for name in text.split(",")]
    names = [name for name in names if name]
    if len(names) > MAX_ATTRIBUTE_LIST_ENTRIES:
        raise InvalidValue(
            f"The attribute list names {len(names)} attributes, at most {MAX_ATTRIBUTE_LIST_ENTRIES} are allowed."
        )
    paths = (split_attr_path(name) for name in names)
    return tuple(dict.fromkeys(path for path in paths if path is not None))


def select(
    rt: ResourceType,
    resource: dict,
    attributes: Sequence[AttrPath] = (),
    excluded: Sequence[AttrPath] = (),
) -> dict:
    """A new dict with the parts of ``resource`` the client should see.

    ``returned: never`` attributes are always dropped, ``always`` ones always kept (as is
    ``schemas``). With ``attributes`` only those are added; otherwise everything returned by
    default, minus ``excluded``. ``attributes`` wins when both are given. Names that do not
    resolve against ``rt`` are ignored; a complex value or extension object left empty by
    the selection is dropped.
    """
    plan = _plan_for(rt)
    if attributes:
        return _only(plan, resource, _resolve_all(rt, attributes))
    view = _default_view(plan, resource)
    if excluded:
        return _excluding(view, _resolve_all(rt, excluded))
    return view


def may_return(rt: ResourceType, name: str, attributes: Sequence[AttrPath] = (), excluded: Sequence[AttrPath] = ()) -> bool:
    """Whether ``select`` may return core attribute ``name`` (a Group's ``members``, a
    User's ``groups``); False means the caller need not load it at all."""
    members = rt.core_attribute(name)
    if members is None or members.returned == "never":
        return False
    if members.returned == "always":
        return True
    if attributes:
        return any(target.keys[0] == members.name for target in _resolve_all(rt, attributes))
    if members.returned == "request":
        return False
    return not any(target.keys == (members.name,) for target in _resolve_all(rt, excluded))


# --- What each resource type hides and always shows ------------------------------------


@dataclass(frozen=True)
class _Plan:
    always: tuple[KeyPath, ...]  # returned whatever the client asked; sub-attributes excluded
    never: tuple[KeyPath, ...]
    on_request: tuple[KeyPath, ...]  # returned only when named in ``attributes``
    hidden_roots: frozenset[str]  # the top-level keys of ``never`` and ``on_request``


# Keyed by id() and holding the ResourceType itself: hashing the frozen schema tree on
# every response would cost more than the selection.
_PLANS: dict[int, tuple[ResourceType, _Plan]] = {}


def _plan_for(rt: ResourceType) -> _Plan:
    cached = _PLANS.get(id(rt))
    if cached is not None and cached[0] is rt:
        return cached[1]
    plan = _build_plan(rt)
    _PLANS[id(rt)] = (rt, plan)
    return plan


def _build_plan(rt: ResourceType) -> _Plan:
    always: list[KeyPath] = [("schemas",)]
    never: list[KeyPath] = []
    on_request: list[KeyPath] = []
    for keys, attribute, is_sub_attribute in _every_attribute(rt):
        if attribute.returned == "always" and not is_sub_attribute:
            always.append(keys)
        elif attribute.returned == "never":
            never.append(keys)
        elif attribute.returned == "request":
            on_request.append(keys)
    hidden_roots = frozenset(keys[0] for keys in never + on_request)
    return _Plan(tuple(always), tuple(never), tuple(on_request), hidden_roots)


def _every_attribute(rt: ResourceType):
    """(key path, attribute, is a sub-attribute) for each attribute and sub-attribute."""
    scopes: list[tuple[KeyPath, tuple[Attribute, ...]]] = [((), COMMON_ATTRIBUTES + rt.core.attributes)]
    scopes += [((extension.id,), extension.attributes) for extension in rt.extensions]
    for prefix, attributes in scopes:
        for attribute in attributes:
            keys = prefix + (attribute.name,)
            yield keys, attribute, False
            for sub_attribute in attribute.sub_attributes:
                yield keys + (sub_attribute.name,), sub_attribute, True


# --- Resolving client-written paths against the schema ---------------------------------


@dataclass(frozen=True)
class _Target:
    keys: KeyPath
    returned: str
    # A sub-attribute's ``returned: always`` siblings, which come along with it.
    always_siblings: tuple[KeyPath, ...] = ()


def _resolve_all(rt: ResourceType, paths: Sequence[AttrPath]) -> list[_Target]:
    targets = (_resolve(rt, path) for path in paths)
    return [target for target in targets if target is not None]


def _resolve(rt: ResourceType, path: AttrPath) -> _Target | None:
    if path.uri is None:
        return _resolve_attribute(rt.core_attribute(path.attr), (), path.sub)
    schema = rt.schema(path.uri)
    if schema is rt.core:
        return _resolve_attribute(rt.core_attribute(path.attr), (), path.sub)
    if schema is not None:
        return _resolve_attribute(schema.attribute(path.attr), (schema.id,), path.sub)
    return _resolve_whole_extension(rt, path)


def _resolve_attribute(attribute: Attribute | None, prefix: KeyPath, sub_name: str | None) -> _Target | None:
    if attribute is None:
        return None
    keys = prefix + (attribute.name,)
    if sub_name is None:
        return _Target(keys, attribute.returned)
    sub_attribute = attribute.sub(sub_name)
    if sub_attribute is None:
        return None
    siblings = tuple(keys + (s.name,) for s in attribute.sub_attributes if s.returned == "always")
    return _Target(keys + (sub_attribute.name,), sub_attribute.returned, siblings)


def _resolve_whole_extension(rt: ResourceType, path: AttrPath) -> _Target | None:
    """A bare extension URN: split_attr_path took its last segment for an attribute name."""
    if path.sub is not None:
        return None
    schema = rt.schema(f"{path.uri}:{path.attr}")
    if schema is None or schema is rt.core:
        return None
    return _Target((schema.id,), "default")


# --- Narrowing -------------------------------------------------------------------------


def _default_view(plan: _Plan, resource: dict) -> dict:
    if plan.hidden_roots.isdisjoint(resource):
        return dict(resource)
    return _without(resource, plan.never + plan.on_request)


def _excluding(view: dict, targets: list[_Target]) -> dict:
    return _without(view, tuple(target.keys for target in targets if target.returned != "always"))


def _only(plan: _Plan, resource: dict, targets: list[_Target]) -> dict:
    tree: dict = {}
    for keys in plan.always:
        _add_to_tree(tree, keys)
    for target in targets:
        _add_to_tree(tree, target.keys)
        for keys in target.always_siblings:
            _add_to_tree(tree, keys)
    unnamed_on_request = tuple(keys for keys in plan.on_request if not _is_named(keys, targets))
    return _without(_project(resource, tree), plan.never + unnamed_on_request)


def _is_named(keys: KeyPath, targets: list[_Target]) -> bool:
    return any(target.keys[: len(keys)] == keys for target in targets)


# A selection tree maps each kept key to _WHOLE (keep the value as is) or to the tree of
# its own kept keys.
_WHOLE = object()


def _add_to_tree(tree: dict, keys: KeyPath) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if child is _WHOLE:
            return
        node = child
    node[keys[-1]] = _WHOLE


def _project(value, tree: dict):
    """``value`` narrowed to the keys in ``tree``."""
    if isinstance(value, list):
        elements = (_project(element, tree) for element in value if isinstance(element, dict))
        return [element for element in elements if element]
    if not isinstance(value, dict):
        return value  # named a sub-attribute of a value that is not complex: keep it whole
    out = {}
    for key, child in value.items():
        subtree = tree.get(key)
        if subtree is _WHOLE:
            out[key] = child
        elif subtree is not None:
            narrowed = _project(child, subtree)
            if not _is_empty_container(narrowed):
                out[key] = narrowed
    return out


# Returned by _remove for a container that the removal left empty.
_GONE = object()


def _without(resource: dict, paths: tuple[KeyPath, ...]) -> dict:
    result = resource
    for keys in paths:
        result = _remove(result, keys)
        if result is _GONE:
            return {}
    return dict(result) if result is resource else result


def _remove(value, keys: KeyPath):
    """``value`` without what ``keys`` points at, copying only the containers on the way."""
    if isinstance(value, list):
        results = [_remove(element, keys) for element in value]
        if all(result is element for result, element in zip(results, value)):
            return value
        kept = [result for result in results if result is not _GONE]
        return kept or _GONE
    if not isinstance(value, dict) or keys[0] not in value:
        return value
    head, rest = keys[0], keys[1:]
    out = dict(value)
    child = _remove(out[head], rest) if rest else _GONE
    if child is _GONE:
        del out[head]
    else:
        out[head] = child
    return out or _GONE


def _is_empty_container(value) -> bool:
    return isinstance(value, (dict, list)) and not value
