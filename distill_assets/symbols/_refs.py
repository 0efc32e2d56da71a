"""What a span of code refers to, and what a file's imports bind: the raw material of dependency edges.

``references`` separates, for the lines of one definition:

* ``names``: bare names it uses (calls, instantiations, types, values passed on), minus the names it binds
  itself (parameters, assignment targets, loop variables): a parameter called ``render`` is not a use of
  the function ``render``;
* ``members``: ``(receiver, member)`` pairs of attribute/property/selector accesses (``self.pricing.total()``
  gives ``("self.pricing", "total")``; a receiver that is not a plain dotted name is ``""``);
* ``self_names``: the names that mean "this object" in the span (``self``/``cls``, ``this``, a Go method's
  receiver variable, Rust ``self``/``Self``).

``import_bindings`` lists what each import statement binds: ``(local name, module spec, imported name)``,
the imported name ``None`` when the whole module is bound and ``"*"`` for wildcard imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tree_sitter

from ._parsing import kinds_query, node_text, query_captures

Node = tree_sitter.Node

_JS_KINDS = ("identifier", "property_identifier", "private_property_identifier", "shorthand_property_identifier")
REF_KINDS: dict[str, tuple[str, ...]] = {
    "python": ("identifier",),
    "javascript": _JS_KINDS,
    "typescript": _JS_KINDS + ("type_identifier",),
    "tsx": _JS_KINDS + ("type_identifier",),
    "go": ("identifier", "type_identifier", "field_identifier", "package_identifier"),
    "rust": ("identifier", "type_identifier", "field_identifier"),
    "java": ("identifier", "type_identifier"),
}

# member access: node type -> (receiver field, member field)
_JS_MEMBER = {"member_expression": ("object", "property")}
MEMBER: dict[str, dict[str, tuple[str, str]]] = {
    "python": {"attribute": ("object", "attribute")},
    "javascript": _JS_MEMBER,
    "typescript": {**_JS_MEMBER, "nested_type_identifier": ("module", "name")},
    "tsx": {**_JS_MEMBER, "nested_type_identifier": ("module", "name")},
    "go": {"selector_expression": ("operand", "field"), "qualified_type": ("package", "name")},
    "rust": {
        "field_expression": ("value", "field"),
        "scoped_identifier": ("path", "name"),
        "scoped_type_identifier": ("path", "name"),
    },
    "java": {"method_invocation": ("object", "name"), "field_access": ("object", "field")},
}

# (parent type, field) where an identifier is BOUND by the span (None: any direct child)
_PY_BIND = {
    ("parameters", None),
    ("lambda_parameters", None),
    ("default_parameter", "name"),
    ("typed_default_parameter", "name"),
    ("typed_parameter", None),
    ("list_splat_pattern", None),
    ("dictionary_splat_pattern", None),
    ("assignment", "left"),
    ("augmented_assignment", "left"),
    ("pattern_list", None),
    ("tuple_pattern", None),
    ("list_pattern", None),
    ("for_statement", "left"),
    ("for_in_clause", "left"),
    ("as_pattern_target", None),
    ("named_expression", "name"),
    ("global_statement", None),
    ("nonlocal_statement", None),
}
_JS_BIND = {
    ("formal_parameters", None),
    ("required_parameter", "pattern"),
    ("optional_parameter", "pattern"),
    ("assignment_pattern", "left"),
    ("arrow_function", "parameter"),
    ("array_pattern", None),
    ("pair_pattern", "value"),
    ("rest_pattern", None),
    ("object_assignment_pattern", "left"),
    ("catch_clause", "parameter"),
    ("for_in_statement", "left"),
    ("variable_declarator", "name"),
}
BIND: dict[str, set[tuple[str, str | None]]] = {
    "python": _PY_BIND,
    "javascript": _JS_BIND,
    "typescript": _JS_BIND,
    "tsx": _JS_BIND,
    "go": {
        ("parameter_declaration", "name"),
        ("variadic_parameter_declaration", "name"),
        ("var_spec", "name"),
        ("const_spec", "name"),
        ("type_parameter_declaration", "name"),
    },
    "rust": {
        ("parameter", "pattern"),
        ("let_declaration", "pattern"),
        ("closure_parameters", None),
        ("for_expression", "pattern"),
        ("tuple_pattern", None),
        ("mut_pattern", None),
        ("reference_pattern", None),
        ("captured_pattern", None),
        ("tuple_struct_pattern", None),
    },
    "java": {
        ("formal_parameter", "name"),
        ("variable_declarator", "name"),
        ("catch_formal_parameter", "name"),
        ("enhanced_for_statement", "name"),
        ("inferred_parameters", None),
        ("lambda_expression", "parameters"),
        ("spread_parameter", None),
    },
}

# (parent type, field): names that are neither uses nor local bindings (definitions' own names, keys, labels)
_JS_SKIP = {
    ("function_declaration", "name"),
    ("generator_function_declaration", "name"),
    ("class_declaration", "name"),
    ("abstract_class_declaration", "name"),
    ("class", "name"),
    ("function_expression", "name"),
    ("method_definition", "name"),
    ("import_specifier", None),
    ("import_clause", None),
    ("namespace_import", None),
    ("export_specifier", None),
    ("namespace_export", None),
    ("pair", "key"),
    ("labeled_statement", "label"),
    ("break_statement", "label"),
    ("continue_statement", "label"),
    ("interface_declaration", "name"),
    ("type_alias_declaration", "name"),
    ("enum_declaration", "name"),
    ("property_signature", "name"),
    ("method_signature", "name"),
    ("abstract_method_signature", "name"),
    ("public_field_definition", "name"),
    ("field_definition", "property"),
    ("import_require_clause", None),
    ("function_signature", "name"),
    ("internal_module", "name"),
    ("module", "name"),
    ("type_parameter", "name"),
    ("enum_assignment", "name"),
    ("enum_body", None),
}
SKIP: dict[str, set[tuple[str, str | None]]] = {
    "python": {
        ("function_definition", "name"),
        ("class_definition", "name"),
        ("keyword_argument", "name"),
        ("dotted_name", None),
        ("aliased_import", None),
        ("import_from_statement", None),
        ("type_alias_statement", "left"),
    },
    "javascript": _JS_SKIP,
    "typescript": _JS_SKIP,
    "tsx": _JS_SKIP,
    "go": {
        ("function_declaration", "name"),
        ("method_declaration", "name"),
        ("type_spec", "name"),
        ("type_alias", "name"),
        ("field_declaration", "name"),
        ("method_elem", "name"),
        ("method_spec", "name"),
        ("labeled_statement", "label"),
        ("import_spec", None),
        ("package_clause", None),
    },
    "rust": {
        ("function_item", "name"),
        ("function_signature_item", "name"),
        ("struct_item", "name"),
        ("enum_item", "name"),
        ("trait_item", "name"),
        ("type_item", "name"),
        ("mod_item", "name"),
        ("union_item", "name"),
        ("field_declaration", "name"),
        ("enum_variant", "name"),
        ("field_initializer", "field"),
        ("macro_definition", "name"),
        ("const_item", "name"),
        ("static_item", "name"),
        ("use_as_clause", None),
        ("use_list", None),
        ("scoped_use_list", None),
        ("use_declaration", None),
        ("extern_crate_declaration", None),
        ("lifetime", None),
    },
    "java": {
        ("class_declaration", "name"),
        ("method_declaration", "name"),
        ("constructor_declaration", "name"),
        ("interface_declaration", "name"),
        ("enum_declaration", "name"),
        ("record_declaration", "name"),
        ("annotation_type_declaration", "name"),
        ("enum_constant", "name"),
        ("import_declaration", None),
        ("package_declaration", None),
        ("labeled_statement", None),
        ("type_parameter", None),
    },
}

# node kinds whose whole subtree is never a use (the import machinery has its own reader)
_IMPORT_ANCESTORS = {
    "python": ("import_statement", "import_from_statement", "future_import_statement"),
    "javascript": ("import_statement",),
    "typescript": ("import_statement",),
    "tsx": ("import_statement",),
    "go": ("import_declaration", "package_clause"),
    "rust": ("use_declaration", "extern_crate_declaration"),
    "java": ("import_declaration", "package_declaration"),
}

_SELF_WORDS = {
    "python": {"self", "cls"},
    "javascript": {"this"},
    "typescript": {"this"},
    "tsx": {"this"},
    "go": set(),
    "rust": {"self", "Self"},
    "java": {"this"},
}
# members that only make sense as members (never a bare name)
_MEMBER_ONLY = {"property_identifier", "private_property_identifier", "field_identifier"}


# a bare name in call position: node type -> the field holding what is called (instantiations included)
CALL: dict[str, dict[str, str]] = {
    "python": {"call": "function"},
    "javascript": {"call_expression": "function", "new_expression": "constructor"},
    "typescript": {"call_expression": "function", "new_expression": "constructor"},
    "tsx": {"call_expression": "function", "new_expression": "constructor"},
    "go": {"call_expression": "function", "composite_literal": "type"},
    "rust": {"call_expression": "function", "struct_expression": "name"},
    "java": {"object_creation_expression": "type"},
}


@dataclass
class References:
    names: set[str] = field(default_factory=set)
    called: set[str] = field(default_factory=set)  # bare names that are called or instantiated
    called_members: set[tuple[str, str]] = field(default_factory=set)  # members in call position: obj.m(...)
    members: set[tuple[str, str]] = field(default_factory=set)
    self_names: set[str] = field(default_factory=set)
    bound: set[str] = field(default_factory=set)


def _field_of(node: Node, parent: Node) -> str | None:
    """The field name under which ``node`` hangs from ``parent`` (None when it has none)."""
    for i, child in enumerate(parent.children):
        if child.start_byte == node.start_byte and child.end_byte == node.end_byte and child.type == node.type:
            return parent.field_name_for_child(i)
    return None


def receiver_text(node: Node | None) -> str:
    """A receiver as a dotted name (``self``, ``click.testing``, ``this``), ``super`` for ``super()``, else ""."""
    if node is None:
        return ""
    t = node.type
    if t in ("identifier", "type_identifier", "package_identifier", "field_identifier", "property_identifier"):
        return node_text(node)
    if t in ("this", "self", "super", "crate"):
        return t
    if t == "call":  # python super()
        fn = node.child_by_field_name("function")
        if fn is not None and node_text(fn) == "super":
            return "super"
        return ""
    if t in (
        "attribute",
        "member_expression",
        "selector_expression",
        "field_access",
        "scoped_identifier",
        "field_expression",
        "nested_type_identifier",
    ):
        for lang_fields in MEMBER.values():
            if t in lang_fields:
                obj_f, mem_f = lang_fields[t]
                left = receiver_text(node.child_by_field_name(obj_f))
                right = node.child_by_field_name(mem_f)
                if left and right is not None:
                    sep = "::" if t in ("scoped_identifier",) else "."
                    return f"{left}{sep}{node_text(right)}"
                return ""
    return ""


def _under_import(node: Node, kinds: tuple[str, ...]) -> bool:
    p = node.parent
    depth = 0
    while p is not None and depth < 8:
        if p.type in kinds:
            return True
        p = p.parent
        depth += 1
    return False


def references(language: str, root: Node, start_line: int, end_line: int) -> References:
    query = kinds_query(language, REF_KINDS[language], "id")
    out = References(self_names=set(_SELF_WORDS[language]))
    if query is None:
        return out
    first_row, last_row = max(start_line, 1) - 1, end_line - 1
    member_types, bind, skip = MEMBER[language], BIND[language], SKIP[language]
    imports = _IMPORT_ANCESTORS[language]
    uses: set[str] = set()
    called: set[str] = set()
    for node in query_captures(query, root, "id", ((first_row, 0), (last_row + 1, 0))):
        if not first_row <= node.start_point[0] <= last_row:
            continue
        parent = node.parent
        if parent is None:
            continue
        text = node_text(node)
        if not text:
            continue
        pt = parent.type
        fld = _field_of(node, parent)
        if pt in member_types:
            obj_f, mem_f = member_types[pt]
            if fld == mem_f:
                recv = parent.child_by_field_name(obj_f)
                if recv is None and language == "java" and pt == "method_invocation":
                    member = ("this", text)  # helper() inside a class: this.helper()
                    uses.add(text)
                else:
                    member = (receiver_text(recv), text)
                out.members.add(member)
                gp = parent.parent
                call_field = CALL[language].get(gp.type) if gp is not None else None
                if pt == "method_invocation" or (call_field and _field_of(parent, gp) == call_field):
                    out.called_members.add(member)
                continue
        if node.type in _MEMBER_ONLY:
            continue
        if _under_import(node, imports):
            continue
        if (pt, fld) in skip or (pt, None) in skip:
            continue
        if language == "go" and pt == "literal_element":
            gp = parent.parent
            if gp is not None and gp.type == "keyed_element" and _field_of(parent, gp) == "key":
                continue  # Foo{Name: x}: a field key, not a use of Name
        bound = (pt, fld) in bind or (pt, None) in bind
        if language == "go" and pt == "expression_list":
            gp = parent.parent
            if (
                gp is not None
                and gp.type in ("short_var_declaration", "range_clause")
                and _field_of(parent, gp) == "left"
            ):
                bound = True
        if language == "go" and pt == "parameter_declaration":
            gp = parent.parent
            if (
                gp is not None
                and gp.parent is not None
                and gp.parent.type == "method_declaration"
                and _field_of(gp, gp.parent) == "receiver"
            ):
                out.self_names.add(text)
        if bound:
            out.bound.add(text)
        else:
            uses.add(text)
            call_field = CALL[language].get(pt)
            if call_field is not None and fld == call_field:
                called.add(text)
    out.names = uses - out.bound
    out.called = called - out.bound
    return out


# --------------------------------------------------------------------------- import bindings

Binding = tuple[str, str, "str | None"]  # (local name, module spec, imported name | None | "*")


def _py_dotted(node: Node) -> str:
    if node.type == "dotted_name":
        return ".".join(node_text(c) for c in node.named_children if c.type == "identifier")
    return node_text(node).replace(" ", "")


def _py_bindings(root: Node, out: list[Binding]) -> None:
    query = kinds_query("python", ("import_statement", "import_from_statement"), "imp")
    for node in query_captures(query, root, "imp"):
        if node.type == "import_statement":
            for item in node.children_by_field_name("name"):
                if item.type == "aliased_import":
                    name, alias = item.child_by_field_name("name"), item.child_by_field_name("alias")
                    if name is not None and alias is not None:
                        out.append((node_text(alias), _py_dotted(name), None))
                elif item.type == "dotted_name":
                    dotted = _py_dotted(item)
                    out.append((dotted.split(".", 1)[0], dotted.split(".", 1)[0], None))
            continue
        module = node.child_by_field_name("module_name")
        if module is None:
            continue
        mod = _py_dotted(module) if module.type == "dotted_name" else node_text(module).replace(" ", "")
        if any(c.type == "wildcard_import" for c in node.children):
            out.append(("*", mod, "*"))
        for item in node.children_by_field_name("name"):
            if item.type == "aliased_import":
                name, alias = item.child_by_field_name("name"), item.child_by_field_name("alias")
                if name is not None and alias is not None:
                    out.append((node_text(alias), mod, _py_dotted(name)))
            elif item.type == "dotted_name":
                n = _py_dotted(item)
                out.append((n, mod, n))


def _js_str(node: Node | None) -> str:
    if node is None:
        return ""
    if node.type == "string":
        return "".join(node_text(c) for c in node.named_children if c.type == "string_fragment")
    return node_text(node).strip("'\"`")


def _js_pattern(node: Node, spec: str, out: list[Binding]) -> None:
    if node.type == "identifier":
        out.append((node_text(node), spec, None))
    elif node.type == "object_pattern":
        for child in node.named_children:
            if child.type == "shorthand_property_identifier_pattern":
                out.append((node_text(child), spec, node_text(child)))
            elif child.type == "pair_pattern":
                key, value = child.child_by_field_name("key"), child.child_by_field_name("value")
                if key is not None and value is not None and value.type == "identifier":
                    out.append((node_text(value), spec, node_text(key)))
            elif child.type == "object_assignment_pattern":
                left = child.child_by_field_name("left")
                if left is not None and left.type == "shorthand_property_identifier_pattern":
                    out.append((node_text(left), spec, node_text(left)))


def _js_bindings(language: str, root: Node, out: list[Binding]) -> None:
    query = kinds_query(language, ("import_statement", "call_expression"), "imp")
    for node in query_captures(query, root, "imp"):
        if node.type == "import_statement":
            spec = _js_str(node.child_by_field_name("source"))
            for child in node.named_children:
                if child.type == "import_clause":
                    for part in child.named_children:
                        if part.type == "identifier":
                            out.append((node_text(part), spec, "default"))
                        elif part.type == "namespace_import":
                            for ident in part.named_children:
                                out.append((node_text(ident), spec, None))
                        elif part.type == "named_imports":
                            for s in part.named_children:
                                if s.type != "import_specifier":
                                    continue
                                name, alias = s.child_by_field_name("name"), s.child_by_field_name("alias")
                                if name is not None:
                                    out.append((node_text(alias if alias is not None else name), spec, node_text(name)))
                elif child.type == "import_require_clause":
                    ident = next((c for c in child.named_children if c.type == "identifier"), None)
                    src = child.child_by_field_name("source")
                    if ident is not None:
                        out.append((node_text(ident), _js_str(src) if src is not None else spec, None))
            continue
        fn, args = node.child_by_field_name("function"), node.child_by_field_name("arguments")
        if fn is None or args is None or not args.named_children:
            continue
        if not (fn.type == "import" or (fn.type == "identifier" and node_text(fn) == "require")):
            continue
        first = args.named_children[0]
        if first.type != "string":
            continue
        spec = _js_str(first)
        parent, member = node.parent, None
        while parent is not None and parent.type in (
            "await_expression",
            "parenthesized_expression",
            "member_expression",
        ):
            if parent.type == "member_expression":
                prop = parent.child_by_field_name("property")
                member = node_text(prop) if prop is not None else None
            parent = parent.parent
        if parent is not None and parent.type == "variable_declarator":
            name = parent.child_by_field_name("name")
            if name is None:
                continue
            if member and name.type == "identifier":
                out.append((node_text(name), spec, member))
            else:
                _js_pattern(name, spec, out)


def _go_bindings(root: Node, out: list[Binding]) -> None:
    import re

    query = kinds_query("go", ("import_spec",), "imp")
    for node in query_captures(query, root, "imp"):
        path_node = node.child_by_field_name("path")
        if path_node is None:
            continue
        path = node_text(path_node).strip('"`')
        name = node.child_by_field_name("name")
        if name is not None:
            text = node_text(name)
            if text == ".":
                out.append(("*", path, "*"))
            elif text != "_":
                out.append((text, path, None))
            continue
        segs = [s for s in path.split("/") if s]
        if len(segs) > 1 and re.fullmatch(r"v\d+", segs[-1]):
            segs.pop()
        if segs:
            out.append((segs[-1].replace("-", "_").removeprefix("go_").removeprefix("go-"), path, None))


def _rust_path(node: Node) -> list[str]:
    if node.type == "scoped_identifier":
        path, name = node.child_by_field_name("path"), node.child_by_field_name("name")
        return (_rust_path(path) if path is not None else []) + ([node_text(name)] if name is not None else [])
    return [node_text(node)]


def _rust_tree(node: Node, prefix: list[str], out: list[Binding]) -> None:
    t = node.type
    if t in ("identifier", "scoped_identifier"):
        segs = prefix + _rust_path(node)
        if segs:
            out.append((segs[-1], "::".join(segs[:-1]), segs[-1]))
    elif t == "use_as_clause":
        path, alias = node.child_by_field_name("path"), node.child_by_field_name("alias")
        if path is not None and alias is not None:
            segs = prefix + _rust_path(path)
            out.append((node_text(alias), "::".join(segs[:-1]), segs[-1]))
    elif t == "use_wildcard":
        segs = prefix + [s for c in node.named_children for s in _rust_path(c)]
        out.append(("*", "::".join(segs), "*"))
    elif t == "scoped_use_list":
        path = node.child_by_field_name("path")
        lst = node.child_by_field_name("list")
        new_prefix = prefix + (_rust_path(path) if path is not None else [])
        if lst is not None:
            _rust_tree(lst, new_prefix, out)
    elif t == "use_list":
        for child in node.named_children:
            _rust_tree(child, prefix, out)


def _rust_bindings(root: Node, out: list[Binding]) -> None:
    query = kinds_query("rust", ("use_declaration",), "imp")
    for node in query_captures(query, root, "imp"):
        arg = node.child_by_field_name("argument")
        if arg is not None:
            _rust_tree(arg, [], out)


def _java_bindings(root: Node, out: list[Binding]) -> None:
    query = kinds_query("java", ("import_declaration",), "imp")
    for node in query_captures(query, root, "imp"):
        wildcard = any(c.type == "asterisk" for c in node.children)
        for child in node.named_children:
            if child.type in ("scoped_identifier", "identifier"):
                segs = node_text(child).replace(" ", "").split(".")
                if wildcard:
                    out.append(("*", ".".join(segs), "*"))
                else:
                    out.append((segs[-1], ".".join(segs[:-1]), segs[-1]))


def import_bindings(language: str, root: Node) -> list[Binding]:
    out: list[Binding] = []
    if language == "python":
        _py_bindings(root, out)
    elif language in ("javascript", "typescript", "tsx"):
        _js_bindings(language, root, out)
    elif language == "go":
        _go_bindings(root, out)
    elif language == "rust":
        _rust_bindings(root, out)
    elif language == "java":
        _java_bindings(root, out)
    return [b for b in out if b[0]]
