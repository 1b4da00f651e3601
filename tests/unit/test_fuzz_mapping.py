"""Property-based fuzz of mapping files through `linebridge validate`: whatever the file holds,
the command exits 0 with a summary or 2 with the reasons, never with a traceback."""

from __future__ import annotations

import copy
import random

import pytest
import typer.main
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.cli import app
from tests.conftest import AC_LINE

# the command built once (typer's own runner builds it again for each of the 600 examples: a third
# of each example's time), run by click's runner, which typer's builds on
COMMAND = typer.main.get_command(app)
runner = CliRunner()
AC_TEXT = AC_LINE.read_bytes()
AC_DATA = yaml.safe_load(AC_TEXT)
SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: a fifth of the pure-Python one's time

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(), st.text(max_size=12)
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
)


def paths(data, prefix=()):
    """Every (path, value) in a parsed YAML document."""
    yield prefix, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from paths(value, (*prefix, i))


ALL_PATHS = [p for p, _ in paths(AC_DATA) if p]


def mutate(data, path, value, how: str):
    doc = copy.deepcopy(data)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if how == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def validate(content: bytes, tmp_path) -> None:
    path = tmp_path / "fuzzed.yaml"
    path.write_bytes(content)
    result = runner.invoke(COMMAND, ["validate", str(path)], prog_name="linebridge")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        assert result.output.strip(), "a refusal must say why"


settings_ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings_
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(ALL_PATHS), yaml_values, st.sampled_from(["set", "delete"])),
        min_size=1,
        max_size=4,
    )
)
def test_structural_mutations_are_refused_with_reasons(changes, tmp_path):
    doc = AC_DATA
    for path, value, how in changes:
        try:
            doc = mutate(doc, path, value, how)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced that path
    validate(yaml.dump(doc, Dumper=SafeDumper).encode(), tmp_path)


@settings_
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 30))
def test_byte_level_damage_is_refused_with_reasons(seed, flips, tmp_path):
    rng = random.Random(seed)
    content = bytearray(AC_TEXT)
    for _ in range(flips):
        at = rng.randrange(len(content))
        action = rng.randrange(3)
        if action == 0:
            content[at] = rng.randrange(256)
        elif action == 1:
            del content[at : at + rng.randrange(1, 40)]
        else:
            content[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    validate(bytes(content), tmp_path)


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(AC_TEXT.replace(b"Name engraved", b"Nom grav\xe9"))
    result = runner.invoke(COMMAND, ["validate", str(path)], prog_name="linebridge")
    assert result.exit_code == 2
    assert "not UTF-8 text: byte 0xe9 at offset" in result.output


def test_two_stations_on_one_plc_are_refused(tmp_path):
    doc = copy.deepcopy(AC_DATA)
    doc["stations"]["test_b"]["endpoint"] = dict(doc["stations"]["test_a"]["endpoint"])
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = runner.invoke(COMMAND, ["validate", str(path)], prog_name="linebridge")
    assert result.exit_code == 2
    assert "stations.test_b.endpoint: same host, port and device_id as station test_a" in result.output


@pytest.mark.parametrize("content", [b"", b"\x00\x01", b"- a\n- b\n", b"line: [", b"\xff\xfe"])
def test_odd_files(content, tmp_path):
    validate(content, tmp_path)
