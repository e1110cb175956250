"""Distinguished names as RFC 4514 reads them: one definition for every DN comparison.

A DN is a sequence of RDNs separated by unescaped commas, the first the object's
own name, the last the top of the tree. Each RDN is one or more ``type=value``
pairs joined by unescaped ``+``. A value escapes a special character with a
backslash (``\\,``, ``\\+``, ``\\\\``, ``\\"``, ...) or a byte with two hex digits
(``\\2C``, UTF-8). Attribute types are case-insensitive; Active Directory compares
values case-insensitively too. Spaces around separators and around ``=`` are not
part of the name (RFC 4514 section 4; RFC 2253 writers put them there), while an
escaped space (``\\ ``) is.

So ``CN=Smith\\, John,OU=HybridUsers,DC=contoso,DC=com`` is the user "Smith, John"
*inside* HybridUsers, and ``CN=Doe\\,OU=HybridUsers,OU=Corp,DC=contoso,DC=com`` is the
user "Doe,OU=HybridUsers" directly in Corp, *not* in HybridUsers, although its text
ends like that OU's. Comparing text suffixes gets both wrong in some spelling.
"""

from __future__ import annotations

import functools

_SPECIAL = frozenset(' "#+,;<=>\\')
_HEX = frozenset("0123456789abcdefABCDEF")


class DnError(ValueError):
    """Not a distinguished name; the message says where."""


# A DN with none of these needs no character-by-character reading (issue 19: a plan of
# 100,000 users parses 100,000 DNs); with any of them, or anything unusual, the full parser decides.
_PLAIN_BREAKERS = frozenset('\\+"<>;')


# Containers are parsed again and again, each user's DN about once: a small cache keeps the
# containers without holding 65,536 parsed user DNs (about 60 MiB at 100,000 users).
@functools.lru_cache(maxsize=4096)
def parse(text):
    """The DN as a tuple of RDNs, each a sorted tuple of ``(type, value)``, both case-folded.

    Raises :class:`DnError` for text that is not a DN.
    """
    if text is None or not text.strip():
        raise DnError("an empty distinguished name")
    if _PLAIN_BREAKERS.isdisjoint(text):
        plain = _parse_plain(text)
        if plain is not None:
            return plain
    return _parse_full(text)


def _parse_plain(text):
    """:func:`_parse_full`'s answer for a DN without escapes, quotes or multi-valued RDNs; None if unsure.

    Every comma of such a DN separates two RDNs: the first RDN is read here and the rest,
    the object's container, through :func:`parse` (and its cache). The containers' RDNs
    are then shared by all the DNs in them, and a user's DN costs one RDN to read."""
    first, comma, rest = text.partition(",")
    kind, equals, value = first.partition("=")
    folded = _PLAIN_KINDS.get(kind)
    if folded is None:
        folded = _plain_kind(kind)
    if not equals or not folded:
        return None  # the full parser says what is wrong
    rdn = ((folded, value.strip(" ").casefold()),)
    if not comma:
        return (rdn,)
    try:
        container = parse(rest)
    except DnError:
        return None  # said about the whole text by the full parser
    return (rdn, *container)


_PLAIN_KINDS = {}  # an attribute type as written -> case-folded, or "" if not an attribute type


def _plain_kind(kind):
    stripped = kind.strip()
    folded = stripped.casefold() if stripped and (stripped.replace("-", "").isalnum() or _is_oid(stripped)) else ""
    if len(_PLAIN_KINDS) < 256:  # a handful in practice (CN, OU, DC...): a bound all the same
        _PLAIN_KINDS[kind] = folded
    return folded


def _parse_full(text):
    rdns, avas = [], []
    i, n = 0, len(text)
    while True:
        kind, i = _type(text, i)
        value, i = _value(text, i)
        avas.append((kind, value))
        if i >= n:
            rdns.append(tuple(sorted(avas)))
            return tuple(rdns)
        separator = text[i]
        i += 1
        if separator == ",":
            rdns.append(tuple(sorted(avas)))
            avas = []
        elif separator != "+":  # pragma: no cover - _value stops only at , + or the end
            raise DnError(f"unexpected {separator!r} at position {i}")


def _type(text, i):
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    start = i
    while i < n and text[i] not in "=,+":
        i += 1
    kind = text[start:i].strip()
    if i >= n or text[i] != "=":
        raise DnError(f"no '=' after {kind or 'nothing'!r} at position {start}")
    if not kind or not (kind.replace("-", "").isalnum() or _is_oid(kind)):
        raise DnError(f"{kind!r} at position {start} is not an attribute type")
    return kind.casefold(), i + 1


def _is_oid(kind):
    parts = kind.split(".")
    return len(parts) > 1 and all(p.isdigit() for p in parts)


