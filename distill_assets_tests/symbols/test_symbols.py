from __future__ import annotations

import textwrap
import threading

import pytest

from distill_assets.symbols import (
    SUPPORTED_LANGUAGES,
    SYMBOL_KINDS,
    Symbol,
    SymbolIndex,
    extract_symbols,
    identifiers_in_span,
    imported_names,
    language_for_path,
)


def src(text: str) -> str:
    """Dedent; line 1 of the result is the first line after the opening quotes."""
    return textwrap.dedent(text)


def table(path: str, source: str | bytes) -> list[tuple[str, str, int, int]]:
    return [(s.name, s.kind, s.start_line, s.end_line) for s in extract_symbols(path, source)]


# --------------------------------------------------------------------------- language detection


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("pkg/mod.py", "python"),
        ("pkg/stubs.pyi", "python"),
        ("web/app.js", "javascript"),
        ("web/App.JSX", "javascript"),
        ("web/esm.mjs", "javascript"),
        ("web/common.cjs", "javascript"),
        ("src/index.ts", "typescript"),
        ("types/lib.d.ts", "typescript"),
        ("src/App.tsx", "tsx"),
        ("cmd/main.go", "go"),
        ("src/lib.rs", "rust"),
        ("src/main/java/A.java", "java"),
        ("README.md", None),
        ("Makefile", None),
        ("script.py.orig", None),
        ("lib.c", None),
    ],
)
def test_language_for_path(path: str, language: str | None) -> None:
    assert language_for_path(path) == language


def test_supported_languages_listed() -> None:
    assert set(SUPPORTED_LANGUAGES) == {"python", "javascript", "typescript", "tsx", "go", "rust", "java"}


# --------------------------------------------------------------------------- python

PYTHON = src(
    """\
    import os
    from a.b import c as d


    @decorator
    @other.decorator(arg=1)
    def top(x):
        return helper(x)


    class Outer(Base):
        attr: int = 1

        class Inner:
            async def method(self):
                def nested():
                    pass
                return nested

        @property
        def prop(self):
            return self.pricing.compute_total(self.x)


    def make():
        class Local:
            def m(self):
                return 1
        return Local
    """
)


def test_python_symbols() -> None:
    assert table("pkg/mod.py", PYTHON) == [
        # decorated definitions: the span starts at the first decorator line
        ("top", "function", 5, 8),
        ("Outer", "class", 11, 22),
        ("Outer.Inner", "class", 14, 18),
        ("Outer.Inner.method", "method", 15, 18),
        ("Outer.Inner.method.nested", "function", 16, 17),
        ("Outer.prop", "method", 20, 22),
        ("make", "function", 25, 29),
        ("make.Local", "class", 26, 28),
        ("make.Local.m", "method", 27, 28),
    ]


def test_symbol_fields_and_language() -> None:
    syms = extract_symbols("pkg/mod.py", PYTHON)
    assert syms[0] == Symbol("pkg/mod.py", "top", "function", 5, 8, "python")
    assert all(s.kind in SYMBOL_KINDS for s in syms)
    with pytest.raises(AttributeError):
        syms[0].name = "other"  # type: ignore[misc]


def test_bytes_and_str_give_same_result() -> None:
    assert extract_symbols("m.py", PYTHON) == extract_symbols("m.py", PYTHON.encode())


def test_python_type_alias_and_crlf() -> None:
    source = "class A:\r\n    def m(self):\r\n        pass\r\n\r\ntype Alias = int\r\n"
    assert table("t.py", source) == [
        ("A", "class", 1, 3),
        ("A.m", "method", 2, 3),
        ("Alias", "type", 5, 5),
    ]


def test_python_utf8_lines() -> None:
    source = '# héllo wörld ✓\ns = "日本語"\n\ndef f():\n    return "é"\n'
    assert table("u.py", source) == [("f", "function", 4, 5)]


# --------------------------------------------------------------------------- javascript

JAVASCRIPT = src(
    """\
    import React, { useState as useS } from "react";
    const fs = require("fs");

    export const fetchAll = async (ids) => {
      return ids.map((id) => fetchOne(id));
    };

    function fetchOne(id) {
      const parse = function (raw) {
        return JSON.parse(raw);
      };
      return parse(id);
    }

    export default class Cart extends Base {
      static count = 0;
      onClick = () => {
        this.total();
      };

      constructor(items) {
        super();
        this.items = items;
      }

      total() {
        return this.pricing.computeTotal(this.items);
      }
    }

    const config = { load() {}, value: 3 };
    let counter = 0;
    """
)


