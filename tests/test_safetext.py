"""safetext.term: the one escaping of outside text before a terminal sees it."""

from hypothesis import given
from hypothesis import strategies as st

from xenevt.safetext import term, term_bytes


@given(st.text())
def test_no_character_a_terminal_acts_on_survives(text):
    out = term(text)
    assert out.isprintable()
    assert not any(0x80 <= ord(c) < 0xA0 or ord(c) in (0x7F, 0x1B) for c in out)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))))
def test_printable_text_is_unchanged(text):
    if text.isprintable():
        assert term(text) is text


def test_each_escape_names_the_character():
    assert term("a\x1b]0;t\x07b") == "a\\x1b]0;t\\x07b"
    assert term("\x9b2J") == "\\x9b2J"  # C1 CSI
    assert term("x\u202ey") == "x\\u202ey"  # bidi override
    assert term("tab\there\nnext") == "tab\\x09here\\x0anext"
    assert term("\U000e0001") == "\\U000e0001"


@given(st.binary())
def test_bytes_from_outside_come_out_printable(data):
    assert term_bytes(data).isprintable()
    assert term_bytes(b"\xff\x1b[2J") == "\\xff\\x1b[2J"


@given(st.text())
def test_json_as_written_here_carries_no_raw_control_either(text):
    import json

    out = json.dumps(text)  # ensure_ascii: the JSON writers' setting
    assert out.isascii() and out.isprintable()
