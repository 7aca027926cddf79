"""The provider is chosen explicitly; ``auto`` takes E2B only with a key
that looks real; an explicit ``e2b`` with a missing or placeholder key is refused up front,
naming the setting, and the key itself never appears in the message."""

from __future__ import annotations

import pytest

from jupyter_agentbuild.errors import ConfigError
from jupyter_agentbuild.providers import check_e2b, default_provider, looks_like_e2b_key

REAL = "e2b_" + "k3Y9fQ2xLm8RtV7wZp4NcB6hJd1sGa5uEy0TiOq"
PLACEHOLDERS = [
    None,
    "",
    "your-e2b-api-key",
    "e2b_your_api_key_here_0000000000000000000",
    "e2b_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "e2b_<insert-your-key-here-please-1234567890>",
    "e2b_changeme1234567890abcdefghijklmnopqrstuv",
    "e2b_short",
    "e2b_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # not random
]


def test_a_real_looking_key_is_recognised_and_placeholders_are_not() -> None:
    assert looks_like_e2b_key(REAL)
    for key in PLACEHOLDERS:
        assert not looks_like_e2b_key(key), key


def test_auto_uses_e2b_only_with_a_real_looking_key() -> None:
    assert default_provider("auto", REAL) == "e2b"
    for key in PLACEHOLDERS:
        assert default_provider("auto", key) == "local", key
    assert default_provider("local", REAL) == "local"


@pytest.mark.parametrize("key", PLACEHOLDERS)
def test_explicit_e2b_with_a_bad_key_is_refused_naming_the_setting(key: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        default_provider("e2b", key)
    message = str(info.value)
    assert "E2B_API_KEY" in message and "e2b_api_key" in message
    if key:
        assert key not in message


def test_explicit_e2b_with_a_real_key() -> None:
    assert default_provider("e2b", REAL) == "e2b"
    check_e2b(REAL)
