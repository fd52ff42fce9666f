"""Write ``src/qmonitor/cmdline/qom_members.py``: QEMU's ``-object`` members, from its QAPI schema.

Usage (then ``.venv/bin/ruff format`` the file written)::

    python3 tools/qom_members.py QEMU_SOURCE_DIR > src/qmonitor/cmdline/qom_members.py

QEMU reads an ``-object`` option by visiting the ``ObjectOptions`` union of qapi/qom.json
(softmmu/vl.c ``object_option_parse``). This script reads the QAPI files of a QEMU source
tree (qapi/*.json; v7.2 is what qmonitor matches), follows ``ObjectOptions`` through its
variants, their bases (a base's members come first, as in QAPI's generated
``visit_type_*_members``), the structs and lists they hold and the enums they name, and
prints a Python module holding, per ``qom-type``, the members in visiting order.

Every member's QAPI type is kept (``size``, ``uint32``...), since QEMU's errors name it.
Conditions (``'if'``) are resolved as QEMU 7.2 is built for Linux x86_64 (Debian's
configuration): CONFIG_LINUX, CONFIG_POSIX, CONFIG_VHOST_CRYPTO, CONFIG_SECRET_KEYRING and
CONFIG_LIBPMEM hold. Unions and alternates inside a variant are not followed (written as
``UNMODELLED``), and neither is a list of structs, which QEMU's options visitor cannot read.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

BUILT = frozenset(
    {
        "CONFIG_LINUX",
        "CONFIG_POSIX",
        "CONFIG_VHOST_CRYPTO",
        "CONFIG_SECRET_KEYRING",
        "CONFIG_LIBPMEM",
    }
)
SCALARS = frozenset(
    [
        "str",
        "bool",
        "number",
        "any",
        "int",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "size",
    ]
)
_COMMENT = re.compile(r"^\s*#.*$", re.MULTILINE)


def definitions(qapi_dir: Path) -> dict[str, dict[str, object]]:
    """Every named definition (struct, enum, union, alternate) of the QAPI files."""
    found: dict[str, dict[str, object]] = {}
    for path in sorted(qapi_dir.glob("*.json")):
        text = _COMMENT.sub("", path.read_text())
        for expression in _expressions(text):
            for kind in ("struct", "enum", "union", "alternate"):
                if kind in expression:
                    found[str(expression[kind])] = {"kind": kind, **expression}
    return found


def _expressions(text: str) -> list[dict[str, object]]:
    """The top-level ``{...}`` of a QAPI file (Python literal syntax but for true/false)."""
    expressions = []
    depth = 0
    start = 0
    quoted = False
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                source = re.sub(r"\btrue\b", "True", text[start : index + 1])
                source = re.sub(r"\bfalse\b", "False", source)
                expressions.append(ast.literal_eval(source))
    return expressions


def _built(condition: object) -> bool:
    if condition is None:
        return True
    if isinstance(condition, str):
        return condition in BUILT
    assert isinstance(condition, dict)
    if "all" in condition:
        return all(_built(item) for item in condition["all"])
    if "any" in condition:
        return any(_built(item) for item in condition["any"])
    return not _built(condition["not"])


class Writer:
    """Turns QAPI types into Python expressions over qmonitor.cmdline.qapi's member types."""

    def __init__(self, schema: dict[str, dict[str, object]]) -> None:
        self.schema = schema
        self.constants: dict[str, str] = {}  # constant name -> expression, in order written

    def members(self, name: str) -> str:
        """The constant holding struct ``name``'s members (its base's first)."""
        constant = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).upper()
        if constant in self.constants:
            return constant
        definition = self.schema[name]
        assert definition["kind"] == "struct", name
        rows: list[str] = []
        base = definition.get("base")
        if isinstance(base, str):
            rows.append(f"*{self.members(base)}")
        data = definition.get("data", {})
        assert isinstance(data, dict)
        for key, spec in data.items():
            member_type, condition = (
                (spec["type"], spec.get("if")) if isinstance(spec, dict) else (spec, None)
            )
            if not _built(condition):
                continue
            required = not key.startswith("*")
            rows.append(f"({key.lstrip('*')!r}, {self.type_of(member_type)}, {required})")
        body = "".join(f"    {row},\n" for row in rows)
        self.constants[constant] = f"(\n{body})" if rows else "()"
        return constant

    def type_of(self, member_type: object) -> str:
        if isinstance(member_type, list):
            element = member_type[0]
            if element not in SCALARS and self.schema[element]["kind"] == "struct":
                return "UNMODELLED"
            return f"ListOf({self.type_of(element)})"
        assert isinstance(member_type, str)
        if member_type in SCALARS:
            return repr(member_type)
        definition = self.schema[member_type]
        if definition["kind"] == "enum":
            values = [
                value if isinstance(value, str) else value["name"]
                for value in definition["data"]  # type: ignore[attr-defined]
                if isinstance(value, str) or _built(value.get("if"))
            ]
            return repr(tuple(values))
        if definition["kind"] == "struct":
            return f"StructOf({self.members(member_type)})"
        return "UNMODELLED"


def main(source: str) -> None:
    schema = definitions(Path(source) / "qapi")
    union = schema["ObjectOptions"]
    writer = Writer(schema)
    table: list[tuple[str, str]] = []
    variants = union["data"]
    assert isinstance(variants, dict)
    for qom_type, spec in variants.items():
        type_name, condition = (
            (spec["type"], spec.get("if")) if isinstance(spec, dict) else (spec, None)
        )
        if _built(condition):
            table.append((qom_type, writer.members(type_name)))
    print(HEADER, end="")
    for constant, expression in writer.constants.items():
        print(f"{constant}: Final[Members] = {expression}")
    print("\nOBJECT_MEMBERS: Final[dict[str, Members]] = {")
    for qom_type, constant in table:
        print(f"    {qom_type!r}: {constant},")
    print("}")


HEADER = '''"""QEMU 7.2's ``-object`` members by ``qom-type`` (qapi/qom.json ``ObjectOptions``).

Written by ``tools/qom_members.py`` from QEMU 7.2's qapi/*.json (the v7.2.11 stable
sources, Linux x86_64 build conditions); do not edit. tests/test_objects_qemu.py holds it
against the installed QEMU's ``query-qmp-schema``. Each variant's members are in QEMU's
visiting order, its base's first; :func:`qmonitor.cmdline.qapi.visit_struct` reads an option
against them. The types without a variant (``can-bus``, ``pef-guest``, ``s390-pv-guest``)
take no members beyond ``qom-type`` and ``id`` and are absent.
"""

from __future__ import annotations

from typing import Final

from qmonitor.cmdline.qapi import UNMODELLED, ListOf, Members, StructOf

'''

if __name__ == "__main__":
    main(sys.argv[1])
