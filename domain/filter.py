"""SCIM filters and PATCH paths: text to AST (RFC 7644 §3.4.2.2, §3.5.2).

The node types live in ``domain.filter_ast`` (importable from here too). The AST is
schema-free: names are kept as the client wrote them (case and all); the consumers (the
SQL compiler, the PATCH engine) resolve them against a ResourceType.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from domain.errors import InvalidFilter, InvalidPath, ScimError
from domain.filter_ast import And, AttrPath, Compare, Filter, Not, Or, PatchPath, Present, ValuePath

__all__ = ["And", "AttrPath", "Compare", "Filter", "Not", "Or", "PatchPath", "Present", "ValuePath",
           "parse_filter", "parse_path", "split_attr_path", "MAX_FILTER_LENGTH", "MAX_NESTING", "MAX_COMPARISONS"]


# --- Parsing -------------------------------------------------------------------------
#
# A hand-written tokenizer and recursive-descent parser for RFC 7644 §3.4.2.2:
#
#   filter     := or
#   or         := and ("or" and)*
#   and        := primary ("and" primary)*
#   primary    := "(" filter ")" | "not" "(" filter ")" | attrPath "[" filter "]" [".sub" test]
#               | attrPath test
#   test       := "pr" | compareOp value
#
# The limits below bound the work (and the recursion) one request can cause.

MAX_FILTER_LENGTH = 4096
MAX_NESTING = 16  # parentheses, `not (…)` and `[…]` each count as one level
MAX_COMPARISONS = 64  # Compare and Present nodes

COMPARE_OPERATORS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
_KEYWORDS = frozenset({"and", "or", "not"})

_ATTR_NAME = re.compile(r"[A-Za-z$][A-Za-z0-9_$-]*")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?P<fraction>\.[0-9]+)?(?P<exponent>[eE][+-]?[0-9]+)?")
_WHITESPACE = frozenset(" \t\r\n")
_PUNCTUATION = frozenset("()[]")
_WORD_END = _WHITESPACE | _PUNCTUATION | {'"'}


def parse_filter(text: str) -> Filter:
    """Parse a ``filter`` query parameter; any problem raises InvalidFilter."""
    parser = _Parser(text, InvalidFilter, noun="filter")
    return parser.filter()


def parse_path(text: str) -> PatchPath:
    """Parse a PATCH operation's ``path``; any problem raises InvalidPath."""
    parser = _Parser(text, InvalidPath, noun="path")
    return parser.patch_path()


def split_attr_path(text: str) -> AttrPath | None:
    """``[uri:]attr[.sub]`` as an AttrPath, or None when ``text`` is not one.

    The URI is everything up to the last ``:``, so the dots in ``…:2.0:User:manager.value``
    stay in the URI and only the one after ``manager`` separates a sub-attribute. A bare
    extension URN (``urn:…:2.0:User``) comes back as uri ``urn:…:2.0``, attr ``User``: only
    a schema-aware consumer can tell the two apart.
    """
    uri, colon, rest = text.rpartition(":")
    if colon and not uri:
        return None
    attr, dot, sub = rest.partition(".")
    if not _is_attr_name(attr) or (dot and not _is_attr_name(sub)):
        return None
    return AttrPath(attr, sub if dot else None, uri or None)


def _is_attr_name(text: str) -> bool:
    return _ATTR_NAME.fullmatch(text) is not None


@dataclass(frozen=True)
class _Token:
    kind: str  # "(" ")" "[" "]" "string" "word" "end"
    text: str  # as written in the source
    position: int  # offset into the source, from 0
    value: str | None = None  # a string token's decoded value


