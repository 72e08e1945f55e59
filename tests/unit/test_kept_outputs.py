"""The outputs kept beside a record for its redeliveries (state/orders.py): stored without
escaping the message again, read back exactly, and entries saved in the older form still read."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from state.orders import decode_outputs, encode_outputs

outputs = st.lists(st.tuples(st.text(), st.text(), st.text()), max_size=6)


@given(outputs)
def test_outputs_read_back_exactly_whatever_their_text(items: list[tuple[str, str, str]]) -> None:
    assert decode_outputs(encode_outputs(items)) == items


@given(outputs, outputs)
def test_lines_appended_to_an_entry_of_the_older_form_read_back(
    old: list[tuple[str, str, str]], new: list[tuple[str, str, str]]
) -> None:
    """The save script appends an input's outputs to its entry; an entry begun by a version
    that stored JSON arrays only still reads."""
    older = "\n".join(orjson.dumps(list(o)).decode() for o in old)
    text = "\n".join(t for t in (older, encode_outputs(new)) if t)
    assert decode_outputs(text) == old + new


def test_a_message_is_stored_as_it_is_sent() -> None:
    value = '{"order_id":"O1","note":"a \\"quoted\\" word"}'
    line = encode_outputs([("oms.order-events", "O1", value)])
    assert line == '["oms.order-events","O1"]\t' + value
    assert decode_outputs(None) is None
