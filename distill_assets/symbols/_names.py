"""Identifiers used in a line span, and names brought in by imports."""

from __future__ import annotations

import re

import tree_sitter

from ._parsing import kinds_query, node_text, query_captures

Node = tree_sitter.Node

# --------------------------------------------------------------------------- identifiers

_JS_IDENTIFIERS = (
    "identifier",
    "property_identifier",
    "private_property_identifier",
    "shorthand_property_identifier",
    "shorthand_property_identifier_pattern",
)

IDENTIFIER_KINDS: dict[str, tuple[str, ...]] = {
    "python": ("identifier",),
    "javascript": _JS_IDENTIFIERS,
    "typescript": _JS_IDENTIFIERS + ("type_identifier",),
    "tsx": _JS_IDENTIFIERS + ("type_identifier",),
    "go": ("identifier", "field_identifier", "type_identifier", "package_identifier"),
    "rust": ("identifier", "field_identifier", "type_identifier", "shorthand_field_identifier"),
    "java": ("identifier", "type_identifier"),
}


def identifiers(language: str, root: Node, start_line: int, end_line: int) -> set[str]:
    query = kinds_query(language, IDENTIFIER_KINDS[language], "id")
    if query is None:
        return set()
    first_row, last_row = max(start_line, 1) - 1, end_line - 1
    nodes = query_captures(query, root, "id", ((first_row, 0), (last_row + 1, 0)))
    out: set[str] = set()
    for node in nodes:
        if first_row <= node.start_point[0] <= last_row:
            text = node_text(node)
            if text:
                out.add(text)
    return out


# --------------------------------------------------------------------------- imports

IMPORT_KINDS: dict[str, tuple[str, ...]] = {
    "python": ("import_statement", "import_from_statement", "future_import_statement"),
    "javascript": ("import_statement", "export_statement", "call_expression"),
    "typescript": ("import_statement", "export_statement", "call_expression"),
    "tsx": ("import_statement", "export_statement", "call_expression"),
    "go": ("import_spec",),
    "rust": ("use_declaration", "extern_crate_declaration"),
    "java": ("import_declaration",),
}


def imports(language: str, root: Node) -> set[str]:
    query = kinds_query(language, IMPORT_KINDS[language], "imp")
    if query is None:
        return set()
    handler = _IMPORT_HANDLERS[language]
    out: set[str] = set()
    for node in query_captures(query, root, "imp"):
        handler(node, out)
    out.discard("")
    return out


# python ----------------------------------------------------------------------


def _py_dotted(node: Node) -> str:
    if node.type == "dotted_name":
        return ".".join(node_text(c) for c in node.named_children if c.type == "identifier")
    return node_text(node).strip()


def _py_import_item(node: Node, out: set[str], *, bind_root: bool) -> None:
    if node.type == "aliased_import":
        name = node.child_by_field_name("name")
        alias = node.child_by_field_name("alias")
        if name is not None:
            out.add(_py_dotted(name))
        if alias is not None:
            out.add(node_text(alias))
    elif node.type == "dotted_name":
        dotted = _py_dotted(node)
        out.add(dotted)
        if bind_root:  # `import a.b` binds `a`
            out.add(dotted.split(".", 1)[0])


def _py_import(node: Node, out: set[str]) -> None:
    if node.type == "import_statement":
        for child in node.children_by_field_name("name"):
            _py_import_item(child, out, bind_root=True)
        return
    if node.type == "future_import_statement":
        out.add("__future__")
    else:
        module = node.child_by_field_name("module_name")
        if module is not None:
            if module.type == "relative_import":
                out.add(re.sub(r"\s+", "", node_text(module)))
                for child in module.named_children:
                    if child.type == "dotted_name":
                        out.add(_py_dotted(child))
            else:
                out.add(_py_dotted(module))
    for child in node.children_by_field_name("name"):
        _py_import_item(child, out, bind_root=False)


# javascript / typescript -----------------------------------------------------------


def _js_string(node: Node | None) -> str:
    if node is None:
        return ""
    if node.type == "string":
        return "".join(node_text(c) for c in node.named_children if c.type == "string_fragment")
    return node_text(node).strip("'\"`")


def _js_bind_pattern(node: Node, out: set[str]) -> None:
    """Names bound by `const <pattern> = require(...)`."""
    if node.type == "identifier":
        out.add(node_text(node))
    elif node.type == "object_pattern":
        for child in node.named_children:
            if child.type == "shorthand_property_identifier_pattern":
                out.add(node_text(child))
            elif child.type == "pair_pattern":
                key = child.child_by_field_name("key")
                value = child.child_by_field_name("value")
                if key is not None:
                    out.add(node_text(key))
                if value is not None:
                    _js_bind_pattern(value, out)
            elif child.type == "object_assignment_pattern":
                left = child.child_by_field_name("left")
                if left is not None:
                    _js_bind_pattern(left, out)
    elif node.type == "array_pattern":
        for child in node.named_children:
            _js_bind_pattern(child, out)


def _js_specifiers(node: Node, out: set[str]) -> None:
    for spec in node.named_children:
        if spec.type in ("import_specifier", "export_specifier"):
            for field in ("name", "alias"):
                child = spec.child_by_field_name(field)
                if child is not None:
                    out.add(_js_string(child) if child.type == "string" else node_text(child))