class _Parser:
    def __init__(self, text: str, error: type[ScimError], noun: str):
        self._error = error
        self._noun = noun
        if len(text) > MAX_FILTER_LENGTH:
            raise error(f"The {noun} is too long: {len(text)} characters, at most {MAX_FILTER_LENGTH} are allowed.")
        self._tokens = _Tokenizer(text, self._fail).tokens()
        self._index = 0
        self._depth = 0
        self._comparisons = 0
        self._in_value_filter = False

    # -- entry points

    def filter(self) -> Filter:
        if self._peek().kind == "end":
            raise self._fail(f"The {self._noun} is empty.")
        result = self._or()
        self._expect_end()
        return result

    def patch_path(self) -> PatchPath:
        token = self._peek()
        if token.kind != "word":
            if token.kind == "end":
                raise self._fail("The path is empty.")
            raise self._unexpected(token, "an attribute name")
        self._advance()
        attr = self._attr_path(token)
        value_filter = sub = None
        if self._peek().kind == "[":
            value_filter = self._bracketed_filter(attr)
            sub = self._optional_sub_attribute()
        self._expect_end()
        return PatchPath(attr, value_filter, sub)

    # -- grammar

    def _or(self) -> Filter:
        left = self._and()
        while self._at_keyword("or"):
            self._advance()
            left = Or(left, self._and())
        return left

    def _and(self) -> Filter:
        left = self._primary()
        while self._at_keyword("and"):
            self._advance()
            left = And(left, self._primary())
        return left

    def _primary(self) -> Filter:
        token = self._peek()
        if token.kind == "(":
            return self._group()
        if self._at_keyword("not"):
            return self._negation()
        if token.kind == "word" and token.text.lower() not in _KEYWORDS:
            return self._attribute_expression()
        raise self._unexpected(token, "an attribute name, '(' or 'not'")

    def _group(self) -> Filter:
        opening = self._advance()
        with self._nested(opening):
            inner = self._or()
        self._expect_closing(")", opening)
        return inner

    def _negation(self) -> Filter:
        keyword = self._advance()
        opening = self._peek()
        if opening.kind != "(":
            raise self._unexpected(opening, "'(' after 'not'")
        self._advance()
        with self._nested(keyword):
            inner = self._or()
        self._expect_closing(")", opening)
        return Not(inner)

    def _attribute_expression(self) -> Filter:
        token = self._advance()
        path = self._attr_path(token)
        if self._peek().kind != "[":
            return self._test(path, after=token)
        value_filter = self._bracketed_filter(path)
        sub_token = self._peek()
        sub = self._optional_sub_attribute()
        if sub is None:
            return ValuePath(path, value_filter)
        # Entra writes `emails[type eq "work"].value eq "x"`, which RFC 7644 has no
        # production for; it means "an element with type work and value x".
        return ValuePath(path, And(value_filter, self._test(AttrPath(sub), after=sub_token)))

    def _bracketed_filter(self, path: AttrPath) -> Filter:
        opening = self._advance()
        if self._in_value_filter:
            raise self._fail(f"Value filters cannot be nested (the '[' at character {opening.position + 1}).")
        if path.sub is not None:
            raise self._fail(
                f"A value filter follows a multi-valued attribute, not a sub-attribute "
                f"(the '[' at character {opening.position + 1})."
            )
        with self._nested(opening), self._value_filter():
            inner = self._or()
        self._expect_closing("]", opening)
        return inner

    def _optional_sub_attribute(self) -> str | None:
        token = self._peek()
        if token.kind != "word" or not token.text.startswith("."):
            return None
        self._advance()
        name = token.text[1:]
        if not _is_attr_name(name):
            raise self._fail(f"Invalid sub-attribute {_shorten(token.text)} at character {token.position + 1}.")
        return name

    def _test(self, path: AttrPath, after: _Token) -> Compare | Present:
        token = self._peek()
        if token.kind != "word":
            raise self._unexpected(token, f"an operator after {_shorten(after.text)}")
        operator = token.text.lower()
        if operator != "pr" and operator not in COMPARE_OPERATORS:
            raise self._fail(f"Unknown operator {_shorten(token.text)} at character {token.position + 1}.")
        self._advance()
        self._count_comparison()
        if operator == "pr":
            return Present(path)
        return Compare(path, operator, self._value(after=token))

    def _value(self, after: _Token) -> str | int | float | bool | None:
        token = self._peek()
        if token.kind == "string":
            self._advance()
            return token.value
        if token.kind != "word" or token.text.lower() in _KEYWORDS:
            raise self._unexpected(token, f"a value after {_shorten(after.text)}")
        self._advance()
        return self._bare_value(token)

    def _bare_value(self, token: _Token) -> str | int | float | bool | None:
        """true/false/null, a JSON number, or (an Entra quirk) an unquoted string."""
        lowered = token.text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered == "null":
            return None
        number = _JSON_NUMBER.fullmatch(token.text)
        if number is None:
            return token.text
        if number["fraction"] is None and number["exponent"] is None:
            return int(token.text)
        value = float(token.text)
        if not math.isfinite(value):
            raise self._fail(f"The number at character {token.position + 1} is out of range.")
        return value

    def _attr_path(self, token: _Token) -> AttrPath:
        path = split_attr_path(token.text)
        if path is None:
            raise self._fail(f"Invalid attribute path {_shorten(token.text)} at character {token.position + 1}.")
        return path

    # -- limits

    @contextmanager
    def _nested(self, opening: _Token) -> Iterator[None]:
        self._depth += 1
        if self._depth > MAX_NESTING:
            raise self._fail(
                f"The {self._noun} is too complex: it nests deeper than {MAX_NESTING} levels "
                f"(at character {opening.position + 1})."
            )
        try:
            yield
        finally:
            self._depth -= 1

    @contextmanager
    def _value_filter(self) -> Iterator[None]:
        self._in_value_filter = True
        try:
            yield
        finally:
            self._in_value_filter = False

    def _count_comparison(self) -> None:
        self._comparisons += 1
        if self._comparisons > MAX_COMPARISONS:
            raise self._fail(f"The {self._noun} is too complex: it has more than {MAX_COMPARISONS} comparisons.")

    # -- tokens

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token

    def _at_keyword(self, keyword: str) -> bool:
        token = self._peek()
        return token.kind == "word" and token.text.lower() == keyword

    def _expect_closing(self, kind: str, opening: _Token) -> None:
        token = self._peek()
        if token.kind != kind:
            raise self._unexpected(token, f"'{kind}' to close the '{opening.text}' at character {opening.position + 1}")
        self._advance()

    def _expect_end(self) -> None:
        token = self._peek()
        if token.kind == "end":
            return
        if token.kind in (")", "]"):
            raise self._fail(f"Unbalanced '{token.text}' at character {token.position + 1}.")
        expected = "'and', 'or' or the end of the filter" if self._noun == "filter" else "the end of the path"
        raise self._unexpected(token, expected)

    def _unexpected(self, token: _Token, expected: str) -> ScimError:
        if token.kind == "end":
            return self._fail(f"Expected {expected}, but the {self._noun} ends.")
        return self._fail(f"Expected {expected}, found {_shorten(token.text)} at character {token.position + 1}.")

    def _fail(self, detail: str) -> ScimError:
        return self._error(detail)


