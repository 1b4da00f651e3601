"""Mapping validation: the AC line loads, and each kind of mistake is named with its YAML path."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from bridge.errors import MappingError
from bridge.mapping import load_deployment, load_mapping, parse_mapping
from bridge.mapping.checks import register_usage
from bridge.mapping.derive import derive_parameters
from bridge.mapping.reload import reload_changes
from tests.conftest import AC_LINE


def issues_of(data) -> list[str]:
    with pytest.raises(MappingError) as info:
        parse_mapping(data, source="test.yaml")
    return [str(issue) for issue in info.value.issues]


def one_issue(data) -> str:
    issues = issues_of(data)
    assert len(issues) == 1, issues
    return issues[0]


def test_ac_line_is_complete(ac_mapping):
    assert list(ac_mapping.stations) == [
        "chassis", "coil", "compressor", "charge", "panel", "test_a", "test_b", "pack",
    ]  # fmt: skip
    product = ac_mapping.products["AC-W"]
    assert set(product.options) == {
        "capacity_btu", "compressor", "panel_color", "panel_finish", "wifi_module", "engraving", "region",
    }  # fmt: skip
    assert product.quantity.max == 50
    assert product.route[5] == ["test_a", "test_b"]
    assert register_usage(ac_mapping, "panel") == {"holding": 13, "coil": 1, "input": 15, "discrete_input": 1}
    assert ac_mapping.resolved_fields("coil")["fin_pitch_mm"].word_order == "little"
    assert ac_mapping.resolved_fields("chassis")["strokes"].word_order == "big"


def test_overlapping_registers_name_both_fields(ac_data):
    ac_data["station_types"]["press"]["telemetry"]["extra"] = {"address": 100, "type": "uint16"}
    issue = one_issue(ac_data)
    assert "station_types.press.parameters.chassis_size (holding 100)" in issue
    assert "station_types.press.telemetry.extra (holding 100)" in issue
    assert "overlap" in issue


def test_a_field_overlapping_the_handshake_block(ac_data):
    ac_data["station_types"]["pack"]["results"]["label_count"] = {
        "table": "input", "address": 6, "type": "uint32",
    }  # fmt: skip
    issue = one_issue(ac_data)
    assert "handshake.status_address (input 0-7)" in issue
    assert "results.label_count (input 6-7)" in issue


@pytest.mark.parametrize(("address", "fits"), [(8, True), (123, True), (124, False), (200, False)])
def test_results_read_with_the_status_must_fit_one_read_after_it(ac_data, address, fits):
    """One read of at most 125 registers from the status block (input 0-7) must reach a uint32 result."""
    run_test = ac_data["station_types"]["run_test"]
    assert run_test["handshake"]["results_with_status"] is True
    run_test["results"] = {
        "eer": {"table": "input", "address": address, "type": "uint32"},
        "passed": {"table": "discrete_input", "address": 0, "type": "bool"},  # bits: read apart
    }
    if fits:
        assert parse_mapping(ac_data, source="test.yaml").station_type("test_a").handshake.results_with_status
        return
    issue = one_issue(ac_data)
    assert issue.startswith("station_types.run_test")
    assert "results.eer: handshake.results_with_status reads inputs 0 to 124 in one request" in issue
    assert f"input {address} (2 registers) is not inside" in issue


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"address": 65535, "type": "uint32"}, "address 65535 + 2 registers runs past 65535"),
        ({"address": 70000, "type": "uint16"}, "less than or equal to 65535"),
        ({"address": -1, "type": "uint16"}, "greater than or equal to 0"),
    ],
)
def test_addresses_out_of_range(ac_data, field, message):
    ac_data["station_types"]["press"]["parameters"]["chassis_size"] = field
    issue = one_issue(ac_data)
    assert issue.startswith("station_types.press.parameters.chassis_size")
    assert message in issue


def test_string_option_too_long_for_its_registers(ac_data):
    ac_data["products"]["AC-W"]["options"]["engraving"]["max_length"] = 20
    issue = one_issue(ac_data)
    assert issue.startswith("products.AC-W.parameters.panel_fit.engraving.from")
    assert "allows 20 characters but the field holds 16 (8 registers)" in issue


def test_string_constant_too_long(ac_data):
    ac_data["products"]["AC-W"]["parameters"]["panel_fit"]["engraving"] = {"constant": "X" * 17}
    issue = one_issue(ac_data)
    assert issue == (
        "products.AC-W.parameters.panel_fit.engraving.constant: 17 characters do not fit 8 registers (16 max)"
    )


def test_enum_value_missing_from_a_table(ac_data):
    del ac_data["products"]["AC-W"]["parameters"]["charging"]["charge_g"]["table"][18000]
    assert (
        one_issue(ac_data)
        == "products.AC-W.parameters.charging.charge_g.table: no entry for capacity_btu=18000"
    )


def test_nested_table_missing_a_value(ac_data):
    table = ac_data["products"]["AC-W"]["parameters"]["compressor_fit"]["compressor_model"]["table"]
    del table["inverter"][24000]
    assert one_issue(ac_data) == (
        "products.AC-W.parameters.compressor_fit.compressor_model.table.inverter:"
        " no entry for capacity_btu=24000"
    )


def test_table_value_out_of_the_fields_range(ac_data):
    ac_data["products"]["AC-W"]["parameters"]["press"]["chassis_size"]["table"][24000] = 9
    assert one_issue(ac_data) == (
        "products.AC-W.parameters.press.chassis_size.table.24000: 9 is above the maximum 3"
    )


def test_route_naming_an_unknown_station(ac_data):
    ac_data["products"]["AC-W"]["route"][2] = "compresor"
    issues = issues_of(ac_data)
    assert any(i.startswith("products.AC-W.route[2]: unknown station 'compresor'") for i in issues), issues


def test_parallel_stations_must_share_a_type(ac_data):
    ac_data["products"]["AC-W"]["route"][5] = ["test_a", "pack"]
    issues = issues_of(ac_data)
    assert "products.AC-W.route[5]: parallel stations must be of one type, got pack, run_test" in issues


def test_derivation_naming_an_unknown_option(ac_data):
    ac_data["products"]["AC-W"]["parameters"]["run_test"]["supply_hz"]["lookup"] = "regoin"
    issue = one_issue(ac_data)
    assert issue.startswith("products.AC-W.parameters.run_test.supply_hz.lookup: unknown option 'regoin'")


def test_missing_derivation_for_a_parameter(ac_data):
    del ac_data["products"]["AC-W"]["parameters"]["run_test"]["duration_s"]
    assert "no derivation for parameter 'duration_s'" in one_issue(ac_data)


@pytest.mark.parametrize(
    ("option", "change", "message"),
    [
        ("capacity_btu", {"default": 10000}, "default 10000 is not allowed: must be one of 9000, 12000"),
        ("wifi_module", {"default": "yes"}, "default 'yes' is not allowed: must be true or false"),
        ("engraving", {"default": "x" * 17}, "at most 16 characters, got 17"),
    ],
)
def test_default_outside_its_range(ac_data, option, change, message):
    ac_data["products"]["AC-W"]["options"][option].update(change)
    issue = one_issue(ac_data)
    assert issue.startswith(f"products.AC-W.options.{option}: ")
    assert message in issue


@pytest.mark.parametrize(
    ("setpoint", "message"),
    [
        ({"table": "input", "address": 300, "type": "uint16", "min": 0, "max": 9},
         "setpoints.x.table: setpoints are written by the bridge, so they live in holding registers"),
        ({"address": 310, "type": "uint16", "max": 9}, "setpoints.x: a numeric setpoint needs min and max"),
        ({"address": 310, "type": "uint16", "min": 0, "max": 9, "sim": {"nominal": 3}},
         "setpoints.x.sim: a setpoint's sim gives its starting value only: constant"),
        ({"address": 310, "type": "uint16", "min": 0, "max": 9, "sim": {"constant": 12}},
         "setpoints.x.sim.constant: 12 is above the maximum 9"),
        ({"address": 300, "type": "uint16", "min": 0, "max": 9},
         "station_types.press.setpoints.force_limit_kn (holding 300) and station_types.press.setpoints.x"),
    ],
)  # fmt: skip
def test_setpoint_mistakes(ac_data, setpoint, message):
    ac_data["station_types"]["press"]["setpoints"]["x"] = setpoint
    assert message in one_issue(ac_data)


def test_telemetry_follows_only_a_setpoint(ac_data):
    ac_data["station_types"]["press"]["telemetry"]["press_force_kn"]["sim"] = {"follow": "chassis_size"}
    assert one_issue(ac_data) == (
        "station_types.press.telemetry.press_force_kn.sim.follow: unknown setpoint 'chassis_size'"
        " (known: force_limit_kn)"
    )


def test_reload_takes_derivations_and_names_everything_else(ac_mapping, ac_data):
    ac_data["products"]["AC-W"]["parameters"]["charging"]["tolerance_g"] = {"constant": 12}
    ac_data["products"]["AC-W"]["quantity"]["max"] = 60
    ac_data["products"]["AC-X"] = copy.deepcopy(ac_data["products"]["AC-W"])
    changed, issues = reload_changes(ac_mapping, parse_mapping(ac_data))
    assert changed == ["products.AC-W.parameters.charging.tolerance_g.constant"]
    assert [issue.path for issue in issues] == ["products.AC-W.quantity.max", "products.AC-X"]
    assert reload_changes(ac_mapping, ac_mapping) == ([], [])


def test_unknown_station_type_and_unknown_key(ac_data):
    ac_data["stations"]["pack"]["type"] = "packer"
    ac_data["stations"]["pack"]["colour"] = "red"
    issues = issues_of(ac_data)
    assert "stations.pack.colour: Extra inputs are not permitted" in issues


def test_every_structural_error_is_reported_at_once(ac_data):
    ac_data["station_types"]["press"]["cycle_time_s"] = -1
    ac_data["station_types"]["pack"]["parameters"]["region_code"]["type"] = "uint8"
    issues = issues_of(ac_data)
    assert any(i.startswith("station_types.press.cycle_time_s:") for i in issues)
    assert any(i.startswith("station_types.pack.parameters.region_code.type:") for i in issues)


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(AC_LINE.read_text().replace("  pack:       {type: pack,", "  coil:       {type: pack,"))
    with pytest.raises(MappingError, match=r"duplicate key 'coil' \(first at line \d+\)"):
        load_mapping(path)


def test_deployment_file_points_stations_elsewhere(ac_mapping, tmp_path):
    path = tmp_path / "deploy.yaml"
    path.write_text("stations:\n  coil: {host: 10.0.0.7, port: 502, device_id: 3}\n")
    moved = load_deployment(ac_mapping, path)
    assert moved.stations["coil"].endpoint.port == 502
    assert moved.stations["coil"].endpoint.device_id == 3
    assert moved.stations["pack"].endpoint == ac_mapping.stations["pack"].endpoint
    path.write_text("stations:\n  oven: {port: 1}\n")
    with pytest.raises(MappingError, match=r"stations\.oven: not a station of the mapping"):
        load_deployment(ac_mapping, path)


REFERENCE = {  # ac_line.md, per capacity: chassis_size, coil_rows, fin_pitch, charge_g
    9000: (1, 2, 1.5, 520),
    12000: (1, 2, 1.5, 680),
    18000: (2, 3, 1.4, 980),
    24000: (3, 4, 1.4, 1250),
}


@pytest.mark.parametrize("capacity", sorted(REFERENCE))
@pytest.mark.parametrize("compressor", ["fixed_speed", "inverter"])
def test_derived_parameters_follow_the_reference(ac_mapping, capacity, compressor):
    product = ac_mapping.products["AC-W"]
    values = {
        "capacity_btu": capacity, "compressor": compressor, "panel_color": "graphite",
        "panel_finish": "gloss", "wifi_module": True, "engraving": "ANNA", "region": "na_115v_60hz",
        "order_id": "ORD-1", "unit_serial": 77, "unit_index": 0, "quantity": 1,
    }  # fmt: skip
    size, rows, pitch, charge = REFERENCE[capacity]
    index = sorted(REFERENCE).index(capacity)
    assert derive_parameters(product, "press", values) == {"chassis_size": size}
    assert derive_parameters(product, "brazing", values) == {"coil_rows": rows, "fin_pitch_mm": pitch}
    assert derive_parameters(product, "compressor_fit", values) == {
        "compressor_model": (100 if compressor == "fixed_speed" else 200) + index, "torque_nm": 12.5,
    }  # fmt: skip
    assert derive_parameters(product, "charging", values) == {"charge_g": charge, "tolerance_g": 10}
    assert derive_parameters(product, "panel_fit", values) == {
        "color_code": 3, "finish": 2, "wifi_module": True, "engraving": "ANNA",
    }  # fmt: skip
    test = derive_parameters(product, "run_test", values)
    assert test["supply_voltage_v"] == 115
    assert test["supply_hz"] == 60
    assert test["expected_capacity_w"] == pytest.approx(capacity * 0.29307)
    assert derive_parameters(product, "pack", values) == {
        "order_ref": "ORD-1",
        "unit_serial": 77,
        "region_code": 2,
    }


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from bridge.cli import main; main()", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_validate_command_prints_a_summary():
    result = run_cli("validate", str(AC_LINE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {AC_LINE}")
    assert "8 stations" in result.stdout
    assert "test_b       run_test" in result.stdout


def test_validate_command_lists_every_error(ac_data, tmp_path):
    broken = copy.deepcopy(ac_data)
    broken["station_types"]["charging"]["parameters"]["tolerance_g"]["address"] = 100
    broken["products"]["AC-W"]["route"].append("oven")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = run_cli("validate", str(path))
    assert result.returncode == 2
    assert "2 error(s)" in result.stderr
    assert (
        "parameters.charge_g (holding 100) and station_types.charging.parameters.tolerance_g" in result.stderr
    )
    assert "products.AC-W.route[7]: unknown station 'oven'" in result.stderr


def test_a_heartbeat_register_is_checked_against_the_register_map(ac_data):
    press = ac_data["station_types"]["press"]
    press["handshake"]["heartbeat"] = {"address": 1}
    assert "handshake.heartbeat.address 1 is inside the command block (holding 0 to 2)" in one_issue(ac_data)
    press["handshake"]["heartbeat"] = {"address": 100}
    assert "handshake.heartbeat.address 100 is parameters.chassis_size's register" in one_issue(ac_data)
    press["handshake"]["heartbeat"] = {"address": 3, "period_s": 2, "timeout_s": 1}
    assert "timeout_s 1 must exceed period_s 2" in one_issue(ac_data)
    press["handshake"]["heartbeat"] = {"address": 3, "mode": "toggle"}
    beat = parse_mapping(ac_data, source="t.yaml").station_type("chassis").handshake.heartbeat
    assert beat is not None
    assert beat.lost_after_s == 3.0