def _js_import(node: Node, out: set[str]) -> None:
    t = node.type
    if t == "call_expression":
        fn = node.child_by_field_name("function")
        args = node.child_by_field_name("arguments")
        if fn is None or args is None or not args.named_children:
            return
        if not (fn.type == "import" or (fn.type == "identifier" and node_text(fn) == "require")):
            return
        first = args.named_children[0]
        if first.type not in ("string", "template_string"):
            return
        out.add(_js_string(first))
        parent = node.parent
        while parent is not None and parent.type in ("await_expression", "parenthesized_expression"):
            parent = parent.parent
        if parent is not None and parent.type == "variable_declarator":
            name = parent.child_by_field_name("name")
            if name is not None:
                _js_bind_pattern(name, out)
        return
    source = node.child_by_field_name("source")
    if t == "export_statement" and source is None:
        return  # a plain export, not a re-export
    if source is not None:
        out.add(_js_string(source))
    for child in node.named_children:
        if child.type == "import_clause":
            for part in child.named_children:
                if part.type == "identifier":
                    out.add(node_text(part))
                elif part.type == "namespace_import":
                    for ident in part.named_children:
                        out.add(node_text(ident))
                elif part.type == "named_imports":
                    _js_specifiers(part, out)
        elif child.type == "import_require_clause":  # TS: import fs = require("fs")
            for part in child.named_children:
                if part.type == "identifier":
                    out.add(node_text(part))
                elif part.type == "string":
                    out.add(_js_string(part))
        elif child.type == "export_clause":
            _js_specifiers(child, out)
        elif child.type == "namespace_export":
            for ident in child.named_children:
                out.add(node_text(ident))


# go --------------------------------------------------------------------------------

_GO_MAJOR_VERSION = re.compile(r"v\d+")


def _go_import(node: Node, out: set[str]) -> None:
    path_node = node.child_by_field_name("path")
    if path_node is None:
        return
    path = node_text(path_node).strip('"`')
    if not path:
        return
    out.add(path)
    name = node.child_by_field_name("name")
    if name is not None:
        if name.type == "package_identifier":
            out.add(node_text(name))
        return  # `_` and `.` imports bind no package name
    # Implicit package name: last path segment, skipping a /vN major-version suffix.
    segments = [s for s in path.split("/") if s]
    if len(segments) > 1 and _GO_MAJOR_VERSION.fullmatch(segments[-1]):
        segments.pop()
    if segments:
        out.add(segments[-1])


# rust ------------------------------------------------------------------------------

_RUST_PATH_KEYWORDS = frozenset({"crate", "self", "super"})


def _rust_segments(node: Node) -> list[str]:
    if node.type == "scoped_identifier":
        path = node.child_by_field_name("path")
        name = node.child_by_field_name("name")
        segments = _rust_segments(path) if path is not None else []
        if name is not None:
            segments.append(node_text(name))
        return segments
    text = node_text(node)
    return [text] if text else []


def _rust_add_path(segments: list[str], out: set[str]) -> None:
    if not segments:
        return
    out.add("::".join(segments))
    if segments[-1] not in _RUST_PATH_KEYWORDS:
        out.add(segments[-1])


def _rust_use_tree(node: Node, prefix: list[str], out: set[str]) -> None:
    t = node.type
    if t in ("identifier", "scoped_identifier", "crate", "super", "metavariable"):
        _rust_add_path(prefix + _rust_segments(node), out)
    elif t == "self":  # `use a::b::{self}` imports `a::b`
        _rust_add_path(prefix, out)
    elif t == "use_as_clause":
        path = node.child_by_field_name("path")
        alias = node.child_by_field_name("alias")
        if path is not None:
            _rust_add_path(prefix + _rust_segments(path), out)
        if alias is not None and node_text(alias) != "_":
            out.add(node_text(alias))
    elif t == "use_wildcard":
        for child in node.named_children:
            out.add("::".join(prefix + _rust_segments(child)))
        if not node.named_children and prefix:
            out.add("::".join(prefix))
    elif t == "scoped_use_list":
        path = node.child_by_field_name("path")
        new_prefix = prefix + (_rust_segments(path) if path is not None else [])
        if new_prefix:
            out.add("::".join(new_prefix))
        lst = node.child_by_field_name("list")
        if lst is not None:
            _rust_use_tree(lst, new_prefix, out)
    elif t == "use_list":
        for child in node.named_children:
            _rust_use_tree(child, prefix, out)


def _rust_import(node: Node, out: set[str]) -> None:
    if node.type == "extern_crate_declaration":
        name = node.child_by_field_name("name")
        alias = node.child_by_field_name("alias")
        if name is not None:
            out.add(node_text(name))
        if alias is not None:
            out.add(node_text(alias))
        return
    argument = node.child_by_field_name("argument")
    if argument is not None:
        _rust_use_tree(argument, [], out)


# java ------------------------------------------------------------------------------


def _java_segments(node: Node) -> list[str]:
    if node.type == "scoped_identifier":
        scope = node.child_by_field_name("scope")
        name = node.child_by_field_name("name")
        segments = _java_segments(scope) if scope is not None else []
        if name is not None:
            segments.append(node_text(name))
        return segments
    return [node_text(node)]


def _java_import(node: Node, out: set[str]) -> None:
    wildcard = any(c.type == "asterisk" for c in node.children)
    for child in node.named_children:
        if child.type in ("scoped_identifier", "identifier"):
            segments = _java_segments(child)
            out.add(".".join(segments))
            if not wildcard:
                out.add(segments[-1])


_IMPORT_HANDLERS = {
    "python": _py_import,
    "javascript": _js_import,
    "typescript": _js_import,
    "tsx": _js_import,
    "go": _go_import,
    "rust": _rust_import,
    "java": _java_import,
}
