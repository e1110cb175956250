"""dn.parse's quick path for plain DNs gives the full parser's answer (issue 19: 100,000 DNs a plan)."""

import random

import pytest

from reconciler import dn

PIECES = ["CN", "OU", "DC", "O", "cn", " ou", "1.2.840", "x-y", "C N", "", "=", ",", " ", "\t", "é", "#", "a", "Smith", "John ", " Doe", "=b"]


def candidates(seed):
    rng = random.Random(seed)
    yield from ["CN=a,OU=HybridUsers,OU=Corp,DC=contoso,DC=com", "cn = a , ou = b", "CN=,OU=x", "CN=a=b,DC=c", "CN=a,", ",CN=a", "CN", "OU=Ünïcode,DC=x"]
    for _ in range(3000):
        yield "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12)))


def answer(parser, text):
    try:
        return parser(text)
    except dn.DnError:
        return "DnError"


@pytest.mark.parametrize("seed", range(3))
def test_the_quick_path_agrees_with_the_full_parser(seed):
    checked = 0
    for text in candidates(seed):
        if not text.strip() or not dn._PLAIN_BREAKERS.isdisjoint(text):
            continue
        quick = dn._parse_plain(text)
        if quick is not None:
            assert quick == answer(dn._parse_full, text), text
            checked += 1
    assert checked > 100
