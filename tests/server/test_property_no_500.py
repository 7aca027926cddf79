"""Property: whatever a client sends, the API answers in the contract's shape and never 500.

Hypothesis draws build specs (valid-looking ones and garbage, nested, huge, with control
characters and lone surrogates), query parameters and artifact paths, and sends them to a
real server (``jp_fetch``). Step commands are drawn only from harmless ones: a spec that
passes validation really runs. The engine runs in a worker thread so the server keeps
running on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api

EXAMPLES = 500
SAFE_COMMANDS = ["true", "echo ok", "exit 3", "printf 'a\\nb'", "echo $T_A"]

# text of every kind, lone surrogates and control characters included
any_text = st.text(st.characters(blacklist_categories=()), max_size=40)
odd_text = st.one_of(
    any_text,
    st.sampled_from(["", " ", "\x00", "\n", "..", "/", "\\", "%00", "a" * 300, "é" * 200]),
    st.integers(0, 6000).map(lambda n: "w" * n),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**309, max_value=10**330),  # beyond every float
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e308, 10**400, 2**63, -(2**63) - 1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)
    ),
    max_leaves=10,
)
#: anything but a string: where a string would be run by bash
not_strings = st.one_of(
    st.none(), st.booleans(), numbers, st.lists(scalars, max_size=2), st.just({})
)
paths = st.one_of(
    odd_text,
    st.text(st.sampled_from(list("ab./\\\x00\n %é*?[]")), max_size=30),
    st.integers(0, 3200).map(lambda n: "d/" * n + "f"),
    st.integers(0, 300).map(lambda n: "x" * n + "/f"),
)
commands = st.sampled_from(SAFE_COMMANDS)
simple_paths = st.from_regex(r"[a-z]{1,5}(/[a-z]{1,5}){0,2}(\.txt)?", fullmatch=True)
env_names = st.one_of(st.from_regex(r"T_[A-Z0-9_]{0,8}", fullmatch=True), odd_text)


def field(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value (so the fields validated after this one are reached too),
    sometimes an odd one."""
    return st.one_of(valid, valid, valid, odd)