def test_javascript_symbols() -> None:
    assert table("web/cart.js", JAVASCRIPT) == [
        ("fetchAll", "function", 4, 6),
        ("fetchOne", "function", 8, 13),
        ("fetchOne.parse", "function", 9, 11),
        ("Cart", "class", 15, 29),
        ("Cart.onClick", "method", 17, 19),
        ("Cart.constructor", "method", 21, 24),
        ("Cart.total", "method", 26, 28),
    ]


def test_jsx_file_uses_javascript_grammar() -> None:
    source = src(
        """\
        export function Button({ label }) {
          return <button onClick={() => handle(label)}>{label}</button>;
        }
        const App = () => <Button label="x" />;
        """
    )
    syms = extract_symbols("ui/Button.jsx", source)
    assert [(s.name, s.kind, s.start_line, s.end_line, s.language) for s in syms] == [
        ("Button", "function", 1, 3, "javascript"),
        ("App", "function", 4, 4, "javascript"),
    ]


# --------------------------------------------------------------------------- typescript

TYPESCRIPT = src(
    """\
    import { Injectable } from "@angular/core";

    export interface Shape {
      area(): number;
      name: string;
    }

    export type ShapeId = string | number;

    enum Color {
      Red,
      Green,
    }

    @Injectable()
    export class Circle implements Shape {
      private radius: number = 1;
      name = "circle";

      constructor(private readonly pricing: Pricing) {}

      area(): number {
        return Math.PI * this.radius ** 2;
      }

      scaled = (k: number): Circle => {
        return new Circle(this.pricing);
      };
    }

    export const makeShape = <T extends Shape>(x: T): T => x;

    namespace Geometry {
      export function origin(): Point {
        return { x: 0, y: 0 };
      }
    }
    """
)


def test_typescript_symbols() -> None:
    assert table("src/shapes.ts", TYPESCRIPT) == [
        ("Shape", "interface", 3, 6),
        ("Shape.area", "method", 4, 4),
        ("ShapeId", "type", 8, 8),
        ("Color", "enum", 10, 13),
        # decorator and `export` are part of the class span
        ("Circle", "class", 15, 29),
        ("Circle.constructor", "method", 20, 20),
        ("Circle.area", "method", 22, 24),
        ("Circle.scaled", "method", 26, 28),
        ("makeShape", "function", 31, 31),
        ("Geometry", "module", 33, 37),
        ("Geometry.origin", "function", 34, 36),
    ]


def test_tsx_symbols() -> None:
    source = src(
        """\
        interface Props {
          label: string;
        }

        export function Button({ label }: Props) {
          return <button>{label}</button>;
        }

        export const Card: React.FC<Props> = ({ label }) => (
          <div className="card">{label}</div>
        );

        class Panel extends React.Component<Props> {
          render() {
            return <Card label={this.props.label} />;
          }
        }
        """
    )
    syms = extract_symbols("ui/Button.tsx", source)
    assert {s.language for s in syms} == {"tsx"}
    assert [(s.name, s.kind, s.start_line, s.end_line) for s in syms] == [
        ("Props", "interface", 1, 3),
        ("Button", "function", 5, 7),
        ("Card", "function", 9, 11),
        ("Panel", "class", 13, 17),
        ("Panel.render", "method", 14, 16),
    ]


def test_declaration_file() -> None:
    source = src(
        """\
        declare module "left-pad" {
          export default function leftPad(s: string, n: number): string;
        }
        export declare function fmt(x: number): string;
        export declare class Client {
          get(url: string): Promise<Response>;
        }
        """
    )
    assert table("types/index.d.ts", source) == [
        ("left-pad", "module", 1, 3),
        ("left-pad.leftPad", "function", 2, 2),
        ("fmt", "function", 4, 4),
        ("Client", "class", 5, 7),
        ("Client.get", "method", 6, 6),
    ]


# --------------------------------------------------------------------------- go

