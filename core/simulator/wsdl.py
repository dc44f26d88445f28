"""The Customer Management v13 schema, read from the WSDL shipped inside the installed ``bingads`` package.

The simulator speaks exactly the contract its client knows: every element it parses or writes is looked up here,
and anything the shipped WSDL does not declare is refused. The file is located without importing ``bingads``
(importing it costs about a second) and parsed once per process with ElementTree.

Type names are kept in Clark notation (``{namespace}local``) because prefixes inside the WSDL are local to each
element (``xmlns:q10=...``) and mean nothing outside it.
"""

from __future__ import annotations

import functools
import importlib.util
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ADAPI",
    "ARRAYS",
    "ENTITIES",
    "EXCEPTION",
    "GENERIC",
    "HEADER_NAMES",
    "SERIALIZATION",
    "TNS",
    "XS",
    "ComplexType",
    "ElementDecl",
    "Operation",
    "Schema",
    "SchemaError",
    "SimpleType",
    "load_schema",
    "parse_wsdl",
    "qname",
    "split_qname",
    "wsdl_path",
]

XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
TNS = "https://bingads.microsoft.com/Customer/v13"
ENTITIES = "https://bingads.microsoft.com/Customer/v13/Entities"
EXCEPTION = "https://bingads.microsoft.com/Customer/v13/Exception"
ADAPI = "https://adapi.microsoft.com"
ARRAYS = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
GENERIC = "http://schemas.datacontract.org/2004/07/System.Collections.Generic"
SERIALIZATION = "http://schemas.microsoft.com/2003/10/Serialization/"

#: The request headers every Customer Management operation declares (WSDL order is alphabetical).
HEADER_NAMES: tuple[str, ...] = ("ApplicationToken", "AuthenticationToken", "DeveloperToken", "Password", "UserName")

#: Relative location of the production WSDL inside the bingads package.
_WSDL_RELATIVE = ("v13", "proxies", "production", "customermanagement_service.xml")

#: XSD built-in types -> the simulator's value kind.
_BUILTIN_KINDS: dict[str, str] = {
    "long": "int",
    "int": "int",
    "short": "int",
    "byte": "int",
    "unsignedByte": "int",
    "unsignedShort": "int",
    "unsignedInt": "int",
    "unsignedLong": "int",
    "boolean": "bool",
    "dateTime": "datetime",
    "decimal": "decimal",
    "double": "float",
    "float": "float",
    "base64Binary": "base64",
}

#: Inclusive ranges of the XSD integer types (WCF refuses values outside them).
INT_RANGES: dict[str, tuple[int, int]] = {
    "long": (-(2**63), 2**63 - 1),
    "int": (-(2**31), 2**31 - 1),
    "short": (-(2**15), 2**15 - 1),
    "byte": (-128, 127),
    "unsignedByte": (0, 255),
    "unsignedShort": (0, 2**16 - 1),
    "unsignedInt": (0, 2**32 - 1),
    "unsignedLong": (0, 2**64 - 1),
}


class SchemaError(ValueError):
    """Something is not in the shipped WSDL (an unknown element, type, value or operation)."""


def qname(ns: str, local: str) -> str:
    """Clark notation ``{ns}local``."""
    return f"{{{ns}}}{local}"


def split_qname(name: str) -> tuple[str, str]:
    """``{ns}local`` -> ``(ns, local)``; a name without namespace -> ``("", name)``."""
    if name.startswith("{"):
        ns, _, local = name[1:].partition("}")
        return ns, local
    return "", name


@dataclass(frozen=True, slots=True)
class ElementDecl:
    """One element declaration: a global element or a member of a complex type's sequence."""

    name: str
    ns: str
    type: str  # Clark name of a SimpleType or ComplexType in the Schema
    nillable: bool = False
    min_occurs: int = 1
    max_occurs: int | None = 1  # None = unbounded
    #: False when WCF's EmitDefaultValue=false: the element is omitted (not nil) when it has no value.
    emit_default: bool = True

    @property
    def qname(self) -> str:
        return qname(self.ns, self.name)

    @property
    def repeated(self) -> bool:
        return self.max_occurs is None or self.max_occurs > 1


