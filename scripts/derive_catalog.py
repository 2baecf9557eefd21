"""Derive bcbridge's compact catalog reference from a local copy of BC's API v2.0 ``$metadata``.

The reference (``src/bcbridge/catalog_reference.json``) holds only facts read from the EDMX
document: entity set and entity type names, keys, properties with their EDM types (enums by
their ``Microsoft.NAV`` enum type, whose members are listed once under ``enums``), maximum
lengths where the document states them, navigation properties, bound actions, and the
operations each set allows according to its capability annotations. No text of the source is
kept, and the source file itself is not stored in this repository (its licence does not allow
it); rerun this script against your own copy.

Getting a copy (either works; the second is the one to trust when they disagree):

* BC's published document, as kept in the repository ``rebelpl/bc-api2-common``::

      git clone https://github.com/rebelpl/bc-api2-common /tmp/bc-api2-common
      git -C /tmp/bc-api2-common show \\
          875164bb42b6dfce0a069f6bd81c09d000902019:build/metadata.xml > /tmp/bc-metadata.xml

* your own sandbox: ``GET https://api.businesscentral.dynamics.com/v2.0/<tenant>/<env>/api/v2.0/$metadata``
  with a bearer token, saved to a file.

Then::

    python scripts/derive_catalog.py /tmp/bc-metadata.xml            # writes the reference
    python scripts/derive_catalog.py /tmp/bc-metadata.xml --check    # exit 1 if it would change

Rules this script applies (choices, not facts of the source):

* ``GET`` is listed for every set (the document states no read restrictions). ``POST``,
  ``PATCH`` and ``DELETE`` are listed when the set's ``InsertRestrictions``/``UpdateRestrictions``
  /``DeleteRestrictions`` annotation says ``true``; a set without these annotations (BC's own
  ``entityDefinitions``) is taken as read-only rather than by the OData default (all allowed).
* Enum members are stored exactly as the EDMX names them, XML-name escapes included
  (``_x0020_`` for a space, ``_x002D_`` for ``-``); `bcbridge.catalog` decodes them.
* A navigation's target is given as the entity set serving its entity type, when one does.
* Complex types (``entityMetadataLabel``, ...) are listed with their properties under
  ``complexTypes``; a property of a complex or collection type keeps its type name as declared.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
NAV = "Microsoft.NAV."
CAPABILITIES = {
    "Org.OData.Capabilities.V1.InsertRestrictions": ("Insertable", "POST"),
    "Org.OData.Capabilities.V1.UpdateRestrictions": ("Updatable", "PATCH"),
    "Org.OData.Capabilities.V1.DeleteRestrictions": ("Deletable", "DELETE"),
}
OPERATION_ORDER = ("GET", "POST", "PATCH", "DELETE")
SOURCE = {
    "repository": "rebelpl/bc-api2-common",
    "path": "build/metadata.xml",
    "commit": "875164bb42b6dfce0a069f6bd81c09d000902019",
}
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "src/bcbridge/catalog_reference.json"


def _local(type_name: str) -> str:
    """``Microsoft.NAV.customer`` -> ``customer``; ``Collection(...)`` unwrapped."""
    if type_name.startswith("Collection(") and type_name.endswith(")"):
        type_name = type_name[len("Collection(") : -1]
    return type_name.removeprefix(NAV)


def _property(element: ET.Element) -> dict[str, Any]:
    prop: dict[str, Any] = {"name": element.attrib["Name"], "type": element.attrib["Type"]}
    if "MaxLength" in element.attrib:
        prop["maxLength"] = int(element.attrib["MaxLength"])
    if element.attrib.get("Nullable") == "false":
        prop["nullable"] = False
    return prop


def _navigation(element: ET.Element, set_of_type: dict[str, str]) -> dict[str, Any]:
    type_name = element.attrib["Type"]
    target_type = _local(type_name)
    nav: dict[str, Any] = {
        "name": element.attrib["Name"],
        "type": target_type,
        "many": type_name.startswith("Collection("),
    }
    if target_type in set_of_type:
        nav["target"] = set_of_type[target_type]
    constraints = {
        c.attrib["Property"]: c.attrib["ReferencedProperty"]
        for c in element.findall(f"{EDM}ReferentialConstraint")
    }
    if constraints:
        nav["constraints"] = constraints
    return nav


def _operations(entity_set: ET.Element) -> list[str]:
    allowed = {"GET"}
    for annotation in entity_set.findall(f"{EDM}Annotation"):
        term = annotation.attrib.get("Term", "")
        if term not in CAPABILITIES:
            continue
        flag, method = CAPABILITIES[term]
        for value in annotation.iter(f"{EDM}PropertyValue"):
            if value.attrib.get("Property") == flag and value.attrib.get("Bool") == "true":
                allowed.add(method)
    return [method for method in OPERATION_ORDER if method in allowed]


def _alternate_keys(entity_type: ET.Element) -> list[list[str]]:
    keys: list[list[str]] = []
    for annotation in entity_type.findall(f"{EDM}Annotation"):
        if annotation.attrib.get("Term") != "OData.Community.Keys.V1.AlternateKeys":
            continue
        for record in annotation.iter(f"{EDM}Record"):
            if record.attrib.get("Type") == "OData.Community.Keys.V1.AlternateKey":
                keys.append(
                    [
                        value.attrib["PropertyPath"]
                        for value in record.iter(f"{EDM}PropertyValue")
                        if "PropertyPath" in value.attrib
                    ]
                )
    return keys


def derive(metadata_xml: bytes) -> dict[str, Any]:
    """The compact reference for one EDMX document."""
    root = ET.fromstring(metadata_xml)
    schema = root.find(f".//{EDM}Schema")
    if schema is None or schema.attrib.get("Namespace") != "Microsoft.NAV":
        raise ValueError("not BC's $metadata: no Schema with Namespace Microsoft.NAV")
    container = schema.find(f"{EDM}EntityContainer")
    if container is None:
        raise ValueError("no EntityContainer in the document")

    set_elements = container.findall(f"{EDM}EntitySet")
    set_of_type = {_local(s.attrib["EntityType"]): s.attrib["Name"] for s in set_elements}
    types = {t.attrib["Name"]: t for t in schema.findall(f"{EDM}EntityType")}
    actions: dict[str, list[str]] = {}
    for action in schema.findall(f"{EDM}Action"):
        if action.attrib.get("IsBound") != "true":
            continue
        binding = action.find(f"{EDM}Parameter")
        if binding is not None:
            actions.setdefault(_local(binding.attrib["Type"]), []).append(action.attrib["Name"])

    entity_sets: dict[str, Any] = {}
    for set_element in set_elements:
        type_name = _local(set_element.attrib["EntityType"])
        entity_type = types[type_name]
        entry: dict[str, Any] = {
            "entityType": type_name,
            "key": [ref.attrib["Name"] for ref in entity_type.iter(f"{EDM}PropertyRef")],
            "operations": _operations(set_element),
            "actions": sorted(actions.get(type_name, [])),
            "properties": [_property(p) for p in entity_type.findall(f"{EDM}Property")],
            "navigations": [
                _navigation(n, set_of_type) for n in entity_type.findall(f"{EDM}NavigationProperty")
            ],
        }
        alternate = _alternate_keys(entity_type)
        if alternate:
            entry["alternateKeys"] = alternate
        entity_sets[set_element.attrib["Name"]] = entry

    enums = {
        enum.attrib["Name"]: [m.attrib["Name"] for m in enum.findall(f"{EDM}Member")]
        for enum in schema.findall(f"{EDM}EnumType")
    }
    complex_types = {
        complex_type.attrib["Name"]: [
            _property(p) for p in complex_type.findall(f"{EDM}Property")
        ]
        for complex_type in schema.findall(f"{EDM}ComplexType")
    }
    reference: dict[str, Any] = {"source": SOURCE, "enums": enums}
    if complex_types:
        reference["complexTypes"] = complex_types
    reference["entitySets"] = entity_sets
    return reference


def render(reference: dict[str, Any]) -> str:
    """JSON with one line per property, navigation and enum: small diffs when BC changes."""

    def line(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    out = ["{", f'  "source": {line(reference["source"])},', '  "enums": {']
    enums = list(reference["enums"].items())
    out += [
        f"    {line(name)}: {line(members)}{',' if i < len(enums) - 1 else ''}"
        for i, (name, members) in enumerate(enums)
    ]
    out.append("  },")
    complex_types = list(reference.get("complexTypes", {}).items())
    if complex_types:
        out.append('  "complexTypes": {')
        out += [
            f"    {line(name)}: {line(props)}{',' if i < len(complex_types) - 1 else ''}"
            for i, (name, props) in enumerate(complex_types)
        ]
        out.append("  },")
    out.append('  "entitySets": {')
    sets = list(reference["entitySets"].items())
    for i, (name, entry) in enumerate(sets):
        out.append(f"    {line(name)}: {{")
        fields = list(entry.items())
        for j, (key, value) in enumerate(fields):
            comma = "," if j < len(fields) - 1 else ""
            if key in ("properties", "navigations") and value:
                out.append(f'      "{key}": [')
                out += [
                    f"        {line(item)}{',' if k < len(value) - 1 else ''}"
                    for k, item in enumerate(value)
                ]
                out.append(f"      ]{comma}")
            else:
                out.append(f'      "{key}": {line(value)}{comma}')
        out.append(f"    }}{',' if i < len(sets) - 1 else ''}")
    out += ["  }", "}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metadata", type=Path, help="a local copy of BC's API v2.0 $metadata")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the output would change; write nothing"
    )
    args = parser.parse_args(argv)
    text = render(derive(args.metadata.read_bytes()))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; rerun without --check", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    reference = json.loads(text)
    print(
        f"wrote {args.output}: {len(reference['entitySets'])} entity sets, "
        f"{sum(len(s['properties']) for s in reference['entitySets'].values())} properties, "
        f"{len(reference['enums'])} enums"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