GO = src(
    """\
    package server

    import (
    	"fmt"
    	nethttp "net/http"
    )

    type Server struct {
    	Addr string
    }

    type Handler interface {
    	Serve(req *Request) error
    }

    type ID int

    func (s *Server) Start() error {
    	return s.pricing.ComputeTotal(s.Addr)
    }

    func (s Server) String() string {
    	return fmt.Sprintf("%s", s.Addr)
    }

    func (l *List[T]) Len() int { return 0 }

    func New(addr string) *Server {
    	return &Server{Addr: addr}
    }
    """
)


def test_go_symbols() -> None:
    assert table("server/server.go", GO) == [
        ("Server", "struct", 8, 10),
        ("Handler", "interface", 12, 14),
        ("Handler.Serve", "method", 13, 13),
        ("ID", "type", 16, 16),
        ("Server.Start", "method", 18, 20),
        ("Server.String", "method", 22, 24),
        ("List.Len", "method", 26, 26),
        ("New", "function", 28, 30),
    ]


def test_go_imports() -> None:
    assert imported_names("server/server.go", GO) == {"fmt", "net/http", "nethttp"}
    source = 'package x\nimport "github.com/acme/lib/v2"\nimport _ "embed"\nimport "net/http"\n'
    assert imported_names("x.go", source) == {"github.com/acme/lib/v2", "lib", "embed", "net/http", "http"}


# --------------------------------------------------------------------------- rust

RUST = src(
    """\
    use std::collections::{HashMap, HashSet as Set};
    use crate::pricing::Pricing;

    #[derive(Debug, Clone)]
    pub struct Point {
        x: f64,
        y: f64,
    }

    pub enum Shape {
        Circle(f64),
        Square(f64),
    }

    pub trait Area {
        fn area(&self) -> f64;
        fn describe(&self) -> String {
            format!("{}", self.area())
        }
    }

    impl Area for Shape {
        fn area(&self) -> f64 {
            match self {
                Shape::Circle(r) => 3.14 * r * r,
                Shape::Square(s) => s * s,
            }
        }
    }

    impl<T: Clone> Wrapper<T> {
        pub fn new(inner: T) -> Self {
            Wrapper { inner }
        }
    }

    pub type Map = HashMap<String, Point>;

    mod geometry {
        pub fn origin() -> super::Point {
            super::Point { x: 0.0, y: 0.0 }
        }
    }

    fn main() {}
    """
)


def test_rust_symbols() -> None:
    assert table("src/lib.rs", RUST) == [
        # #[...] attribute lines directly above an item belong to its span
        ("Point", "struct", 4, 8),
        ("Shape", "enum", 10, 13),
        ("Area", "trait", 15, 20),
        ("Area.area", "method", 16, 16),
        ("Area.describe", "method", 17, 19),
        ("Shape.area", "method", 23, 28),
        ("Wrapper.new", "method", 32, 34),
        ("Map", "type", 37, 37),
        ("geometry", "module", 39, 43),
        ("geometry.origin", "function", 40, 42),
        ("main", "function", 45, 45),
    ]


def test_rust_imports() -> None:
    assert imported_names("src/lib.rs", RUST) == {
        "std::collections",
        "std::collections::HashMap",
        "HashMap",
        "std::collections::HashSet",
        "HashSet",
        "Set",
        "crate::pricing::Pricing",
        "Pricing",
    }
    source = "use super::util::*;\nuse a::b::{self, c::D};\nextern crate serde;\n"
    assert imported_names("m.rs", source) == {"super::util", "a::b", "b", "a::b::c::D", "D", "serde"}


# --------------------------------------------------------------------------- java

JAVA = src(
    """\
    package com.acme.shop;

    import java.util.List;
    import static org.junit.Assert.*;

    @Entity
    public class Cart extends Base implements Priced {
        private final List<Item> items;

        public Cart(List<Item> items) {
            this.items = items;
        }

        @Override
        public double total() {
            return this.pricing.computeTotal(items);
        }

        static class Line {
            int qty() { return 1; }
        }

        interface Listener {
            void changed(Cart cart);
        }

        enum State { OPEN, CLOSED; boolean open() { return this == OPEN; } }
    }

    interface Priced {
        double total();
    }
    """
)


