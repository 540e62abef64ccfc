"""Safe terminal text and strict JSON for model-written values."""

import json

from flywheel_assets.terminal import safe_text, strict_json


def test_control_bidi_and_invisible_characters_become_escapes_other_text_stays():
    assert safe_text("a\x1b[2Jb\x00c\x7f\x9bd") == r"a\x1b[2Jb\x00c\x7f\x9bd"
    assert safe_text("x\u202ey\u2066z\u200bw\ufeff") == r"x\u202ey\u2066z\u200bw\ufeff"
    assert safe_text("line\nnext\ttab") == r"line\nnext\ttab"
    assert safe_text("line\nnext", keep_newlines=True) == "line\nnext"
    assert safe_text("café 東京 مرحبا 🙂 [bold]") == "café 東京 مرحبا 🙂 [bold]"


def test_strict_json_has_no_nan_or_infinity_anywhere():
    value = [{"a": float("nan"), "b": [float("inf"), -float("inf"), 1.0], "c": {"d": float("nan")}, "e": "NaN"}]
    text = strict_json(value)
    assert json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) == [
        {"a": None, "b": [None, None, 1.0], "c": {"d": None}, "e": "NaN"}]