def _value(text, i):
    """Read one value from ``i`` up to an unescaped , or + (or the end)."""
    n = len(text)
    while i < n and text[i] == " ":
        i += 1
    out = bytearray()
    significant = 0  # length of ``out`` up to its last escaped or non-space character
    while i < n:
        ch = text[i]
        if ch in ",+":
            break
        if ch == "\\":
            if i + 1 >= n:
                raise DnError(f"a backslash at the end (position {i})")
            nxt = text[i + 1]
            if nxt in _HEX and i + 2 < n and text[i + 2] in _HEX:
                out.append(int(text[i + 1 : i + 3], 16))
                i += 3
            elif nxt in _SPECIAL:
                out += nxt.encode()
                i += 2
            else:
                raise DnError(f"'\\{nxt}' at position {i} is not an escape")
            significant = len(out)
            continue
        if ch in '"<>;':
            raise DnError(f"{ch!r} at position {i} must be escaped")
        out += ch.encode()
        if ch != " ":
            significant = len(out)
        i += 1
    try:
        value = bytes(out[:significant]).decode("utf-8")
    except UnicodeDecodeError:
        raise DnError("an escaped byte sequence that is not UTF-8") from None
    return value.casefold(), i


def is_dn(text):
    try:
        parse(text)
    except DnError:
        return False
    return True


def _key(text):
    """The parsed DN, or the case-folded text when it does not parse (then only equal text matches)."""
    try:
        return parse(text)
    except DnError:
        return (("", (text or "").strip().casefold()),)


def same(a, b):
    """Whether two DNs name the same object."""
    return _key(a) == _key(b)


def depth(text):
    return len(_key(text))


def under(dn, container):
    """Whether ``dn`` is ``container`` or anywhere below it."""
    if not dn or not container:
        return False
    return _under(_key(dn), _key(container))


def _under(inner, outer):
    return len(inner) >= len(outer) and inner[len(inner) - len(outer) :] == outer


def below(dn, container):
    """Whether ``dn`` is strictly below ``container``."""
    if not dn or not container:
        return False
    first, comma, rest = dn.partition(",")
    if comma and _plain_rdn(first):
        return _holds(container, rest)
    inner, outer = _key(dn), _key(container)
    return len(inner) > len(outer) and _under(inner, outer)


def _plain_rdn(text):
    """Whether ``text`` is one RDN that :func:`_parse_plain` reads (then the first comma after
    it ends it, and what follows is the DN of its container)."""
    if not _PLAIN_BREAKERS.isdisjoint(text):
        return False
    kind, equals, _value = text.partition("=")
    folded = _PLAIN_KINDS.get(kind)
    if folded is None:
        folded = _plain_kind(kind)
    return bool(equals and folded)


# A plan asks of 100,000 users whether each is below an OU (issue 19): their DNs are all
# different, their containers a handful. Only the container's text is looked at, and the
# answer for it kept.
@functools.lru_cache(maxsize=4096)
def _holds(container, parent):
    """Whether the DN ``parent`` is ``container`` or below it (False if ``parent`` is not a DN:
    then neither is a DN with an RDN before it)."""
    try:
        inner = parse(parent)
    except DnError:
        return False
    return _under(inner, _key(container))


def same_set(a, b):
    """Whether two lists of DNs name the same containers (order and spelling aside)."""
    return {_key(x) for x in a} == {_key(x) for x in b}


def in_scope(dn, included, excluded):
    """The AD connector's OU filtering: the deepest matching container decides, an
    exclusion only when it is deeper than the deepest inclusion (domain-facts A8)."""
    if not dn:
        return False
    inner = _key(dn)
    best_in = best_out = -1
    for container in included:
        if container and len(outer := _key(container)) > best_in and _under(inner, outer):
            best_in = len(outer)
    if best_in < 0:
        return False
    for container in excluded:
        if container and len(outer := _key(container)) > best_in and _under(inner, outer):
            return False
    return True


def rdn_texts(text):
    """The RDNs of ``text`` as written (escapes kept, outer spaces trimmed), split at unescaped commas."""
    parse(text)  # raises DnError for what is not a DN
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == ",":
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return parts


_CONTAINER_TYPES = frozenset({"ou", "cn", "dc", "o"})


def is_container(text):
    """A DN a desired state may name as an OU or container: OU/CN/DC/O parts, none empty."""
    try:
        rdns = parse(text)
    except DnError:
        return False
    return all(kind in _CONTAINER_TYPES and value for rdn in rdns for kind, value in rdn)


def domain_of(text):
    """The domain a DN lives in: its DC= components from the first on (``DC=contoso,DC=com``),
    or "" when it has none or is not a DN."""
    try:
        parts = rdn_texts(text)
    except DnError:
        return ""
    index = next((i for i, p in enumerate(parts) if p.lower().startswith("dc=")), None)
    return ",".join(parts[index:]) if index is not None else ""


def domain_dn(name):
    """``contoso.com`` as a DN (``DC=contoso,DC=com``); "" when ``name`` is not a domain name."""
    labels = (name or "").strip().split(".")
    if len(labels) < 2 or not all(label and all(ch.isalnum() or ch == "-" for ch in label) for label in labels):
        return ""
    return ",".join(f"DC={label}" for label in labels)


def parent(text):
    """The DN of the container that holds ``text`` ("" for a DN of one RDN or not a DN)."""
    try:
        parts = rdn_texts(text)
    except DnError:
        return ""
    return ",".join(parts[1:])