def test_java_symbols() -> None:
    assert table("src/main/java/com/acme/shop/Cart.java", JAVA) == [
        # annotations are part of the declaration (modifiers), so part of the span
        ("Cart", "class", 6, 28),
        ("Cart.Cart", "method", 10, 12),
        ("Cart.total", "method", 14, 17),
        ("Cart.Line", "class", 19, 21),
        ("Cart.Line.qty", "method", 20, 20),
        ("Cart.Listener", "interface", 23, 25),
        ("Cart.Listener.changed", "method", 24, 24),
        ("Cart.State", "enum", 27, 27),
        ("Cart.State.open", "method", 27, 27),
        ("Priced", "interface", 30, 32),
        ("Priced.total", "method", 31, 31),
    ]


def test_java_imports() -> None:
    assert imported_names("Cart.java", JAVA) == {"java.util.List", "List", "org.junit.Assert"}


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("bad.py", "def broken(:\n    pass\n\nclass Ok:\n    def m(self):\n        return 1\n", ["Ok", "Ok.m"]),
        ("bad.js", "function f( {\n  return 1\n}\nclass B { m() { } }\n", ["B", "B.m"]),
        ("bad.ts", "interface I { x: }\nclass C {\n  m(): void {}\n}\n", ["I", "C", "C.m"]),
        ("bad.go", "package p\nfunc (s *S) M( {\n}\nfunc G() {}\n", ["G"]),
        ("bad.rs", "fn f( {\n}\nstruct S;\n", ["S"]),
        ("Bad.java", "class A { void m( { } }\nclass B { void n() {} }\n", ["A", "B", "B.n"]),
    ],
)
def test_syntax_errors_do_not_raise(path: str, source: str, expected: list[str]) -> None:
    names = [s.name for s in extract_symbols(path, source)]
    for name in expected:
        assert name in names


@pytest.mark.parametrize("source", [b"", b"\x00\x01\xff\xfe garbage \x80", "\n\n\n"])
def test_garbage_and_empty_input(source: bytes | str) -> None:
    for path in ("a.py", "a.js", "a.ts", "a.tsx", "a.go", "a.rs", "A.java"):
        result = extract_symbols(path, source)
        assert isinstance(result, list)
        assert all(1 <= s.start_line <= s.end_line for s in result)


def test_unsupported_extension_returns_empty() -> None:
    assert extract_symbols("notes.txt", "def f(): pass\n") == []
    assert extract_symbols("lib.c", "int main(void) { return 0; }\n") == []
    assert identifiers_in_span("notes.txt", "def f(): pass\n", 1, 1) == set()
    assert imported_names("notes.txt", "import os\n") == set()


def test_ordering_is_by_start_line_parents_first() -> None:
    for path, source in [("m.py", PYTHON), ("c.js", JAVASCRIPT), ("s.ts", TYPESCRIPT), ("l.rs", RUST)]:
        syms = extract_symbols(path, source)
        keys = [(s.start_line, -s.end_line) for s in syms]
        assert keys == sorted(keys)


