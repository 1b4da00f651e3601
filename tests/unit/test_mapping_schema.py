"""The shipped JSON Schema of a mapping file is the model's, the default mapping names it for an
editor, and it accepts the default mapping and refuses what the model refuses per field."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.errors import MappingError
from bridge.mapping import parse_mapping
from bridge.mapping.schema import mapping_json_schema
from tests.conftest import AC_LINE

SHIPPED = AC_LINE.parent / "linebridge-mapping.schema.json"


def test_the_shipped_schema_is_the_models():
    assert SHIPPED.read_text() == mapping_json_schema(), "run: linebridge mapping schema -o " + str(SHIPPED)


def test_the_command_prints_it():
    result = CliRunner().invoke(app, ["mapping", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.output) == json.loads(mapping_json_schema())


def test_the_default_mapping_names_it_and_passes_it(ac_data):
    assert AC_LINE.read_text().splitlines()[0] == f"# yaml-language-server: $schema={SHIPPED.name}"
    jsonschema.validate(ac_data, json.loads(SHIPPED.read_text()))


@pytest.mark.parametrize(
    ("path", "value", "word"),
    [
        (("station_types", "press", "cycle_time_s"), -1, "minimum"),
        (("station_types", "press", "telemetry", "press_force_kn", "type"), "int128", "int128"),
        (("stations", "chassis", "endpoint", "port"), 70000, "maximum"),
        (("stations", "chassis", "link", "attempts"), 0, "minimum"),
        (("stations", "chassis", "colour"), "red", "Additional properties"),
    ],
)
def test_an_editor_flags_what_the_model_refuses(ac_data, path, value, word):
    data = copy.deepcopy(ac_data)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=word):
        jsonschema.validate(data, json.loads(SHIPPED.read_text()))


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (
            ("station_types", "press", "parameters", "chassis_size", "address"),
            "100",
            "valid integer, not str '100'",
        ),
        (("station_types", "press", "cycle_time_s"), "20", "valid number, not str '20'"),
        (("stations", "chassis", "endpoint", "port"), "5020", "valid integer, not str '5020'"),
        (("stations", "chassis", "link", "read_write_registers"), "yes", "valid boolean, not str 'yes'"),
        (("products", "AC-W", "quantity", "max"), "50", "valid integer, not str '50'"),
    ],
)
def test_validate_is_as_strict_as_the_schema(ac_data, path, value, says):
    """A quoted number is text: the JSON Schema refuses it, and so does `linebridge validate`, saying
    what was there, instead of coercing it."""
    data = copy.deepcopy(ac_data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json.loads(SHIPPED.read_text()))
    with pytest.raises(MappingError) as refused:
        parse_mapping(data, source="strict.yaml")
    (issue,) = refused.value.issues
    assert str(issue) == f"{'.'.join(path)}: Input should be a {says}"