steps = field(
    st.lists(
        st.one_of(
            commands,
            st.fixed_dictionaries(
                {"run": commands}, optional={"name": st.text(max_size=10), "timeout": numbers}
            ),
        ),
        min_size=1,
        max_size=3,
    ),
    st.one_of(
        not_strings,
        st.lists(
            st.one_of(
                commands,
                not_strings,
                st.fixed_dictionaries(
                    {"run": st.one_of(commands, not_strings)},
                    optional={"name": odd_text, "timeout": numbers, "extra": scalars},
                ),
            ),
            max_size=3,
        ),
    ),
)
env = field(
    st.dictionaries(
        st.from_regex(r"T_[A-Z0-9_]{0,8}", fullmatch=True),
        st.one_of(
            st.text(max_size=20),
            st.fixed_dictionaries({"value": st.text(max_size=20), "secret": st.booleans()}),
        ),
        max_size=3,
    ),
    st.one_of(
        st.dictionaries(
            env_names,
            st.one_of(
                odd_text,
                st.fixed_dictionaries(
                    {"value": st.one_of(odd_text, scalars)}, optional={"secret": scalars}
                ),
                json_values,
            ),
            max_size=3,
        ),
        json_values,
    ),
)
globs = field(
    st.lists(st.sampled_from(["*.txt", "**", "dist/**"]), max_size=2), st.lists(paths, max_size=3)
)
specs = st.one_of(
    st.fixed_dictionaries(
        {"steps": steps},
        optional={
            "name": field(st.text(max_size=20), json_values),
            "provider": field(
                st.sampled_from(["local", "auto"]), st.one_of(st.just("e2b"), scalars)
            ),
            "workspace": field(st.just("."), st.one_of(paths, json_values)),
            "files": field(
                st.dictionaries(simple_paths, st.text(max_size=30), max_size=3),
                st.one_of(
                    st.dictionaries(paths, st.one_of(odd_text, scalars), max_size=3), json_values
                ),
            ),
            "env": env,
            "timeout": field(st.floats(1, 100), st.one_of(numbers, scalars)),
            "artifacts": field(
                st.fixed_dictionaries(
                    {"paths": globs},
                    optional={
                        "exclude": globs,
                        "when": field(st.sampled_from(["success", "always"]), scalars),
                    },
                ),
                json_values,
            ),
            "preview": field(
                st.fixed_dictionaries(
                    {"command": st.just("true")},
                    optional={
                        "port": field(st.integers(1024, 65535), numbers),
                        "path": field(
                            st.just("/"), st.one_of(paths.map(lambda p: "/" + p), scalars)
                        ),
                        "ready_timeout": field(st.just(0.5), numbers),
                    },
                ),
                st.one_of(st.fixed_dictionaries({"command": not_strings}), json_values),
            ),
            "unknown": json_values,
        },
    ),
    st.fixed_dictionaries({"steps": steps}),
    json_values,
)
raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.integers(1, 200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 200_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from(["", "null", "{", '{"steps": ["true"]', "NaN", "1" * 5000]),
)
# query values: what a URL can carry (no lone surrogates: they cannot be encoded)
query_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
query_values = st.one_of(
    query_text,
    st.integers().map(str),
    st.sampled_from(["99999999999999999999", "-1", "0", "1e3", "١", "1_0", " 1", "0x10"]),
)
queries = st.dictionaries(
    st.one_of(
        st.sampled_from(["status", "limit", "before", "after", "format", "download"]),
        query_text,
    ),
    query_values,
    max_size=4,
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
artifact_headers = st.dictionaries(
    st.sampled_from(["Range", "If-None-Match", "If-Range"]), header_text, max_size=3
)
build_ids = st.one_of(
    st.just("KNOWN"), st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), query_text
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, list[str], dict[str, Any]]:
    """``(method, path parts under agentbuild/api, fetch arguments)``."""
    kind = draw(st.sampled_from(["spec", "spec", "spec", "raw", "query", "artifact", "verb"]))
    if kind == "spec":
        body = json.dumps(draw(specs))  # NaN, Infinity and huge numbers as Python writes them
        return "POST", ["builds"], {"body": body}
    if kind == "raw":
        return "POST", ["builds"], {"body": draw(raw_bodies)}
    build = draw(build_ids)
    if kind == "query":
        tail = draw(st.sampled_from([[], ["logs"], ["artifacts"], ["artifacts.zip"], ["stream"]]))
        parts = ["builds"] if draw(st.booleans()) else ["builds", build, *tail]
        return "GET", parts, {"params": draw(queries)}
    if kind == "artifact":
        path = draw(st.one_of(st.sampled_from(ARTIFACT_NAMES), paths))
        method = draw(st.sampled_from(["GET", "HEAD"]))
        params = draw(st.one_of(st.just({}), st.just({"download": "1"}), queries))
        headers = draw(artifact_headers)
        return (
            method,
            ["builds", build, "artifacts", *path.split("/")],
            {
                "params": params,
                "headers": headers,
            },
        )
    verb = draw(st.sampled_from([("POST", "cancel"), ("POST", "preview/stop"), ("DELETE", "")]))
    parts = ["builds", draw(build_ids.filter(lambda b: b != "KNOWN")), *verb[1].split("/")]
    return verb[0], [p for p in parts if p], {"body": "" if verb[0] == "POST" else None}


ARTIFACT_NAMES = ["a\nb.txt", 'q"uote.txt', "sp ace.txt", "é.txt", "dir/in.txt", "%41.txt"]


async def test_no_input_gives_a_500(api: Api) -> None:
    known = await api.create(
        {
            "steps": [
                "printf 1 > \"$(printf 'a\\nb.txt')\"; printf 2 > 'q\"uote.txt'; "
                "printf 3 > 'sp ace.txt'; printf 4 > é.txt; mkdir dir; printf 5 > dir/in.txt; "
                "printf 6 > %41.txt"
            ],
            "artifacts": {"paths": ["**"]},
        }
    )
    done = await api.finish(known["id"])
    assert done["status"] == "succeeded" and done["artifacts"]["count"] == 6, done
    loop = asyncio.get_running_loop()
    seen: Counter[int] = Counter()

    async def send(method: str, parts: list[str], kwargs: dict[str, Any]) -> None:
        parts = [known["id"] if p == "KNOWN" else p for p in parts]
        if kwargs.get("body") is None:
            kwargs.pop("body", None)
        response = await api.fetch(
            "agentbuild",
            "api",
            *parts,
            method=method,
            raise_error=False,
            allow_nonstandard_methods=True,
            **kwargs,
        )
        seen[response.code] += 1
        where = (method, parts, kwargs.get("params"), str(kwargs.get("body"))[:200])
        assert response.code < 500, (where, response.code, response.body[:300])
        if response.code >= 400 and method != "HEAD":
            error = json.loads(response.body)["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str), where
            assert "Traceback" not in response.body.decode("utf-8", "replace"), where

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def check(request: tuple[str, list[str], dict[str, Any]]) -> None:
        method, parts, kwargs = request
        asyncio.run_coroutine_threadsafe(send(method, parts, dict(kwargs)), loop).result(60)

    await asyncio.to_thread(check)
    assert sum(seen.values()) >= EXAMPLES
    assert seen[400] and (seen[200] or seen[201]) and seen[404], seen