def test_parsing_from_threads() -> None:
    expected = table("m.py", PYTHON)
    results: list[list[tuple[str, str, int, int]]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                results.append(table("m.py", PYTHON))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 80 and all(r == expected for r in results)


# --------------------------------------------------------------------------- identifiers_in_span


def test_identifiers_in_span_python() -> None:
    # line 22: `return self.pricing.compute_total(self.x)`
    assert identifiers_in_span("m.py", PYTHON, 22, 22) == {"self", "pricing", "compute_total", "x"}
    # a multi-line span covers the def line, decorator and body
    ids = identifiers_in_span("m.py", PYTHON, 5, 8)
    assert {"decorator", "other", "top", "x", "helper", "arg"} <= ids
    assert "pricing" not in ids


def test_identifiers_in_span_ignores_strings_comments_keywords() -> None:
    source = 'x = 1\ny = call(a)  # comment_word\nz = "string_word"\n'
    assert identifiers_in_span("m.py", source, 2, 3) == {"y", "call", "a", "z"}
    assert identifiers_in_span("m.py", source, 3, 2) == set()


def test_identifiers_in_span_javascript() -> None:
    # lines 26-28: total() { return this.pricing.computeTotal(this.items); }
    assert identifiers_in_span("c.js", JAVASCRIPT, 26, 28) == {"total", "pricing", "computeTotal", "items"}
    assert "fetchOne" in identifiers_in_span("c.js", JAVASCRIPT, 5, 5)


def test_identifiers_in_span_typescript_types_and_go_rust_java() -> None:
    assert identifiers_in_span("s.ts", TYPESCRIPT, 20, 20) == {"constructor", "pricing", "Pricing"}
    assert identifiers_in_span("s.go", GO, 19, 19) == {"s", "pricing", "ComputeTotal", "Addr"}
    # macro arguments are token trees; identifiers in them still count (`self` is a keyword node)
    assert identifiers_in_span("l.rs", RUST, 18, 18) == {"format", "area"}
    assert identifiers_in_span("C.java", JAVA, 16, 16) == {"pricing", "computeTotal", "items"}


# --------------------------------------------------------------------------- imported_names


def test_imported_names_python() -> None:
    source = src(
        """\
        import os
        import os.path
        import numpy as np
        from a.b import c as d, e
        from . import sibling
        from ..pkg.mod import thing
        from x import *
        from __future__ import annotations

        def f():
            import json
        """
    )
    assert imported_names("m.py", source) == {
        "os",
        "os.path",
        "numpy",
        "np",
        "a.b",
        "c",
        "d",
        "e",
        ".",
        "sibling",
        "..pkg.mod",
        "pkg.mod",
        "thing",
        "x",
        "__future__",
        "annotations",
        "json",
    }
    assert imported_names("m.py", "from a.b import c as d\n") == {"a.b", "c", "d"}


def test_imported_names_javascript() -> None:
    source = src(
        """\
        import React, { useState as useS, useEffect } from "react";
        import * as path from "path";
        import "./side-effect.css";
        const fs = require("fs");
        const { readFile, join: joinPath } = require("./util");
        export { helper } from "./helpers";
        const lazy = await import("./lazy");
        const notAnImport = other("x");
        """
    )
    assert imported_names("m.js", source) == {
        "react",
        "React",
        "useState",
        "useS",
        "useEffect",
        "path",
        "./side-effect.css",
        "fs",
        "./util",
        "readFile",
        "join",
        "joinPath",
        "./helpers",
        "helper",
        "./lazy",
        "lazy",
    }


def test_imported_names_typescript() -> None:
    source = 'import type { Shape } from "./shape";\nimport fs = require("fs");\n'
    assert imported_names("m.ts", source) == {"./shape", "Shape", "fs"}
    assert imported_names("src/shapes.ts", TYPESCRIPT) == {"@angular/core", "Injectable"}


# --------------------------------------------------------------------------- SymbolIndex


def _files() -> dict[str, str | bytes]:
    return {
        "pkg/mod.py": PYTHON,
        "web/cart.js": JAVASCRIPT.encode(),
        "server/server.go": GO,
        "README.md": "# not code\n",
        "empty.py": "",
    }


def test_symbol_index_build() -> None:
    index = SymbolIndex.build(_files())
    assert set(index.by_path) == {"pkg/mod.py", "web/cart.js", "server/server.go", "empty.py"}
    assert index.by_path["empty.py"] == []
    assert index.by_path["pkg/mod.py"] == extract_symbols("pkg/mod.py", PYTHON)
    assert len(index.symbols) == 9 + 7 + 8
    assert index.names_in("server/server.go") == {
        "Server",
        "Handler",
        "Handler.Serve",
        "ID",
        "Server.Start",
        "Server.String",
        "List.Len",
        "New",
    }
    assert index.names_in("README.md") == set()
    assert [s.name for s in index.symbols_overlapping("web/cart.js", 27, 27)] == ["Cart", "Cart.total"]


def test_symbol_index_rows_round_trip() -> None:
    index = SymbolIndex.build(_files())
    rows = index.to_rows()
    assert rows[0].keys() == {"path", "name", "kind", "start_line", "end_line", "language"}
    assert len(rows) == len(index.symbols)
    # rows coming back from a table may have extra columns and other int types
    noisy = [{**r, "extra": 1, "start_line": float(r["start_line"])} for r in reversed(rows)]
    restored = SymbolIndex.from_rows(noisy)
    assert restored.symbols == index.symbols
    assert {p: s for p, s in restored.by_path.items()} == {p: s for p, s in index.by_path.items() if s}


def test_symbol_index_rows_polars() -> None:
    pl = pytest.importorskip("polars")
    index = SymbolIndex.build(_files())
    frame = pl.DataFrame(index.to_rows())
    assert frame.columns == ["path", "name", "kind", "start_line", "end_line", "language"]
    assert SymbolIndex.from_rows(frame.to_dicts()).symbols == index.symbols
