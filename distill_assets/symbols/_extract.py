"""Definition extraction: which tree-sitter nodes are symbols, their names, kinds and spans.

Each language has a ``classify`` function that maps a node to a :class:`_Decl`
(or None).  Candidate nodes are found with one tree-sitter query per language
(run in C, so whole repositories index quickly); the qualified name of a
symbol is built by classifying its ancestors (``node.parent`` walk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tree_sitter

from ._parsing import compile_query, node_text, query_captures

Node = tree_sitter.Node

# Kind placeholder for anything callable: resolved to "method" when the nearest
# enclosing scope is a class-like container, else "function".
CALLABLE = "callable"


@dataclass(slots=True)
class _Decl:
    kind: str | None  # symbol kind, CALLABLE, or None for a scope that is not itself a symbol (Rust impl)
    name: str | None  # None: anonymous (not emitted, skipped in qualified names)
    container: bool  # callables directly inside are methods
    span: Node  # node whose lines are the symbol's span (before attribute extension)


def _name(node: Node, field: str = "name") -> str | None:
    child = node.child_by_field_name(field)
    if child is None:
        return None
    text = node_text(child).strip()
    return text or None


# --------------------------------------------------------------------------- python


def _classify_python(node: Node) -> _Decl | None:
    t = node.type
    if t == "function_definition":
        span = node.parent if node.parent is not None and node.parent.type == "decorated_definition" else node
        return _Decl(CALLABLE, _name(node), False, span)
    if t == "class_definition":
        span = node.parent if node.parent is not None and node.parent.type == "decorated_definition" else node
        return _Decl("class", _name(node), True, span)
    if t == "type_alias_statement":
        left = node.child_by_field_name("left")
        ident = _first_descendant(left, "identifier") if left is not None else None
        return _Decl("type", node_text(ident) or None, False, node)
    return None


def _first_descendant(node: Node | None, node_type: str) -> Node | None:
    if node is None:
        return None
    if node.type == node_type:
        return node
    for child in node.named_children:
        found = _first_descendant(child, node_type)
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------- js / ts / tsx

_JS_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})
_JS_CLASS_VALUES = frozenset({"class"})
_JS_MEMBER_PARENTS = frozenset({"class_body", "interface_body"})


def _js_span(node: Node) -> Node:
    parent = node.parent
    if parent is not None and parent.type == "export_statement":
        return parent
    return node


def _classify_js(node: Node) -> _Decl | None:
    t = node.type
    if t in ("class_declaration", "abstract_class_declaration", "class"):
        return _Decl("class", _name(node), True, _js_span(node))
    if t in ("function_declaration", "generator_function_declaration", "function_signature"):
        return _Decl(CALLABLE, _name(node), False, _js_span(node))
    if t in ("method_definition", "method_signature", "abstract_method_signature"):
        parent = node.parent
        if parent is None or parent.type not in _JS_MEMBER_PARENTS:
            return None  # object-literal methods and type-literal members are not symbols
        return _Decl(CALLABLE, _name(node), False, node)
    if t in ("field_definition", "public_field_definition"):
        value = node.child_by_field_name("value")
        if value is None or value.type not in _JS_FUNCTION_VALUES:
            return None
        name = _name(node, "property") or _name(node, "name")
        return _Decl(CALLABLE, name, False, node)
    if t == "variable_declarator":
        value = node.child_by_field_name("value")
        name_node = node.child_by_field_name("name")
        if value is None or name_node is None or name_node.type != "identifier":
            return None
        parent = node.parent
        span = node
        if parent is not None and parent.type in ("lexical_declaration", "variable_declaration"):
            if parent.named_child_count == 1:
                span = _js_span(parent)
        if value.type in _JS_FUNCTION_VALUES:
            return _Decl(CALLABLE, node_text(name_node), False, span)
        if value.type in _JS_CLASS_VALUES:
            return _Decl("class", node_text(name_node), True, span)
        return None
    if t == "interface_declaration":
        return _Decl("interface", _name(node), True, _js_span(node))
    if t == "type_alias_declaration":
        return _Decl("type", _name(node), False, _js_span(node))
    if t == "enum_declaration":
        return _Decl("enum", _name(node), True, _js_span(node))
    if t == "assignment_expression":
        return _classify_js_assignment(node)
    if t in ("internal_module", "module"):
        name = _name(node)
        if name is not None:
            name = name.strip("'\"`")
        span = node
        parent = node.parent
        if parent is not None and parent.type in ("expression_statement", "ambient_declaration"):
            span = parent
        return _Decl("module", name or None, False, _js_span(span))
    return None


def _classify_js_assignment(node: Node) -> _Decl | None:
    """Functions assigned at the top level of a file, the pre-class way of writing JavaScript:
    ``Command.prototype.option = function () {}`` is the method ``Command.option``; ``exports.parse =``,
    ``module.exports.parse =`` and ``Command.parse =`` give ``parse`` / ``Command.parse``."""
    value = node.child_by_field_name("right")
    left = node.child_by_field_name("left")
    if value is None or left is None or value.type not in _JS_FUNCTION_VALUES or left.type != "member_expression":
        return None
    stmt = node.parent
    if (
        stmt is None
        or stmt.type != "expression_statement"
        or stmt.parent is None
        or stmt.parent.type not in ("program", "statement_block")
        or (stmt.parent.type == "statement_block" and not _js_wrapper_block(stmt.parent))
    ):
        return None
    parts = node_text(left).replace(" ", "").split(".")
    if not all(p.isidentifier() or p.startswith("#") for p in parts):
        return None  # computed members: a["x"] = ...
    method = "prototype" in parts
    parts = [p for p in parts if p != "prototype"]
    if parts[:2] == ["module", "exports"]:
        parts = parts[2:]
    elif parts[:1] == ["exports"]:
        parts = parts[1:]
    if not parts:
        return None
    kind = "method" if method or len(parts) > 1 else "function"
    return _Decl(kind, ".".join(parts), False, stmt)


def _js_wrapper_block(block: Node) -> bool:
    """The body of a top-level IIFE (``(function () { ... })()``), where old libraries define everything."""
    fn = block.parent
    if fn is None or fn.type not in ("function_expression", "function", "arrow_function"):
        return False
    p = fn.parent
    while p is not None and p.type == "parenthesized_expression":
        p = p.parent
    return (
        p is not None
        and p.type == "call_expression"
        and p.parent is not None
        and p.parent.type == "expression_statement"
        and p.parent.parent is not None
        and p.parent.parent.type == "program"
    )


_JS_QUERY = """
[
  (class_declaration) (class) (function_declaration) (generator_function_declaration)
  (method_definition) (field_definition)
] @def
(variable_declarator value: [(arrow_function) (function_expression) (generator_function) (class)]) @def
(assignment_expression left: (member_expression) right: [(arrow_function) (function_expression) (generator_function)]) @def
"""

_TS_QUERY = """
[
  (class_declaration) (abstract_class_declaration) (class) (function_declaration)
  (generator_function_declaration) (function_signature) (method_definition) (method_signature)
  (abstract_method_signature) (public_field_definition) (interface_declaration)
  (type_alias_declaration) (enum_declaration) (internal_module) (module)
] @def
(variable_declarator value: [(arrow_function) (function_expression) (generator_function) (class)]) @def
(assignment_expression left: (member_expression) right: [(arrow_function) (function_expression) (generator_function)]) @def
"""

# --------------------------------------------------------------------------- go


def _go_receiver_type(node: Node) -> str | None:
    receiver = node.child_by_field_name("receiver")
    if receiver is None:
        return None
    for param in receiver.named_children:
        if param.type != "parameter_declaration":
            continue
        typ = param.child_by_field_name("type")
        while typ is not None and typ.type in ("pointer_type", "generic_type", "parenthesized_type"):
            if typ.type == "generic_type":
                typ = typ.child_by_field_name("type")
            else:
                typ = typ.named_children[0] if typ.named_children else None
        if typ is not None:
            return node_text(typ) or None
    return None


def _classify_go(node: Node) -> _Decl | None:
    t = node.type
    if t == "function_declaration":
        return _Decl("function", _name(node), False, node)
    if t == "method_declaration":
        name = _name(node)
        recv = _go_receiver_type(node)
        if name is not None and recv:
            name = f"{recv}.{name}"
        return _Decl("method", name, False, node)
    if t == "type_spec":
        typ = node.child_by_field_name("type")
        kind = {"struct_type": "struct", "interface_type": "interface"}.get(typ.type if typ else "", "type")
        return _Decl(kind, _name(node), kind != "type", node)
    if t == "type_alias":
        return _Decl("type", _name(node), False, node)
    if t in ("method_elem", "method_spec"):
        return _Decl("method", _name(node), False, node)
    return None


# --------------------------------------------------------------------------- rust


def _rust_type_name(node: Node | None) -> str | None:
    while node is not None and node.type in (
        "generic_type",
        "scoped_type_identifier",
        "reference_type",
        "pointer_type",
    ):
        if node.type == "generic_type":
            node = node.child_by_field_name("type")
        elif node.type == "scoped_type_identifier":
            node = node.child_by_field_name("name")
        else:
            node = node.child_by_field_name("type")
    if node is None:
        return None
    return node_text(node) or None


def _classify_rust(node: Node) -> _Decl | None:
    t = node.type
    if t in ("function_item", "function_signature_item"):
        return _Decl(CALLABLE, _name(node), False, node)
    if t in ("struct_item", "union_item"):
        return _Decl("struct", _name(node), True, node)
    if t == "enum_item":
        return _Decl("enum", _name(node), True, node)
    if t == "trait_item":
        return _Decl("trait", _name(node), True, node)
    if t == "type_item":
        return _Decl("type", _name(node), False, node)
    if t == "mod_item":
        if node.child_by_field_name("body") is None:
            return None  # `mod foo;` only points at another file
        return _Decl("module", _name(node), False, node)
    if t == "impl_item":
        return _Decl(None, _rust_type_name(node.child_by_field_name("type")), True, node)
    return None


# --------------------------------------------------------------------------- java


def _classify_java(node: Node) -> _Decl | None:
    t = node.type
    if t in ("class_declaration", "record_declaration"):
        return _Decl("class", _name(node), True, node)
    if t in ("interface_declaration", "annotation_type_declaration"):
        return _Decl("interface", _name(node), True, node)
    if t == "enum_declaration":
        return _Decl("enum", _name(node), True, node)
    if t in ("method_declaration", "constructor_declaration", "compact_constructor_declaration"):
        return _Decl("method", _name(node), False, node)
    return None


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class _LangSpec:
    classify: Callable[[Node], _Decl | None]
    query: str
    attribute_siblings: frozenset[str] = frozenset()  # preceding siblings folded into a span


_SPECS: dict[str, _LangSpec] = {
    "python": _LangSpec(
        _classify_python,
        "[(function_definition) (class_definition) (type_alias_statement)] @def",
    ),
    "javascript": _LangSpec(_classify_js, _JS_QUERY, frozenset({"decorator"})),
    "typescript": _LangSpec(_classify_js, _TS_QUERY, frozenset({"decorator"})),
    "tsx": _LangSpec(_classify_js, _TS_QUERY, frozenset({"decorator"})),
    "go": _LangSpec(
        _classify_go,
        "[(function_declaration) (method_declaration) (type_spec) (type_alias) (method_elem)] @def",
    ),
    "rust": _LangSpec(
        _classify_rust,
        """[(function_item) (function_signature_item) (struct_item) (union_item) (enum_item)
            (trait_item) (type_item) (mod_item)] @def""",
        frozenset({"attribute_item"}),
    ),
    "java": _LangSpec(
        _classify_java,
        """[(class_declaration) (record_declaration) (interface_declaration)
            (annotation_type_declaration) (enum_declaration) (method_declaration)
            (constructor_declaration) (compact_constructor_declaration)] @def""",
    ),
}


def _end_line(node: Node) -> int:
    row, column = node.end_point
    # A node that ends at column 0 (it swallowed a trailing newline) ends on the previous line.
    if column == 0 and row > node.start_point[0]:
        return row
    return row + 1


def _span_start(span: Node, attribute_siblings: frozenset[str]) -> int:
    start = span.start_point[0]
    if attribute_siblings:
        sibling = span.prev_named_sibling
        while sibling is not None and sibling.type in attribute_siblings:
            start = sibling.start_point[0]
            sibling = sibling.prev_named_sibling
    return start + 1


def extract(language: str, root: Node) -> list[tuple[str, str, int, int, int, int]]:
    """(qualified name, kind, start_line, end_line, start_byte, end_byte) per definition."""
    spec = _SPECS[language]
    query = compile_query(language, spec.query)
    classify = spec.classify
    out: list[tuple[str, str, int, int, int, int]] = []
    seen: set[tuple[int, int, str]] = set()
    for node in query_captures(query, root, "def"):
        key = (node.start_byte, node.end_byte, node.type)
        if key in seen:
            continue
        seen.add(key)
        decl = classify(node)
        if decl is None or decl.kind is None or not decl.name:
            continue
        # Qualify with enclosing named scopes; the nearest scope decides method vs function.
        parts = [decl.name]
        nearest_container: bool | None = None
        ancestor = node.parent
        while ancestor is not None:
            outer = classify(ancestor)
            if outer is not None:
                if nearest_container is None:
                    nearest_container = outer.container
                if outer.name:
                    parts.append(outer.name)
            ancestor = ancestor.parent
        kind = decl.kind
        if kind == CALLABLE:
            kind = "method" if nearest_container else "function"
        span = decl.span
        start_line = _span_start(span, spec.attribute_siblings)
        end_line = max(_end_line(span), start_line)
        out.append((".".join(reversed(parts)), kind, start_line, end_line, span.start_byte, span.end_byte))
    out.sort(key=lambda r: (r[2], -r[3], r[4], r[0]))
    return out
