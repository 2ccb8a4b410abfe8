"""verify's library entry: keyword-only after the target, with a VerifyOptions object or its fields by name."""

from __future__ import annotations

import pytest

import harmonizer_deploy as hd
from harmonizer_deploy.verification.verify import VerifyOptions


def test_options_object_and_fields_by_name_agree(built):
    options = VerifyOptions(num_inputs=1, batch=1, time_steps=8, seed=3)
    by_object = hd.verify(built / "cpu", "cpu", options=options)
    by_name = hd.verify(built / "cpu", "cpu", num_inputs=1, batch=1, time_steps=8, seed=3)
    assert by_object.passed and by_name.passed
    assert by_object.outputs[0]["max_abs_err"] == by_name.outputs[0]["max_abs_err"]
    # fields given by name override the object's
    assert hd.verify(built / "cpu", "cpu", options=options, seed=4).seed == 4


def test_positional_options_and_unknown_fields_are_refused(built):
    with pytest.raises(TypeError):
        hd.verify(built / "cpu", "cpu", 1)  # the old 16-positional form
    with pytest.raises(TypeError, match="num_input"):
        hd.verify(built / "cpu", "cpu", num_input=1)
