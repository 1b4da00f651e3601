"""The mapping file's JSON Schema, generated from the pydantic model that checks it.

Shipped as mappings/linebridge-mapping.schema.json and named on the first line of each mapping
(`# yaml-language-server: $schema=...`), so an editor completes keys and flags mistakes while the
file is written; tests/unit/test_mapping_schema.py keeps the shipped file equal to the model.
What only the loader can judge (addresses that overlap, derivations that do not fit) stays with
`linebridge validate`.
"""

from __future__ import annotations

import json

from bridge.mapping.model import LineMapping

SCHEMA_ID = "https://linebridge.invalid/schemas/mapping.schema.json"


def mapping_json_schema() -> str:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **LineMapping.model_json_schema(),
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
