"""What a span refers to, what imports bind, which files an import names; old-style JavaScript symbols."""

from distill_assets.symbols import ModuleResolver, ParsedFile, extract_symbols


def test_python_uses_exclude_parameters_locals_and_keywords():
    src = (
        "from .a import b as c\nimport x.y as z\nfrom click import testing\n"
        "def render(a, b=1, *c, d: int = 2, **e):\n    g = h(a, k=1)\n    for i, j in q: pass\n"
        "    self.m(super().n())\n    return click.testing.X(render, testing.CliRunner)\n"
    )
    f = ParsedFile("p/m.py", src)
    r = f.references(4, 8)
    assert {"h", "q", "click", "testing", "int"} <= r.names
    assert not {"a", "b", "c", "d", "e", "g", "i", "j", "k"} & r.names  # bound in the span, or keyword names
    assert {("self", "m"), ("super", "n"), ("click.testing", "X"), ("testing", "CliRunner")} <= r.members
    assert r.called >= {"h"} and "q" not in r.called
    assert f.bindings() == [("c", ".a", "b"), ("z", "x.y", None), ("testing", "click", "testing")]


def test_go_receivers_are_self_and_composite_keys_are_not_uses():
    src = (
        'package p\nimport (\n  al "github.com/a/b"\n  "fmt"\n)\n'
        "func (s *Store) Len(name string) int { x := name; y := Foo{Bar: 1}; s.Other(); return al.F(x, y, render) }\n"
    )
    f = ParsedFile("s.go", src)
    r = f.references(6, 6)
    assert "s" in r.self_names and ("s", "Other") in r.members and ("al", "F") in r.members
    assert "render" in r.names and "Foo" in r.names and "Bar" not in r.names and "name" not in r.names
    assert f.bindings() == [("al", "github.com/a/b", None), ("fmt", "fmt", None)]


def test_javascript_bindings_and_uses():
    src = (
        "const {a, b: c} = require('./m');\nconst d = require('./n').e;\nimport F, {G as H} from './x';\n"
        "import * as NS from '../y';\nfunction f(p, {q}, r = 1, ...s) { const t = new K(p); this.m(); obj.k({w}); }\n"
    )
    f = ParsedFile("t/a.test.js", src)
    r = f.references(5, 5)
    assert {"K", "obj", "w"} <= r.names and not {"p", "q", "r", "s", "t"} & r.names
    assert ("this", "m") in r.members and ("obj", "k") in r.members and "K" in r.called
    assert ("obj", "k") in r.called_members and ("this", "m") in r.called_members
    assert sorted(f.bindings(), key=str) == sorted(
        [
            ("a", "./m", "a"),
            ("c", "./m", "b"),
            ("F", "./x", "default"),
            ("H", "./x", "G"),
            ("d", "./n", "e"),
            ("NS", "../y", None),
        ],
        key=str,
    )
    reads = ParsedFile("b.js", "function g(o) { return o.description + o.run(); }\n").references(1, 1)
    assert ("o", "description") in reads.members and ("o", "description") not in reads.called_members


def test_module_resolution_against_the_tree():
    tree = [
        "src/click/__init__.py",
        "src/click/core.py",
        "src/click/testing.py",
        "tests/test_core.py",
        "lib/command.js",
        "index.js",
        "tests/help.test.js",
        "store/store.go",
        "store/store_test.go",
        "vendor/x/y.go",
    ]
    m = ModuleResolver(tree)
    assert m.resolve("python", "click.core", "tests/test_core.py").covers("src/click/core.py")
    pkg = m.resolve("python", "click", "tests/test_core.py")  # a package stands for its modules
    assert pkg.covers("src/click/testing.py") and not pkg.covers("tests/test_core.py")
    assert m.resolve("python", ".core", "src/click/testing.py").covers("src/click/core.py")
    assert m.submodule("python", "click", "testing", "tests/test_core.py").covers("src/click/testing.py")
    assert not m.resolve("python", "os.path", "src/click/core.py")
    assert m.resolve("javascript", "../lib/command", "tests/help.test.js").covers("lib/command.js")
    assert m.resolve("javascript", "../", "tests/help.test.js").covers("lib/command.js")  # the package root
    assert not m.resolve("javascript", "lodash", "index.js")
    go = m.resolve("go", "github.com/acme/shop/store", "main.go")
    assert go.covers("store/store.go") and not go.covers("vendor/x/y.go")
    assert not m.resolve("go", "strings", "store/store.go")


def test_prototype_era_javascript_functions_are_symbols():
    src = (
        "function Command(name) {\n  this.name = name;\n}\n"
        "Command.prototype.option = function(flags) {\n  var listener = function() {};\n  return this;\n};\n"
        "exports.parseArgs = function(a) { return a; };\nmodule.exports.helper = (x) => x;\n"
        "Command.create = function() { return new Command(); };\nobj['x'] = function() {};\n"
        "(function () {\n  Foo.prototype.bar = function () {};\n})();\n"
    )
    got = [(s.kind, s.name, s.start_line, s.end_line) for s in extract_symbols("a.js", src)]
    assert got == [
        ("function", "Command", 1, 3),
        ("method", "Command.option", 4, 7),
        ("function", "Command.option.listener", 5, 5),
        ("function", "parseArgs", 8, 8),
        ("function", "helper", 9, 9),
        ("method", "Command.create", 10, 10),
        ("method", "Foo.bar", 13, 13),
    ]
