"""`--rpc HOST:PORT --rpc-key KEY --rpc-timeout S` parsing: typed values or one clear error."""

from __future__ import annotations

import pytest

from harmonizer_deploy.core.errors import HarmonizerError
from harmonizer_deploy.core.remote import DEFAULT_TRACKER_PORT, RemoteSpec, parse_address


def test_addresses_parse_with_the_default_port():
    assert parse_address("10.0.0.5:9191") == ("10.0.0.5", 9191)
    assert parse_address("gpu-pool") == ("gpu-pool", DEFAULT_TRACKER_PORT)
    assert parse_address("[::1]:9190") == ("::1", 9190)
    for bad in ("host:", ":9190", "host:99999", "host:port"):
        with pytest.raises(HarmonizerError, match="is not HOST:PORT"):
            parse_address(bad)


def test_rpc_needs_a_key_and_a_positive_timeout():
    assert RemoteSpec.parse(None, None) is None
    spec = RemoteSpec.parse("127.0.0.1:9190", "cuda-h100", 5)
    assert spec == RemoteSpec("127.0.0.1", 9190, "cuda-h100", 5.0) and spec.tracker == "127.0.0.1:9190"
    with pytest.raises(HarmonizerError, match="--rpc needs --rpc-key"):
        RemoteSpec.parse("127.0.0.1:9190", None)
    with pytest.raises(HarmonizerError, match="--rpc-key needs --rpc"):
        RemoteSpec.parse(None, "cpu")
    with pytest.raises(HarmonizerError, match="--rpc-timeout must be > 0"):
        RemoteSpec.parse("127.0.0.1:9190", "cpu", 0)
