"""The blocking Client is generated from AsyncClient: every public async method has a
blocking twin with its parameters and its documentation, and every public method of both is
documented (the docs' client reference is autodoc of these docstrings).

(The twins are driven against a real server from inside a kernel in test_kernel_client.py.)
"""

from __future__ import annotations

import inspect
import pydoc

import pytest

from jupyter_agentbuild.client import AsyncClient, Client

#: AsyncClient method -> its blocking twin's name.
RENAMED = {"aclose": "close"}


def public_methods(cls: type) -> list[str]:
    return [n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)]


def async_methods() -> list[str]:
    return [
        n
        for n in public_methods(AsyncClient)
        if inspect.iscoroutinefunction(getattr(AsyncClient, n))
        or inspect.isasyncgenfunction(getattr(AsyncClient, n))
    ]


@pytest.mark.parametrize("name", async_methods())
def test_every_async_method_has_a_blocking_twin(name: str) -> None:
    original = getattr(AsyncClient, name)
    twin = getattr(Client, RENAMED.get(name, name))
    assert twin.__doc__ == original.__doc__ and original.__doc__
    assert list(inspect.signature(twin).parameters.values()) == list(
        inspect.signature(original).parameters.values()
    )
    returns = inspect.signature(twin).return_annotation
    if inspect.isasyncgenfunction(original):
        assert returns.startswith("Iterator[")  # an iterator, not an async generator
    else:
        assert returns == inspect.signature(original).return_annotation


def test_every_public_method_is_documented() -> None:
    for cls in (Client, AsyncClient):
        for name in dir(cls):
            value = getattr(cls, name)
            if not name.startswith("_") and callable(value):
                assert (value.__doc__ or "").strip(), f"{cls.__name__}.{name} has no docstring"


def test_help_shows_the_documentation() -> None:
    text = pydoc.render_doc(Client.wait, renderer=pydoc.plaintext)
    assert "Block until the build has finished" in text
    assert "wait(self, build_id: 'str', timeout: 'float | None' = None) -> 'Build'" in text