class _Tokenizer:
    """Splits the source into punctuation, JSON strings and words.

    A word is any run of characters up to whitespace, punctuation or a quote; the parser
    decides whether it is an attribute path, an operator, a keyword or a bare value.
    """

    def __init__(self, text: str, fail: Callable[[str], ScimError]):
        self._text = text
        self._fail = fail

    def tokens(self) -> list[_Token]:
        text, tokens, position = self._text, [], 0
        while position < len(text):
            char = text[position]
            if char in _WHITESPACE:
                position += 1
            elif char in _PUNCTUATION:
                tokens.append(_Token(char, char, position))
                position += 1
            elif char == '"':
                token = self._string(position)
                tokens.append(token)
                position += len(token.text)
            else:
                end = position
                while end < len(text) and text[end] not in _WORD_END:
                    end += 1
                tokens.append(_Token("word", text[position:end], position))
                position = end
        tokens.append(_Token("end", "", len(text)))
        return tokens

    def _string(self, start: int) -> _Token:
        text, position = self._text, start + 1
        while position < len(text):
            char = text[position]
            if char == "\\":
                position += 2
            elif char == '"':
                source = text[start : position + 1]
                return _Token("string", source, start, self._decode(source, start))
            else:
                position += 1
        raise self._fail(f"Unterminated string starting at character {start + 1}.")

    def _decode(self, source: str, start: int) -> str:
        try:
            value = json.loads(source, strict=False)  # strict=False: allow raw tabs etc.
        except ValueError:
            raise self._fail(f"Invalid escape sequence in the string at character {start + 1}.") from None
        if any("\ud800" <= char <= "\udfff" for char in value):
            raise self._fail(f"Unpaired surrogate escape in the string at character {start + 1}.")
        return value


def _shorten(text: str, limit: int = 40) -> str:
    """Quote a piece of client input for an error detail, cut to a readable length."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"'{text}'"