@dataclass(frozen=True, slots=True)
class SimpleType:
    """A simple type: an XSD built-in, a restriction (enumeration) or a list of enumeration values."""

    qname: str
    #: "int", "bool", "datetime", "decimal", "float", "base64" or "str".
    kind: str
    #: The XSD built-in it derives from (local name, e.g. "long", "string").
    builtin: str
    #: Allowed values of an enumeration (WSDL order); None if not an enumeration.
    enums: tuple[str, ...] | None = None
    #: True for an ``xs:list`` (space-separated values; each must be one of ``enums``).
    is_list: bool = False

    @property
    def name(self) -> str:
        return split_qname(self.qname)[1]


@dataclass(slots=True)
class ComplexType:
    """A complex type: its elements in WSDL order, the base type's elements first (``xs:extension``)."""

    qname: str
    base: str | None
    own_elements: tuple[ElementDecl, ...]
    elements: tuple[ElementDecl, ...] = ()
    by_qname: dict[str, ElementDecl] = field(default_factory=dict)
    by_name: dict[str, ElementDecl] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return split_qname(self.qname)[1]

    @property
    def array_item(self) -> ElementDecl | None:
        """The item element of an ``ArrayOfX`` type (a sequence of exactly one unbounded element), else None."""
        if len(self.elements) == 1 and self.elements[0].max_occurs is None:
            return self.elements[0]
        return None


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the service binding."""

    name: str
    soap_action: str
    request: ElementDecl  # the global tns:<Name>Request element
    response: ElementDecl  # the global tns:<Name>Response element
    input_headers: tuple[str, ...]
    output_headers: tuple[str, ...]
    #: Clark names of the fault detail elements the operation declares.
    faults: tuple[str, ...]


@dataclass
class Schema:
    """The schema table of the shipped WSDL."""

    path: Path
    complex_types: dict[str, ComplexType]
    simple_types: dict[str, SimpleType]
    elements: dict[str, ElementDecl]
    operations: dict[str, Operation]
    location: str
    #: Seconds spent parsing (measured once, when the schema was built).
    parse_seconds: float = 0.0
    _by_action: dict[str, Operation] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_action = {op.soap_action: op for op in self.operations.values()}

    def operation(self, name: str) -> Operation:
        """The operation called ``name``; SchemaError if the WSDL has none."""
        try:
            return self.operations[name]
        except KeyError:
            raise SchemaError(f"The Customer Management v13 WSDL has no operation named {name!r}.") from None

    def operation_for_action(self, soap_action: str) -> Operation | None:
        """The operation whose soapAction is exactly ``soap_action`` (unquoted), or None."""
        return self._by_action.get(soap_action)

    def is_complex(self, type_qname: str) -> bool:
        return type_qname in self.complex_types

    def complex_type(self, type_qname: str) -> ComplexType:
        try:
            return self.complex_types[type_qname]
        except KeyError:
            raise SchemaError(f"The WSDL declares no complex type {type_qname}.") from None

    def simple_type(self, type_qname: str) -> SimpleType:
        try:
            return self.simple_types[type_qname]
        except KeyError:
            raise SchemaError(f"The WSDL declares no simple type {type_qname}.") from None

    def namespaces_reachable(self, type_qname: str) -> list[str]:
        """Namespaces of every element reachable from a complex type, in first-seen order (for xmlns declarations)."""
        seen_types: set[str] = set()
        out: dict[str, None] = {}
        stack = [type_qname]
        while stack:
            t = stack.pop(0)
            if t in seen_types or t not in self.complex_types:
                continue
            seen_types.add(t)
            for el in self.complex_types[t].elements:
                out.setdefault(el.ns)
                stack.append(el.type)
        return list(out)


def wsdl_path() -> Path:
    """Path of the production Customer Management v13 WSDL inside the installed bingads package (not imported)."""
    spec = importlib.util.find_spec("bingads")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The bingads package is not installed, so the simulator cannot find the Customer Management WSDL. "
            "Install linkdesk's dependencies (pip install -e .) and try again."
        )
    for base in spec.submodule_search_locations:
        candidate = Path(base).joinpath(*_WSDL_RELATIVE)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "The installed bingads package has no v13 Customer Management WSDL "
        f"({'/'.join(_WSDL_RELATIVE)}); reinstall bingads 13.0.x."
    )


@functools.lru_cache(maxsize=1)
def load_schema() -> Schema:
    """The schema of the shipped WSDL, parsed once per process."""
    return parse_wsdl(wsdl_path())


# QName-valued attributes resolved to Clark notation while parsing.
_QNAME_ATTRS = ("type", "base", "element", "message", "binding")


def _parse_resolving_qnames(path: Path) -> ET.Element:
    """Parse the WSDL, rewriting QName attribute values to Clark notation using the prefixes in scope."""
    scopes: list[dict[str, str]] = [{}]
    pending: dict[str, str] = {}
    root: ET.Element | None = None
    for event, item in ET.iterparse(str(path), events=("start-ns", "start", "end")):
        if event == "start-ns":
            prefix, uri = item  # type: ignore[misc]
            pending[prefix] = uri
        elif event == "start":
            elem = item  # type: ignore[assignment]
            if root is None:
                root = elem
            scope = scopes[-1]
            if pending:
                scope = {**scope, **pending}
                pending = {}
            scopes.append(scope)
            for attr in _QNAME_ATTRS:
                value = elem.get(attr)
                if value is not None and not value.startswith("{"):
                    prefix, sep, local = value.rpartition(":")
                    ns = scope.get(prefix if sep else "", "")
                    elem.set(attr, qname(ns, local) if ns else local)
        else:
            scopes.pop()
    assert root is not None
    return root


def _occurs(value: str | None, default: int | None) -> int | None:
    if value is None:
        return default
    return None if value == "unbounded" else int(value)


def _emit_default(el: ET.Element) -> bool:
    for dv in el.iter(qname(SERIALIZATION, "DefaultValue")):
        if dv.get("EmitDefaultValue", "").lower() == "false":
            return False
    return True


def parse_wsdl(path: Path) -> Schema:
    """Parse a Customer Management WSDL into a Schema (uncached; use load_schema())."""
    t0 = time.perf_counter()
    root = _parse_resolving_qnames(path)
    xs = lambda local: qname(XS, local)  # noqa: E731 - tiny local helper
    wsdl = lambda local: qname(WSDL, local)  # noqa: E731

    complex_types: dict[str, ComplexType] = {}
    simple_types: dict[str, SimpleType] = {}
    elements: dict[str, ElementDecl] = {}

    for local, kind in _BUILTIN_KINDS.items():
        simple_types[qname(XS, local)] = SimpleType(qname(XS, local), kind, local)
    for local in ("string", "anyURI", "QName", "ID", "IDREF", "duration", "date", "time", "anyType"):
        simple_types[qname(XS, local)] = SimpleType(qname(XS, local), "str", local)

    def sequence_of(ct_el: ET.Element, tns: str) -> tuple[ElementDecl, ...]:
        out = []
        seq = ct_el.find(xs("sequence"))
        if seq is None:
            return ()
        for el in seq.findall(xs("element")):
            out.append(
                ElementDecl(
                    name=el.get("name", ""),
                    ns=tns,  # every schema here is elementFormDefault="qualified"
                    type=el.get("type", qname(XS, "anyType")),
                    nillable=el.get("nillable") == "true",
                    min_occurs=_occurs(el.get("minOccurs"), 1) or 0,
                    max_occurs=_occurs(el.get("maxOccurs"), 1),
                    emit_default=_emit_default(el),
                )
            )
        return tuple(out)

    def complex_of(ct_el: ET.Element, tns: str, name: str) -> ComplexType:
        ext = ct_el.find(f"{xs('complexContent')}/{xs('extension')}")
        if ext is not None:
            return ComplexType(name, ext.get("base"), sequence_of(ext, tns))
        return ComplexType(name, None, sequence_of(ct_el, tns))

    def simple_of(st_el: ET.Element, name: str) -> SimpleType:
        lst = st_el.find(xs("list"))
        if lst is not None:
            inner = lst.find(f"{xs('simpleType')}/{xs('restriction')}")
            enums = tuple(e.get("value", "") for e in inner.findall(xs("enumeration"))) if inner is not None else ()
            return SimpleType(name, "str", "string", enums or None, is_list=True)
        restr = st_el.find(xs("restriction"))
        base = restr.get("base", qname(XS, "string")) if restr is not None else qname(XS, "string")
        enums = tuple(e.get("value", "") for e in restr.findall(xs("enumeration"))) if restr is not None else ()
        base_ns, base_local = split_qname(base)
        builtin = base_local if base_ns == XS else "string"
        return SimpleType(name, _BUILTIN_KINDS.get(builtin, "str"), builtin, enums or None)

    types_el = root.find(wsdl("types"))
    assert types_el is not None, "WSDL without <wsdl:types>"
    for schema_el in types_el.findall(xs("schema")):
        tns = schema_el.get("targetNamespace", "")
        for child in schema_el:
            name = child.get("name")
            if not name:
                continue
            if child.tag == xs("complexType"):
                complex_types[qname(tns, name)] = complex_of(child, tns, qname(tns, name))
            elif child.tag == xs("simpleType"):
                simple_types[qname(tns, name)] = simple_of(child, qname(tns, name))
            elif child.tag == xs("element"):
                anon = child.find(xs("complexType"))
                if anon is not None:
                    type_name = qname(tns, name + "@element")  # anonymous type of a global element
                    complex_types[type_name] = complex_of(anon, tns, type_name)
                else:
                    type_name = child.get("type", qname(XS, "anyType"))
                elements[qname(tns, name)] = ElementDecl(
                    name=name, ns=tns, type=type_name, nillable=child.get("nillable") == "true",
                    min_occurs=1, max_occurs=1,
                )

    # Flatten extensions: base elements first, in the base's namespace.
    def flatten(ct: ComplexType, depth: int = 0) -> tuple[ElementDecl, ...]:
        if ct.base is None:
            return ct.own_elements
        if depth > 10 or ct.base not in complex_types:
            raise SchemaError(f"Cannot resolve base type {ct.base} of {ct.qname}.")
        return flatten(complex_types[ct.base], depth + 1) + ct.own_elements

    for ct in complex_types.values():
        ct.elements = flatten(ct)
        ct.by_qname = {e.qname: e for e in ct.elements}
        ct.by_name = {e.name: e for e in ct.elements}

    # Every referenced type must exist: a WSDL we misread must fail here, not mid-request.
    for ct in complex_types.values():
        for e in ct.elements:
            if e.type not in complex_types and e.type not in simple_types:
                raise SchemaError(f"{ct.qname}/{e.name} refers to unknown type {e.type}.")

    # Messages -> parts.
    messages: dict[str, dict[str, str]] = {}
    target = root.get("targetNamespace", TNS)
    for msg in root.findall(wsdl("message")):
        messages[qname(target, msg.get("name", ""))] = {
            p.get("name", ""): p.get("element", "") for p in msg.findall(wsdl("part"))
        }

    port_ops: dict[str, ET.Element] = {}
    for port_type in root.findall(wsdl("portType")):
        for op in port_type.findall(wsdl("operation")):
            port_ops[op.get("name", "")] = op

    operations: dict[str, Operation] = {}
    for binding in root.findall(wsdl("binding")):
        for op in binding.findall(wsdl("operation")):
            name = op.get("name", "")
            soap_op = op.find(qname(WSDL_SOAP, "operation"))
            action = soap_op.get("soapAction", name) if soap_op is not None else name
            pop = port_ops.get(name)
            if pop is None:
                raise SchemaError(f"Binding operation {name} is missing from the portType.")
            in_msg = pop.find(wsdl("input"))
            out_msg = pop.find(wsdl("output"))
            assert in_msg is not None and out_msg is not None
            req_el = next(iter(messages[in_msg.get("message", "")].values()))
            resp_el = next(iter(messages[out_msg.get("message", "")].values()))
            faults = []
            for f in pop.findall(wsdl("fault")):
                faults.extend(messages.get(f.get("message", ""), {}).values())

            def headers(io: ET.Element | None) -> tuple[str, ...]:
                if io is None:
                    return ()
                return tuple(h.get("part", "") for h in io.findall(qname(WSDL_SOAP, "header")))

            operations[name] = Operation(
                name=name,
                soap_action=action,
                request=elements[req_el],
                response=elements[resp_el],
                input_headers=headers(op.find(wsdl("input"))),
                output_headers=headers(op.find(wsdl("output"))),
                faults=tuple(faults),
            )

    location = ""
    for addr in root.iter(qname(WSDL_SOAP, "address")):
        location = addr.get("location", "")
        break

    schema = Schema(
        path=path,
        complex_types=complex_types,
        simple_types=simple_types,
        elements=elements,
        operations=operations,
        location=location,
    )
    schema.parse_seconds = time.perf_counter() - t0
    return schema
