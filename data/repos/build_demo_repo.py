#!/usr/bin/env python3
"""Deterministically build the "demo-shop" git repository used as a fixture.

demo-shop is a small online-shop backend in Python (``shop/``) with a
CommonJS helper library for the storefront (``web/``).  Its history is a
sequence of realistic feature commits (features, bug fixes, renames,
signature changes, a file move, dead-code removal, Python+JS changes, a
merged feature branch) plus a handful of clearly labelled "noise" commits
(formatting-only, lockfile+vendor-only, single-file, binary-only, merge)
that a history miner is expected to drop.

Everything is stdlib-only and deterministic: author/committer identities and
dates are fixed per commit and global/system git configuration is ignored,
so every run produces the same commit SHAs.

Usage::

    python data/repos/build_demo_repo.py                 # rebuild demo-shop.bundle next to this script
    python data/repos/build_demo_repo.py --out DIR       # build the working repository at DIR
    python data/repos/build_demo_repo.py --out DIR --bundle PATH [--force]
    python data/repos/build_demo_repo.py --verify        # also run both test suites at every commit

Test commands inside the generated repository (from its root)::

    python -m unittest discover -s tests -t .
    node --test web/test/
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_BUNDLE = SCRIPT_DIR / "demo-shop.bundle"

# 2025-01-06T09:00:00+00:00; every commit is one day after the previous one.
START_EPOCH = 1736154000
DAY = 86400

MAYA = ("Maya Lindqvist", "maya.lindqvist@demo-shop.test")
TOMAS = ("Tomas Reyes", "tomas.reyes@demo-shop.test")
PRIYA = ("Priya Natarajan", "priya.natarajan@demo-shop.test")

LOCKFILE_PATHS = ("web/package-lock.json",)
VENDOR_PREFIX = "vendor/"
TEST_PREFIXES = ("tests/", "web/test/")
SOURCE_EXTS = (".py", ".js")


def _s(text: str) -> str:
    """Drop the single leading newline of a triple-quoted literal."""
    return text[1:] if text.startswith("\n") else text


def wrap_message(message: str) -> str:
    """Wrap every body paragraph at 72 columns, like a hand-written commit."""
    subject, _, body = message.partition("\n\n")
    paragraphs = [textwrap.fill(p, width=72) for p in body.split("\n\n") if p]
    return "\n\n".join([subject, *paragraphs])


def git_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        TZ="UTC",
    )
    if extra:
        env.update(extra)
    return env


class DemoRepo:
    """Tiny helper around a git working tree that records deterministic commits."""

    def __init__(self, root: Path):
        self.root = root
        self.tick = 0  # number of commits made so far (drives the dates)
        self.kinds: dict[str, str] = {}  # sha -> intended kind

    # -- git plumbing -----------------------------------------------------
    def git(self, *args: str, env: dict | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            ["git", *args],
            cwd=self.root,
            env=git_env(env),
            capture_output=True,
            text=True,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")
        for key, value in (
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
            ("core.autocrlf", "false"),
            ("core.filemode", "true"),
            ("merge.ff", "false"),
        ):
            self.git("config", key, value)

    def _ident_env(self, author: tuple[str, str]) -> dict:
        stamp = f"{START_EPOCH + self.tick * DAY} +0000"
        self.tick += 1
        name, email = author
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_COMMITTER_DATE": stamp,
        }

    # -- working tree edits ----------------------------------------------
    def path(self, rel: str) -> Path:
        return self.root / rel

    def read(self, rel: str) -> str:
        return self.path(rel).read_text(encoding="utf-8")

    def write(self, rel: str, text: str) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(_s(text), encoding="utf-8", newline="\n")

    def write_bytes(self, rel: str, data: bytes) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    def edit(self, rel: str, old: str, new: str, count: int = 1) -> None:
        old, new = _s(old), _s(new)
        text = self.read(rel)
        found = text.count(old)
        if found != count:
            raise AssertionError(f"{rel}: expected {count} match(es) of {old!r}, found {found}")
        self.path(rel).write_text(text.replace(old, new), encoding="utf-8", newline="\n")

    def replace_all(self, rel: str, old: str, new: str) -> None:
        text = self.read(rel)
        if old not in text:
            raise AssertionError(f"{rel}: {old!r} not found")
        self.path(rel).write_text(text.replace(old, new), encoding="utf-8", newline="\n")

    def append(self, rel: str, text: str) -> None:
        self.path(rel).write_text(self.read(rel) + _s(text), encoding="utf-8", newline="\n")

    def mv(self, rel: str, new_rel: str) -> None:
        self.path(new_rel).parent.mkdir(parents=True, exist_ok=True)
        self.git("mv", rel, new_rel)

    # -- history ------------------------------------------------------------
    def commit(self, message: str, author: tuple[str, str], kind: str) -> str:
        self.git("add", "-A")
        if not self.git("status", "--porcelain"):
            raise AssertionError(f"nothing to commit for: {message.splitlines()[0]}")
        self.git("commit", "-q", "--cleanup=strip", "-m", wrap_message(message),
                 env=self._ident_env(author))
        sha = self.git("rev-parse", "HEAD").strip()
        self.kinds[sha] = kind
        return sha

    def checkout(self, *args: str) -> None:
        self.git("checkout", "-q", *args)

    def merge(self, branch: str, message: str, author: tuple[str, str]) -> str:
        self.git("merge", "-q", "--no-ff", "--no-edit", "-m", wrap_message(message), branch,
                 env=self._ident_env(author))
        sha = self.git("rev-parse", "HEAD").strip()
        self.kinds[sha] = "merge"
        return sha


# ---------------------------------------------------------------------------
# Binary assets (generated, deterministic: stored deflate blocks, no zlib level
# dependence).
# ---------------------------------------------------------------------------

def _zlib_stored(data: bytes) -> bytes:
    out = bytearray(b"\x78\x01")
    chunks = [data[i:i + 65535] for i in range(0, len(data), 65535)] or [b""]
    for i, chunk in enumerate(chunks):
        final = 1 if i == len(chunks) - 1 else 0
        out += bytes([final]) + struct.pack("<HH", len(chunk), 0xFFFF ^ len(chunk)) + chunk
    out += struct.pack(">I", zlib.adler32(data) & 0xFFFFFFFF)
    return bytes(out)


def make_png(size: int, pixel) -> bytes:
    rows = []
    for y in range(size):
        row = bytearray(b"\x00")
        for x in range(size):
            row += bytes(pixel(x, y))
        rows.append(bytes(row))

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", _zlib_stored(b"".join(rows))) + chunk(b"IEND", b""))


def _bag_pixel(size: int):
    """A teal shopping bag with a handle on a transparent background."""
    def pixel(x: int, y: int):
        body = size // 8 <= x < size - size // 8 and size * 3 // 8 <= y < size - size // 16
        cx, top = (size - 1) / 2, size * 3 / 8
        r = ((x - cx) ** 2 + (y - top) ** 2) ** 0.5
        handle = y < top and size / 5 <= r <= size / 5 + max(1, size // 16)
        if body:
            shade = 140 + (60 * y) // size
            return (20, shade, 150, 255)
        if handle:
            return (30, 90, 100, 255)
        return (0, 0, 0, 0)
    return pixel


def make_ico(size: int) -> bytes:
    png = make_png(size, _bag_pixel(size))
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


# ---------------------------------------------------------------------------
# Formatting helpers for the formatting-only commit.
# ---------------------------------------------------------------------------

def pep8_blank_lines(text: str) -> str:
    """Exactly two blank lines before top-level def/class/decorator blocks."""
    out: list[str] = []
    for line in text.split("\n"):
        if re.match(r"(def |class |@)", line) and out and not out[-1].startswith("@"):
            j = len(out)
            while j > 0 and out[j - 1] == "":
                j -= 1
            if j > 0:
                out = out[:j] + ["", ""]
        out.append(line)
    return "\n".join(out)


def js_blank_lines(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text)


# ---------------------------------------------------------------------------
# The history.  Each block below is one commit.
# ---------------------------------------------------------------------------

def c00_initial(r: DemoRepo) -> None:
    r.write("README.md", r'''
# demo-shop

A small online-shop backend in Python (`shop/`) together with the JavaScript
helper library used by the storefront (`web/`, CommonJS, Node 20, no runtime
dependencies).

## Running the tests

From the repository root:

    python -m unittest discover -s tests -t .
    node --test web/test/

Both suites use only the standard library / built-in test runner.
''')
    r.write(".gitignore", r'''
__pycache__/
*.pyc
node_modules/
.DS_Store
''')
    r.write("shop/__init__.py", r'''
"""demo-shop: a tiny online-shop backend."""

__version__ = "0.1.0"
''')
    r.write("shop/models.py", r'''
"""Core data types shared by the shop modules."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int
    category: str = "general"


@dataclass
class LineItem:
    product: Product
    quantity: int = 1

    @property
    def sku(self):
        return self.product.sku
''')
    r.write("shop/pricing.py", r'''
"""Price calculations for line items and whole carts."""


def round_cents(value):
    """Round a float amount of cents to an int (legacy helper)."""
    return int(value + 0.5)


def line_total(item):
    return item.product.price_cents * item.quantity


def compute_subtotal(items):
    return sum(line_total(item) for item in items)


def compute_total(items):
    """Return the amount the customer pays, in cents."""
    return compute_subtotal(items)
''')
    r.write("shop/cart.py", r'''
"""Shopping cart holding the line items of one customer."""

from shop.models import LineItem
from shop.pricing import compute_subtotal, compute_total


class Cart:
    def __init__(self):
        self._lines = {}

    def add(self, product, quantity=1):
        line = self._lines.get(product.sku)
        if line is None:
            self._lines[product.sku] = LineItem(product, quantity)
        else:
            line.quantity += quantity
        return self._lines[product.sku]

    def remove(self, sku):
        self._lines.pop(sku, None)

    def items(self):
        return list(self._lines.values())

    def count(self):
        return sum(line.quantity for line in self._lines.values())

    def is_empty(self):
        return not self._lines

    def subtotal(self):
        return compute_subtotal(self.items())

    def total(self):
        return compute_total(self.items())
''')
    r.write("tests/__init__.py", "")
    r.write("tests/test_pricing.py", r'''
import unittest

from shop.models import LineItem, Product
from shop.pricing import compute_subtotal, compute_total, line_total, round_cents

PEN = Product("PEN-1", "Gel pen", 250, "stationery")
BOOK = Product("BOOK-1", "Notebook", 1299, "stationery")


class PricingTest(unittest.TestCase):
    def test_line_total_multiplies_quantity(self):
        self.assertEqual(line_total(LineItem(PEN, 4)), 1000)

    def test_subtotal_sums_lines(self):
        items = [LineItem(PEN, 2), LineItem(BOOK, 1)]
        self.assertEqual(compute_subtotal(items), 1799)

    def test_total_of_empty_cart_is_zero(self):
        self.assertEqual(compute_total([]), 0)

    def test_round_cents(self):
        self.assertEqual(round_cents(10.5), 11)
        self.assertEqual(round_cents(10.4), 10)
''')
    r.write("tests/test_cart.py", r'''
import unittest

from shop.cart import Cart
from shop.models import Product

PEN = Product("PEN-1", "Gel pen", 250, "stationery")
MUG = Product("MUG-1", "Coffee mug", 899, "kitchen")


class CartTest(unittest.TestCase):
    def test_new_cart_is_empty(self):
        cart = Cart()
        self.assertTrue(cart.is_empty())
        self.assertEqual(cart.total(), 0)

    def test_add_merges_same_sku(self):
        cart = Cart()
        cart.add(PEN, 2)
        cart.add(PEN, 3)
        self.assertEqual(cart.count(), 5)
        self.assertEqual(len(cart.items()), 1)

    def test_remove_drops_line(self):
        cart = Cart()
        cart.add(PEN)
        cart.add(MUG)
        cart.remove("PEN-1")
        self.assertEqual([line.sku for line in cart.items()], ["MUG-1"])

    def test_total_sums_all_lines(self):
        cart = Cart()
        cart.add(PEN, 2)
        cart.add(MUG)
        self.assertEqual(cart.total(), 1399)
''')
    r.write("web/package.json", r'''
{
  "name": "demo-shop-web",
  "version": "0.1.0",
  "private": true,
  "description": "Storefront helpers for demo-shop",
  "scripts": {
    "test": "node --test test/"
  },
  "engines": {
    "node": ">=20"
  },
  "license": "MIT"
}
''')
    r.write("web/package-lock.json", r'''
{
  "name": "demo-shop-web",
  "version": "0.1.0",
  "lockfileVersion": 2,
  "requires": true,
  "packages": {
    "": {
      "name": "demo-shop-web",
      "version": "0.1.0",
      "license": "MIT",
      "engines": {
        "node": ">=20"
      }
    }
  }
}
''')
    r.write("vendor/tinyqs/index.js", r'''
// tinyqs 1.0.2 -- minimal query-string encoder.
// Vendored copy; do not edit by hand, update with scripts/vendor.sh instead.
'use strict';

function encode(params) {
  return Object.keys(params)
    .sort()
    .map((key) => encodeURIComponent(key) + '=' + encodeURIComponent(params[key]))
    .join('&');
}

module.exports = { encode, version: '1.0.2' };
''')
    r.write("web/format.js", r'''
'use strict';

const SYMBOLS = { USD: '$', EUR: '\u20ac', GBP: '\u00a3' };

function groupThousands(value) {
  return String(value).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function formatPrice(cents, currency = 'USD') {
  const symbol = SYMBOLS[currency];
  if (symbol === undefined) {
    throw new Error(`unsupported currency: ${currency}`);
  }
  const whole = Math.floor(cents / 100);
  const fraction = String(cents % 100).padStart(2, '0');
  return `${symbol}${groupThousands(whole)}.${fraction}`;
}

function formatCentsLegacy(cents) {
  return '$' + (cents / 100).toFixed(2);
}


module.exports = { formatPrice, formatCentsLegacy, SYMBOLS };
''')
    r.write("web/test/format.test.js", r'''
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { formatPrice, formatCentsLegacy } = require('../format');

test('formats whole dollars with two decimals', () => {
  assert.strictEqual(formatPrice(500), '$5.00');
});

test('pads single-digit cents', () => {
  assert.strictEqual(formatPrice(1207), '$12.07');
});

test('groups thousands', () => {
  assert.strictEqual(formatPrice(123456789), '$1,234,567.89');
});

test('rejects unknown currencies', () => {
  assert.throws(() => formatPrice(100, 'XYZ'), /unsupported currency/);
});

test('legacy formatter still works', () => {
  assert.strictEqual(formatCentsLegacy(250), '$2.50');
});
''')
    r.commit(
        "Initial project skeleton with cart pricing and price formatting\n\n"
        "Sets up the shop package with product and line-item models, basic "
        "pricing and a cart, plus the web helper library with a price "
        "formatter. Both halves come with unit tests.",
        MAYA, "initial")


def g01_catalog(r: DemoRepo) -> None:
    r.write("shop/catalog.py", r'''
"""In-memory product catalog keyed by SKU."""


class UnknownProductError(KeyError):
    pass


class Catalog:
    def __init__(self, products=()):
        self._products = {}
        for product in products:
            self.register(product)

    def register(self, product):
        if product.sku in self._products:
            raise ValueError(f"duplicate sku: {product.sku}")
        self._products[product.sku] = product

    def get(self, sku):
        try:
            return self._products[sku]
        except KeyError:
            raise UnknownProductError(sku) from None

    def search(self, term):
        """Products whose name contains ``term`` (case-insensitive), by SKU."""
        term = term.lower()
        matches = [p for p in self._products.values() if term in p.name.lower()]
        return sorted(matches, key=lambda p: p.sku)

    def in_category(self, category):
        return [p for p in self._products.values() if p.category == category]

    def __len__(self):
        return len(self._products)
''')
    r.edit("shop/cart.py", r'''
        return self._lines[product.sku]
''', r'''
        return self._lines[product.sku]

    def add_sku(self, catalog, sku, quantity=1):
        """Add a product by SKU, resolving it through ``catalog``."""
        return self.add(catalog.get(sku), quantity)
''')
    r.write("tests/test_catalog.py", r'''
import unittest

from shop.catalog import Catalog, UnknownProductError
from shop.models import Product

PEN = Product("PEN-1", "Gel pen", 250, "stationery")
PENCIL = Product("PCL-1", "Pencil set", 450, "stationery")
MUG = Product("MUG-1", "Coffee mug", 899, "kitchen")


class CatalogTest(unittest.TestCase):
    def setUp(self):
        self.catalog = Catalog([PEN, PENCIL, MUG])

    def test_get_returns_registered_product(self):
        self.assertIs(self.catalog.get("MUG-1"), MUG)

    def test_get_unknown_sku_raises(self):
        with self.assertRaises(UnknownProductError):
            self.catalog.get("NOPE")

    def test_register_rejects_duplicates(self):
        with self.assertRaises(ValueError):
            self.catalog.register(PEN)

    def test_search_is_case_insensitive_and_sorted(self):
        self.assertEqual(self.catalog.search("PEN"), [PENCIL, PEN])

    def test_in_category(self):
        self.assertEqual(self.catalog.in_category("kitchen"), [MUG])
        self.assertEqual(len(self.catalog), 3)
''')
    r.edit("tests/test_cart.py", r'''
from shop.cart import Cart
''', r'''
from shop.cart import Cart
from shop.catalog import Catalog
''')
    r.append("tests/test_cart.py", r'''

    def test_add_sku_resolves_through_catalog(self):
        cart = Cart()
        cart.add_sku(Catalog([PEN, MUG]), "MUG-1", 2)
        self.assertEqual(cart.total(), 1798)
''')
    r.commit(
        "Add product catalog for resolving SKUs\n\n"
        "Orders and the storefront only know SKUs, so we need one place that "
        "turns them into Product objects. Cart.add_sku resolves through the "
        "catalog so callers no longer look products up themselves.",
        TOMAS, "good")


def g02_inventory(r: DemoRepo) -> None:
    # Deliberately written with single blank lines; fixed by the
    # formatting-only commit later on.
    r.write("shop/inventory.py", r'''
"""Stock levels per SKU."""

class OutOfStockError(Exception):
    def __init__(self, sku, requested, available):
        super().__init__(f"{sku}: requested {requested}, only {available} left")
        self.sku = sku
        self.requested = requested
        self.available = available

class Inventory:
    def __init__(self, stock=None):
        self._stock = dict(stock or {})

    def add_stock(self, sku, quantity):
        self._stock[sku] = self._stock.get(sku, 0) + quantity

    def available(self, sku):
        return self._stock.get(sku, 0)

    def reserve(self, sku, quantity):
        have = self.available(sku)
        if quantity > have:
            raise OutOfStockError(sku, quantity, have)
        self._stock[sku] = have - quantity
''')
    r.edit("shop/cart.py", r'''
from shop.models import LineItem
''', r'''
from shop.inventory import OutOfStockError
from shop.models import LineItem
''')
    r.edit("shop/cart.py", r'''
    def __init__(self):
        self._lines = {}

    def add(self, product, quantity=1):
        line = self._lines.get(product.sku)
        if line is None:
            self._lines[product.sku] = LineItem(product, quantity)
        else:
            line.quantity += quantity
        return self._lines[product.sku]
''', r'''
    def __init__(self, inventory=None):
        self._lines = {}
        self._inventory = inventory

    def add(self, product, quantity=1):
        line = self._lines.get(product.sku)
        wanted = quantity + (line.quantity if line else 0)
        if self._inventory is not None:
            available = self._inventory.available(product.sku)
            if wanted > available:
                raise OutOfStockError(product.sku, wanted, available)
        if line is None:
            line = self._lines[product.sku] = LineItem(product, quantity)
        else:
            line.quantity += quantity
        return line
''')
    r.write("tests/test_inventory.py", r'''
import unittest

from shop.inventory import Inventory, OutOfStockError


class InventoryTest(unittest.TestCase):
    def test_unknown_sku_has_no_stock(self):
        self.assertEqual(Inventory().available("NOPE"), 0)

    def test_add_stock_accumulates(self):
        inventory = Inventory({"PEN-1": 5})
        inventory.add_stock("PEN-1", 3)
        self.assertEqual(inventory.available("PEN-1"), 8)

    def test_reserve_decrements_stock(self):
        inventory = Inventory({"PEN-1": 5})
        inventory.reserve("PEN-1", 2)
        self.assertEqual(inventory.available("PEN-1"), 3)

    def test_reserve_more_than_available_raises(self):
        inventory = Inventory({"PEN-1": 1})
        with self.assertRaises(OutOfStockError) as ctx:
            inventory.reserve("PEN-1", 2)
        self.assertEqual(ctx.exception.available, 1)
        self.assertEqual(inventory.available("PEN-1"), 1)
''')
    r.edit("tests/test_cart.py", r'''
from shop.catalog import Catalog
''', r'''
from shop.catalog import Catalog
from shop.inventory import Inventory, OutOfStockError
''')
    r.append("tests/test_cart.py", r'''

    def test_add_respects_inventory(self):
        cart = Cart(inventory=Inventory({"PEN-1": 3}))
        cart.add(PEN, 2)
        with self.assertRaises(OutOfStockError):
            cart.add(PEN, 2)
        self.assertEqual(cart.count(), 2)
''')
    r.commit(
        "Track stock levels and stop carts from overselling\n\n"
        "Introduces shop.inventory with per-SKU stock and reservations. A Cart "
        "can now be given an Inventory and refuses to hold more of a product "
        "than is in stock, so customers find out before checkout instead of "
        "after.",
        MAYA, "good")


def g03_discounts(r: DemoRepo) -> None:
    # Single blank lines again -- cleaned up by the formatting commit.
    r.write("shop/discounts.py", r'''
"""Discounts that reduce the price of an order."""

from dataclasses import dataclass

from shop.pricing import round_cents

@dataclass(frozen=True)
class PercentDiscount:
    percent: float
    label: str = ""

    def __post_init__(self):
        if not 0 <= self.percent <= 100:
            raise ValueError(f"percent out of range: {self.percent}")

    def amount_off(self, subtotal_cents):
        return round_cents(subtotal_cents * self.percent / 100)

@dataclass(frozen=True)
class FixedDiscount:
    cents: int
    label: str = ""

    def amount_off(self, subtotal_cents):
        return min(self.cents, subtotal_cents)
''')
    r.edit("shop/pricing.py", r'''
def compute_total(items):
    """Return the amount the customer pays, in cents."""
    return compute_subtotal(items)
''', r'''
def compute_total(items, discount=None):
    """Return the amount the customer pays, in cents."""
    subtotal = compute_subtotal(items)
    if discount is not None:
        subtotal -= discount.amount_off(subtotal)
    return subtotal
''')
    r.edit("shop/cart.py", r'''
    def total(self):
        return compute_total(self.items())
''', r'''
    def total(self, discount=None):
        return compute_total(self.items(), discount)
''')
    r.write("tests/test_discounts.py", r'''
import unittest

from shop.discounts import FixedDiscount, PercentDiscount


class PercentDiscountTest(unittest.TestCase):
    def test_amount_off(self):
        self.assertEqual(PercentDiscount(10).amount_off(2500), 250)

    def test_rejects_out_of_range_percent(self):
        with self.assertRaises(ValueError):
            PercentDiscount(120)


class FixedDiscountTest(unittest.TestCase):
    def test_amount_off(self):
        self.assertEqual(FixedDiscount(500).amount_off(2500), 500)

    def test_never_exceeds_subtotal(self):
        self.assertEqual(FixedDiscount(500).amount_off(300), 300)
''')
    r.edit("tests/test_pricing.py", r'''
from shop.models import LineItem, Product
''', r'''
from shop.discounts import PercentDiscount
from shop.models import LineItem, Product
''')
    r.append("tests/test_pricing.py", r'''

    def test_total_applies_discount(self):
        items = [LineItem(BOOK, 2)]
        self.assertEqual(compute_total(items, PercentDiscount(10)), 2338)
''')
    r.edit("tests/test_cart.py", r'''
from shop.catalog import Catalog
''', r'''
from shop.catalog import Catalog
from shop.discounts import FixedDiscount
''')
    r.append("tests/test_cart.py", r'''

    def test_total_with_fixed_discount(self):
        cart = Cart()
        cart.add(MUG)
        self.assertEqual(cart.total(FixedDiscount(100)), 799)
''')
    r.commit(
        "Support percentage and fixed discounts in totals\n\n"
        "Marketing wants to run promotions. compute_total and Cart.total now "
        "take an optional discount object; the discount types live in a new "
        "shop.discounts module and only need to provide amount_off().",
        PRIYA, "good")


def g04_cart_view(r: DemoRepo) -> None:
    r.write("web/cart_view.js", r'''
'use strict';

const { formatPrice, pluralize } = require('./format');

function lineTotal(item) {
  return item.priceCents * item.quantity;
}

function renderCartLine(item, currency = 'USD') {
  const qty = item.quantity > 1 ? ` x${item.quantity}` : '';
  return `${item.name}${qty}  ${formatPrice(lineTotal(item), currency)}`;
}

function renderCart(cart, currency = 'USD') {
  if (cart.items.length === 0) {
    return 'Your cart is empty.';
  }
  const count = cart.items.reduce((sum, item) => sum + item.quantity, 0);
  const subtotal = cart.items.reduce((sum, item) => sum + lineTotal(item), 0);
  return [
    `Cart (${pluralize(count, 'item')})`,
    ...cart.items.map((item) => renderCartLine(item, currency)),
    `Subtotal: ${formatPrice(subtotal, currency)}`,
  ].join('\n');
}

module.exports = { lineTotal, renderCartLine, renderCart };
''')
    r.edit("web/format.js", r'''
function formatCentsLegacy(cents) {
  return '$' + (cents / 100).toFixed(2);
}
''', r'''
function formatCentsLegacy(cents) {
  return '$' + (cents / 100).toFixed(2);
}

function pluralize(count, singular, plural = `${singular}s`) {
  return `${count} ${count === 1 ? singular : plural}`;
}
''')
    r.edit("web/format.js", r'''
module.exports = { formatPrice, formatCentsLegacy, SYMBOLS };
''', r'''
module.exports = { formatPrice, formatCentsLegacy, pluralize, SYMBOLS };
''')
    r.write("web/test/cart_view.test.js", r'''
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { lineTotal, renderCartLine, renderCart } = require('../cart_view');

const MUG = { sku: 'MUG-1', name: 'Coffee mug', priceCents: 899, quantity: 1 };
const PEN = { sku: 'PEN-1', name: 'Gel pen', priceCents: 250, quantity: 4 };

test('lineTotal multiplies price by quantity', () => {
  assert.strictEqual(lineTotal(PEN), 1000);
});

test('renderCartLine shows the quantity only when above one', () => {
  assert.strictEqual(renderCartLine(MUG), 'Coffee mug  $8.99');
  assert.strictEqual(renderCartLine(PEN), 'Gel pen x4  $10.00');
});

test('renderCart lists lines and the subtotal', () => {
  assert.strictEqual(
    renderCart({ items: [MUG, PEN] }),
    ['Cart (5 items)', 'Coffee mug  $8.99', 'Gel pen x4  $10.00', 'Subtotal: $18.99'].join('\n'),
  );
});

test('renderCart handles an empty cart', () => {
  assert.strictEqual(renderCart({ items: [] }), 'Your cart is empty.');
});
''')
    r.edit("web/test/format.test.js", r'''
const { formatPrice, formatCentsLegacy } = require('../format');
''', r'''
const { formatPrice, formatCentsLegacy, pluralize } = require('../format');
''')
    r.append("web/test/format.test.js", r'''

test('pluralize picks the singular or plural form', () => {
  assert.strictEqual(pluralize(1, 'item'), '1 item');
  assert.strictEqual(pluralize(3, 'item'), '3 items');
  assert.strictEqual(pluralize(2, 'box', 'boxes'), '2 boxes');
});
''')
    r.commit(
        "Add cart view helpers to the web library\n\n"
        "The storefront templates were building cart summaries by hand and "
        "disagreed about the layout. renderCart and renderCartLine produce "
        "the same text everywhere, using formatPrice and a new pluralize "
        "helper for the item count.",
        TOMAS, "good")


def g05_money(r: DemoRepo) -> None:
    r.write("shop/money.py", r'''
"""Helpers for exact arithmetic on integer cent amounts."""

from decimal import ROUND_HALF_UP, Decimal


def percent_of(cents, percent):
    """Return ``percent`` % of ``cents``, rounded half-up to a whole cent."""
    amount = Decimal(cents) * Decimal(str(percent)) / Decimal(100)
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))
''')
    r.edit("shop/discounts.py", r'''
from shop.pricing import round_cents
''', r'''
from shop.money import percent_of
''')
    r.edit("shop/discounts.py", r'''
        return round_cents(subtotal_cents * self.percent / 100)
''', r'''
        return percent_of(subtotal_cents, self.percent)
''')
    r.write("tests/test_money.py", r'''
import unittest

from shop.money import percent_of


class PercentOfTest(unittest.TestCase):
    def test_whole_result(self):
        self.assertEqual(percent_of(2000, 15), 300)

    def test_rounds_half_up(self):
        self.assertEqual(percent_of(1005, 10), 101)
        self.assertEqual(percent_of(1004, 10), 100)

    def test_fractional_percent_is_exact(self):
        # 33.3% of 1500 is exactly 499.5; float maths used to give 499.
        self.assertEqual(percent_of(1500, 33.3), 500)
''')
    r.edit("tests/test_discounts.py", r'''
    def test_amount_off(self):
        self.assertEqual(PercentDiscount(10).amount_off(2500), 250)
''', r'''
    def test_amount_off(self):
        self.assertEqual(PercentDiscount(10).amount_off(2500), 250)

    def test_one_third_off_rounds_half_up(self):
        self.assertEqual(PercentDiscount(33.3).amount_off(1500), 500)
''')
    r.commit(
        "Compute percentage amounts with exact decimal rounding\n\n"
        "PercentDiscount went through round_cents on a float, so the 33.3% "
        "'one third off' promotion on a $15.00 cart took off 499 cents "
        "instead of 500. The new shop.money.percent_of does the maths in "
        "Decimal with half-up rounding and can be reused for tax.",
        PRIYA, "good")


def g06_taxes(r: DemoRepo) -> None:
    r.write("shop/taxes.py", r'''
"""Sales tax rates by region."""

from shop.money import percent_of

TAX_RATES = {
    "CA": 7.25,
    "NY": 8.875,
    "TX": 6.25,
    "OR": 0,
}


class UnknownRegionError(ValueError):
    pass


def tax_rate(region):
    try:
        return TAX_RATES[region]
    except KeyError:
        raise UnknownRegionError(f"no tax rate for region {region!r}") from None


def tax_for(amount_cents, region):
    """Sales tax owed on ``amount_cents`` in ``region``, in cents."""
    return percent_of(amount_cents, tax_rate(region))
''')
    r.edit("shop/pricing.py", r'''
"""Price calculations for line items and whole carts."""
''', r'''
"""Price calculations for line items and whole carts."""

from shop.taxes import tax_for
''')
    r.edit("shop/pricing.py", r'''
def compute_total(items, discount=None):
    """Return the amount the customer pays, in cents."""
    subtotal = compute_subtotal(items)
    if discount is not None:
''', r'''
def compute_total(items, discount=None, region=None):
    """Return the amount the customer pays, in cents, including tax."""
    subtotal = compute_subtotal(items)
    tax = tax_for(subtotal, region) if region else 0
    if discount is not None:
''')
    r.edit("shop/pricing.py", r'''
        subtotal -= discount.amount_off(subtotal)
    return subtotal
''', r'''
        subtotal -= discount.amount_off(subtotal)
    return subtotal + tax
''')
    r.edit("shop/cart.py", r'''
    def total(self, discount=None):
        return compute_total(self.items(), discount)
''', r'''
    def total(self, discount=None, region=None):
        return compute_total(self.items(), discount, region)
''')
    r.write("tests/test_taxes.py", r'''
import unittest

from shop.taxes import UnknownRegionError, tax_for, tax_rate


class TaxTest(unittest.TestCase):
    def test_rate_lookup(self):
        self.assertEqual(tax_rate("CA"), 7.25)

    def test_tax_for_rounds_to_cents(self):
        self.assertEqual(tax_for(1000, "NY"), 89)

    def test_tax_free_region(self):
        self.assertEqual(tax_for(1000, "OR"), 0)

    def test_unknown_region(self):
        with self.assertRaises(UnknownRegionError):
            tax_for(1000, "ZZ")
''')
    r.append("tests/test_pricing.py", r'''

    def test_total_adds_regional_tax(self):
        items = [LineItem(PEN, 4)]
        self.assertEqual(compute_total(items, region="CA"), 1073)
''')
    r.append("tests/test_cart.py", r'''

    def test_total_with_region_includes_tax(self):
        cart = Cart()
        cart.add(MUG)
        self.assertEqual(cart.total(region="TX"), 955)
''')
    r.commit(
        "Add regional sales tax to order totals\n\n"
        "We now ship to several states and have to collect sales tax there. "
        "shop.taxes holds the rate table; compute_total and Cart.total accept "
        "a region and add the tax on top of the subtotal.",
        MAYA, "good")


ORDERS_G07 = r'''
"""Turning carts into placed orders."""

import itertools
from dataclasses import dataclass

from shop.pricing import compute_subtotal, compute_total

_order_numbers = itertools.count(1)


class EmptyCartError(ValueError):
    pass


@dataclass
class Order:
    order_id: str
    lines: list
    region: str
    subtotal_cents: int
    total_cents: int
    status: str = "placed"


def next_order_id():
    return f"ORD-{next(_order_numbers):05d}"


def place_order(cart, inventory, region, discount=None):
    """Reserve stock for every line in ``cart`` and return the new Order.

    Stock is reserved all-or-nothing: if any line is short, nothing is taken.
    """
    if cart.is_empty():
        raise EmptyCartError("cannot place an order for an empty cart")
    lines = cart.items()
    inventory.reserve_all((line.sku, line.quantity) for line in lines)
    return Order(
        order_id=next_order_id(),
        lines=lines,
        region=region,
        subtotal_cents=compute_subtotal(lines),
        total_cents=compute_total(lines, discount, region),
    )
'''


def g07_orders(r: DemoRepo) -> None:
    r.write("shop/orders.py", ORDERS_G07)
    r.edit("shop/inventory.py", r'''
            raise OutOfStockError(sku, quantity, have)
        self._stock[sku] = have - quantity
''', r'''
            raise OutOfStockError(sku, quantity, have)
        self._stock[sku] = have - quantity

    def reserve_all(self, requests):
        """Reserve several (sku, quantity) pairs, or none of them."""
        requests = list(requests)
        for sku, quantity in requests:
            have = self.available(sku)
            if quantity > have:
                raise OutOfStockError(sku, quantity, have)
        for sku, quantity in requests:
            self.reserve(sku, quantity)
''')
    r.write("tests/test_orders.py", r'''
import unittest

from shop.cart import Cart
from shop.discounts import FixedDiscount
from shop.inventory import Inventory, OutOfStockError
from shop.models import Product
from shop.orders import EmptyCartError, place_order

PEN = Product("PEN-1", "Gel pen", 250, "stationery")
MUG = Product("MUG-1", "Coffee mug", 899, "kitchen")


def make_cart(*lines):
    cart = Cart()
    for product, quantity in lines:
        cart.add(product, quantity)
    return cart


class PlaceOrderTest(unittest.TestCase):
    def setUp(self):
        self.inventory = Inventory({"PEN-1": 10, "MUG-1": 2})

    def test_place_order_reserves_stock_and_prices_order(self):
        order = place_order(make_cart((PEN, 4), (MUG, 1)), self.inventory, "OR")
        self.assertTrue(order.order_id.startswith("ORD-"))
        self.assertEqual(order.subtotal_cents, 1899)
        self.assertEqual(order.total_cents, 1899)
        self.assertEqual(self.inventory.available("PEN-1"), 6)
        self.assertEqual(self.inventory.available("MUG-1"), 1)

    def test_discount_is_applied(self):
        cart = make_cart((MUG, 2))
        order = place_order(cart, self.inventory, "OR", FixedDiscount(298))
        self.assertEqual(order.total_cents, 1500)

    def test_short_stock_reserves_nothing(self):
        cart = make_cart((PEN, 2), (MUG, 3))
        with self.assertRaises(OutOfStockError):
            place_order(cart, self.inventory, "OR")
        self.assertEqual(self.inventory.available("PEN-1"), 10)

    def test_empty_cart_is_rejected(self):
        with self.assertRaises(EmptyCartError):
            place_order(Cart(), self.inventory, "OR")

    def test_order_ids_are_unique(self):
        first = place_order(make_cart((PEN, 1)), self.inventory, "OR")
        second = place_order(make_cart((PEN, 1)), self.inventory, "OR")
        self.assertNotEqual(first.order_id, second.order_id)
''')
    r.append("tests/test_inventory.py", r'''

    def test_reserve_all_is_all_or_nothing(self):
        inventory = Inventory({"PEN-1": 5, "MUG-1": 1})
        with self.assertRaises(OutOfStockError):
            inventory.reserve_all([("PEN-1", 2), ("MUG-1", 2)])
        self.assertEqual(inventory.available("PEN-1"), 5)
        inventory.reserve_all([("PEN-1", 2), ("MUG-1", 1)])
        self.assertEqual(inventory.available("MUG-1"), 0)
''')
    r.commit(
        "Place orders from carts with all-or-nothing stock reservation\n\n"
        "Adds shop.orders.place_order, which prices the cart and reserves "
        "stock for every line. The new Inventory.reserve_all checks all lines "
        "before touching stock, so a failed checkout can no longer leave half "
        "an order reserved.",
        TOMAS, "good")


def g08_rename_subtotal(r: DemoRepo) -> None:
    r.replace_all("shop/pricing.py", "compute_subtotal", "items_subtotal")
    r.edit("shop/cart.py", r'''
from shop.pricing import compute_subtotal, compute_total
''', r'''
from shop.pricing import compute_total, items_subtotal
''')
    r.replace_all("shop/cart.py", "compute_subtotal(", "items_subtotal(")
    r.edit("shop/orders.py", r'''
from shop.pricing import compute_subtotal, compute_total
''', r'''
from shop.pricing import compute_total, items_subtotal
''')
    r.replace_all("shop/orders.py", "compute_subtotal(", "items_subtotal(")
    r.edit("tests/test_pricing.py", r'''
from shop.pricing import compute_subtotal, compute_total, line_total, round_cents
''', r'''
from shop.pricing import compute_total, items_subtotal, line_total, round_cents
''')
    r.replace_all("tests/test_pricing.py", "compute_subtotal(", "items_subtotal(")
    r.commit(
        "Rename pricing.compute_subtotal to items_subtotal\n\n"
        "The old name suggested it did more than sum line totals and was easy "
        "to confuse with Cart.subtotal(). Callers in cart and orders are "
        "updated; behaviour is unchanged.",
        PRIYA, "good")


def n01_formatting(r: DemoRepo) -> None:
    changed = []
    for rel in sorted(r.git("ls-files").split()):
        if rel.endswith(".py"):
            fixed = pep8_blank_lines(r.read(rel))
        elif rel.endswith(".js"):
            fixed = js_blank_lines(r.read(rel))
        else:
            continue
        if fixed != r.read(rel):
            r.path(rel).write_text(fixed, encoding="utf-8", newline="\n")
            changed.append(rel)
    assert len(changed) >= 2, changed
    assert not r.git("diff", "-w", "--ignore-blank-lines"), "formatting commit must be whitespace-only"
    r.commit(
        "Normalise blank lines between top-level definitions\n\n"
        "Formatting-only change: two blank lines between top-level Python "
        "definitions as PEP 8 asks, and no double blank lines in the JS "
        "files. No behaviour change.",
        MAYA, "formatting")


def g09_validate(r: DemoRepo) -> None:
    r.write("web/validate.js", r'''
'use strict';

const REGIONS = ['CA', 'NY', 'TX', 'OR'];
const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function isValidQuantity(value) {
  return Number.isInteger(value) && value >= 1 && value <= 99;
}

function isValidEmail(value) {
  return typeof value === 'string' && EMAIL_RE.test(value.trim());
}

function isValidRegion(value) {
  return REGIONS.includes(value);
}

module.exports = { REGIONS, isValidQuantity, isValidEmail, isValidRegion };
''')
    r.edit("web/cart_view.js", r'''
const { formatPrice, pluralize } = require('./format');
''', r'''
const { formatPrice, pluralize } = require('./format');
const { isValidQuantity } = require('./validate');
''')
    r.edit("web/cart_view.js", r'''
  const qty = item.quantity > 1 ? ` x${item.quantity}` : '';
  return `${item.name}${qty}  ${formatPrice(lineTotal(item), currency)}`;
''', r'''
  const qty = item.quantity > 1 ? ` x${item.quantity}` : '';
  const warning = isValidQuantity(item.quantity) ? '' : ' (check quantity)';
  return `${item.name}${qty}  ${formatPrice(lineTotal(item), currency)}${warning}`;
''')
    r.write("web/test/validate.test.js", r'''
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { isValidEmail, isValidQuantity, isValidRegion } = require('../validate');

test('quantities must be whole numbers between 1 and 99', () => {
  assert.ok(isValidQuantity(1));
  assert.ok(isValidQuantity(99));
  assert.ok(!isValidQuantity(0));
  assert.ok(!isValidQuantity(100));
  assert.ok(!isValidQuantity(1.5));
  assert.ok(!isValidQuantity('2'));
});

test('emails need a local part, an @ and a dotted domain', () => {
  assert.ok(isValidEmail('ana@example.com'));
  assert.ok(isValidEmail('  ana@example.com '));
  assert.ok(!isValidEmail('ana@example'));
  assert.ok(!isValidEmail('ana example.com'));
  assert.ok(!isValidEmail(undefined));
});

test('regions must be ones we ship to', () => {
  assert.ok(isValidRegion('CA'));
  assert.ok(!isValidRegion('ca'));
  assert.ok(!isValidRegion('ZZ'));
});
''')
    r.append("web/test/cart_view.test.js", r'''

test('renderCartLine flags impossible quantities', () => {
  const line = renderCartLine({ name: 'Gel pen', priceCents: 250, quantity: 120 });
  assert.strictEqual(line, 'Gel pen x120  $300.00 (check quantity)');
});
''')
    r.commit(
        "Add client-side validation for checkout fields\n\n"
        "Bad quantities and mistyped e-mail addresses were only caught by the "
        "backend after a round trip. web/validate.js provides the checks, and "
        "the cart view flags lines whose quantity the backend would reject.",
        TOMAS, "good")


def g10_reject_non_positive(r: DemoRepo) -> None:
    r.edit("shop/inventory.py", r'''
    def reserve(self, sku, quantity):
        have = self.available(sku)
''', r'''
    def reserve(self, sku, quantity):
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        have = self.available(sku)
''')
    r.edit("shop/cart.py", r'''
    def add(self, product, quantity=1):
        line = self._lines.get(product.sku)
''', r'''
    def add(self, product, quantity=1):
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        line = self._lines.get(product.sku)
''')
    r.append("tests/test_inventory.py", r'''

    def test_reserve_rejects_non_positive_quantity(self):
        inventory = Inventory({"PEN-1": 5})
        with self.assertRaises(ValueError):
            inventory.reserve("PEN-1", -2)
        self.assertEqual(inventory.available("PEN-1"), 5)
''')
    r.append("tests/test_cart.py", r'''

    def test_add_rejects_non_positive_quantity(self):
        cart = Cart()
        with self.assertRaises(ValueError):
            cart.add(PEN, 0)
        self.assertTrue(cart.is_empty())
''')
    r.commit(
        "Reject zero and negative quantities in cart and inventory\n\n"
        "Cart.add(product, 0) left an empty line in the cart, and "
        "Inventory.reserve with a negative quantity quietly increased stock. "
        "Both now raise ValueError.",
        PRIYA, "good")


def g11_format_options(r: DemoRepo) -> None:
    r.edit("web/format.js", r'''
function formatPrice(cents, currency = 'USD') {
  const symbol = SYMBOLS[currency];
  if (symbol === undefined) {
    throw new Error(`unsupported currency: ${currency}`);
  }
  const whole = Math.floor(cents / 100);
  const fraction = String(cents % 100).padStart(2, '0');
  return `${symbol}${groupThousands(whole)}.${fraction}`;
}
''', r'''
function formatPrice(cents, { currency = 'USD', showSymbol = true } = {}) {
  const symbol = SYMBOLS[currency];
  if (symbol === undefined) {
    throw new Error(`unsupported currency: ${currency}`);
  }
  const whole = Math.floor(cents / 100);
  const fraction = String(cents % 100).padStart(2, '0');
  const amount = `${groupThousands(whole)}.${fraction}`;
  return showSymbol ? `${symbol}${amount}` : amount;
}
''')
    r.replace_all("web/cart_view.js", "formatPrice(lineTotal(item), currency)",
                  "formatPrice(lineTotal(item), { currency })")
    r.replace_all("web/cart_view.js", "formatPrice(subtotal, currency)",
                  "formatPrice(subtotal, { currency })")
    r.edit("web/test/format.test.js", r'''
  assert.throws(() => formatPrice(100, 'XYZ'), /unsupported currency/);
''', r'''
  assert.throws(() => formatPrice(100, { currency: 'XYZ' }), /unsupported currency/);
});

test('formats other currencies and can omit the symbol', () => {
  assert.strictEqual(formatPrice(1999, { currency: 'GBP' }), '\u00a319.99');
  assert.strictEqual(formatPrice(1999, { showSymbol: false }), '19.99');
''')
    r.append("web/test/cart_view.test.js", r'''

test('renderCart can use another currency', () => {
  assert.match(renderCart({ items: [MUG] }, 'EUR'), /Subtotal: \u20ac8\.99$/);
});
''')
    r.commit(
        "Pass formatting options to formatPrice as an object\n\n"
        "Quantity inputs need bare amounts without the currency symbol, and a "
        "growing list of positional arguments was getting unreadable. "
        "formatPrice now takes { currency, showSymbol }; the cart_view "
        "callers are updated.",
        MAYA, "good")


def n02_lockfile_vendor(r: DemoRepo) -> None:
    r.write("web/package-lock.json", r'''
{
  "name": "demo-shop-web",
  "version": "0.1.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {
    "": {
      "name": "demo-shop-web",
      "version": "0.1.0",
      "license": "MIT",
      "engines": {
        "node": ">=20"
      }
    }
  }
}
''')
    r.write("vendor/tinyqs/index.js", r'''
// tinyqs 1.0.3 -- minimal query-string encoder.
// Vendored copy; do not edit by hand, update with scripts/vendor.sh instead.
'use strict';

function encode(params) {
  return Object.keys(params)
    .filter((key) => params[key] !== undefined)
    .sort()
    .map((key) => encodeURIComponent(key) + '=' + encodeURIComponent(params[key]))
    .join('&');
}

module.exports = { encode, version: '1.0.3' };
''')
    r.commit(
        "Regenerate package-lock.json and update vendored tinyqs\n\n"
        "Lockfile and vendored-code only: npm 10 rewrote the lockfile to "
        "lockfileVersion 3, and vendor/tinyqs is bumped to 1.0.3, which "
        "skips undefined values. None of our own code changes.",
        TOMAS, "lockfile+vendor")


def g12_coupons(r: DemoRepo) -> None:
    r.append("shop/discounts.py", r'''


class UnknownCouponError(KeyError):
    pass


COUPONS = {
    "WELCOME10": PercentDiscount(10, "Welcome offer"),
    "FIVEOFF": FixedDiscount(500, "$5 off"),
}


def find_coupon(code):
    """Return the discount for a coupon code (case and whitespace insensitive)."""
    key = code.strip().upper()
    try:
        return COUPONS[key]
    except KeyError:
        raise UnknownCouponError(key) from None
''')
    r.edit("shop/orders.py", r'''
from shop.pricing import compute_total, items_subtotal
''', r'''
from shop.discounts import find_coupon
from shop.pricing import compute_total, items_subtotal
''')
    r.edit("shop/orders.py", r'''
    total_cents: int
    status: str = "placed"
''', r'''
    total_cents: int
    coupon_code: str | None = None
    status: str = "placed"
''')
    r.edit("shop/orders.py", r'''
def place_order(cart, inventory, region, discount=None):
    """Reserve stock for every line in ``cart`` and return the new Order.

    Stock is reserved all-or-nothing: if any line is short, nothing is taken.
    """
    if cart.is_empty():
        raise EmptyCartError("cannot place an order for an empty cart")
    lines = cart.items()
''', r'''
def place_order(cart, inventory, region, coupon_code=None):
    """Reserve stock for every line in ``cart`` and return the new Order.

    Stock is reserved all-or-nothing: if any line is short, nothing is taken.
    An unknown coupon code is rejected before any stock is reserved.
    """
    if cart.is_empty():
        raise EmptyCartError("cannot place an order for an empty cart")
    discount = None
    if coupon_code:
        coupon_code = coupon_code.strip().upper()
        discount = find_coupon(coupon_code)
    lines = cart.items()
''')
    r.edit("shop/orders.py", r'''
        total_cents=compute_total(lines, discount, region),
    )
''', r'''
        total_cents=compute_total(lines, discount, region),
        coupon_code=coupon_code or None,
    )
''')
    r.edit("tests/test_orders.py", r'''
from shop.discounts import FixedDiscount
''', r'''
from shop.discounts import UnknownCouponError
''')
    r.edit("tests/test_orders.py", r'''
    def test_discount_is_applied(self):
        cart = make_cart((MUG, 2))
        order = place_order(cart, self.inventory, "OR", FixedDiscount(298))
        self.assertEqual(order.total_cents, 1500)
''', r'''
    def test_coupon_code_is_applied(self):
        order = place_order(make_cart((MUG, 2)), self.inventory, "OR", " fiveoff ")
        self.assertEqual(order.coupon_code, "FIVEOFF")
        self.assertEqual(order.total_cents, 1298)

    def test_unknown_coupon_reserves_nothing(self):
        with self.assertRaises(UnknownCouponError):
            place_order(make_cart((MUG, 1)), self.inventory, "OR", "BOGUS")
        self.assertEqual(self.inventory.available("MUG-1"), 2)
''')
    r.edit("tests/test_discounts.py", r'''
from shop.discounts import FixedDiscount, PercentDiscount
''', r'''
from shop.discounts import (
    FixedDiscount,
    PercentDiscount,
    UnknownCouponError,
    find_coupon,
)
''')
    r.append("tests/test_discounts.py", r'''


class CouponTest(unittest.TestCase):
    def test_find_coupon_normalises_code(self):
        self.assertEqual(find_coupon(" welcome10 ").percent, 10)

    def test_unknown_coupon(self):
        with self.assertRaises(UnknownCouponError):
            find_coupon("NOPE")
''')
    r.commit(
        "Apply coupon codes when placing orders\n\n"
        "Customers enter coupon codes at checkout, not discount objects. "
        "place_order now takes a coupon_code, resolves it through the new "
        "discounts.find_coupon and records the normalised code on the Order. "
        "Unknown codes fail before any stock is reserved.",
        PRIYA, "good")


def g13_rename_money_module(r: DemoRepo) -> None:
    r.mv("shop/money.py", "shop/currency.py")
    r.mv("tests/test_money.py", "tests/test_currency.py")
    r.edit("shop/discounts.py", r'''
from shop.money import percent_of
''', r'''
from shop.currency import percent_of
''')
    r.edit("shop/taxes.py", r'''
from shop.money import percent_of
''', r'''
from shop.currency import percent_of
''')
    r.edit("tests/test_currency.py", r'''
from shop.money import percent_of
''', r'''
from shop.currency import percent_of
''')
    r.commit(
        "Rename shop.money to shop.currency\n\n"
        "The module is about to gain formatting helpers, and a module called "
        "money kept being shadowed by local variables of the same name. "
        "Imports in discounts and taxes are updated; no behaviour change.",
        MAYA, "good")


def n03_single_file(r: DemoRepo) -> None:
    r.edit("shop/taxes.py", r'''
    "OR": 0,
''', r'''
    "OR": 0,
    "WA": 6.5,
''')
    r.commit(
        "Add Washington to the tax rate table\n\n"
        "Single-file change (shop/taxes.py only): we start shipping to WA "
        "next month, so it needs its 6.5% state rate.",
        TOMAS, "single-file")


def g14_remove_dead_code(r: DemoRepo) -> None:
    r.edit("shop/pricing.py", r'''
def round_cents(value):
    """Round a float amount of cents to an int (legacy helper)."""
    return int(value + 0.5)


''', "")
    r.edit("web/format.js", r'''
function formatCentsLegacy(cents) {
  return '$' + (cents / 100).toFixed(2);
}

''', "")
    r.edit("web/format.js", r'''
module.exports = { formatPrice, formatCentsLegacy, pluralize, SYMBOLS };
''', r'''
module.exports = { formatPrice, pluralize, SYMBOLS };
''')
    r.edit("tests/test_pricing.py", r'''
from shop.pricing import compute_total, items_subtotal, line_total, round_cents
''', r'''
from shop.pricing import compute_total, items_subtotal, line_total
''')
    r.edit("tests/test_pricing.py", r'''
    def test_round_cents(self):
        self.assertEqual(round_cents(10.5), 11)
        self.assertEqual(round_cents(10.4), 10)

''', "")
    r.edit("web/test/format.test.js", r'''
const { formatPrice, formatCentsLegacy, pluralize } = require('../format');
''', r'''
const { formatPrice, pluralize } = require('../format');
''')
    r.edit("web/test/format.test.js", r'''
test('legacy formatter still works', () => {
  assert.strictEqual(formatCentsLegacy(250), '$2.50');
});

''', "")
    r.commit(
        "Remove unused round_cents and formatCentsLegacy helpers\n\n"
        "Nothing has called pricing.round_cents since percentages moved to "
        "shop.currency, and formatCentsLegacy has no callers left now that "
        "every view goes through formatPrice. Drop both, with their tests.",
        PRIYA, "good")


def g15_shipping(r: DemoRepo) -> None:
    r.edit("shop/models.py", r'''
    category: str = "general"
''', r'''
    category: str = "general"
    weight_grams: int = 0
''')
    r.append("shop/models.py", r'''

    @property
    def weight_grams(self):
        return self.product.weight_grams * self.quantity
''')
    r.write("shop/shipping.py", r'''
"""Shipping charges for orders."""

FREE_SHIPPING_THRESHOLD_CENTS = 5000
BASE_RATE_CENTS = 499
PER_KG_CENTS = 150


def total_weight(items):
    return sum(item.weight_grams for item in items)


def shipping_cost(subtotal_cents, weight_grams):
    """Base rate plus a per-started-kilo charge; free above the threshold."""
    if subtotal_cents >= FREE_SHIPPING_THRESHOLD_CENTS:
        return 0
    kilos = -(-weight_grams // 1000)
    return BASE_RATE_CENTS + PER_KG_CENTS * kilos
''')
    r.edit("shop/orders.py", r'''
from shop.pricing import compute_total, items_subtotal
''', r'''
from shop.pricing import compute_total, items_subtotal
from shop.shipping import shipping_cost, total_weight
''')
    r.edit("shop/orders.py", r'''
    total_cents: int
    coupon_code: str | None = None
''', r'''
    total_cents: int
    shipping_cents: int = 0
    coupon_code: str | None = None
''')
    r.edit("shop/orders.py", r'''
    An unknown coupon code is rejected before any stock is reserved.
    """
''', r'''
    An unknown coupon code is rejected before any stock is reserved.
    Shipping is charged on top of the discounted, taxed total.
    """
''')
    r.edit("shop/orders.py", r'''
    inventory.reserve_all((line.sku, line.quantity) for line in lines)
    return Order(
        order_id=next_order_id(),
        lines=lines,
        region=region,
        subtotal_cents=items_subtotal(lines),
        total_cents=compute_total(lines, discount, region),
        coupon_code=coupon_code or None,
    )
''', r'''
    inventory.reserve_all((line.sku, line.quantity) for line in lines)
    subtotal = items_subtotal(lines)
    shipping = shipping_cost(subtotal, total_weight(lines))
    return Order(
        order_id=next_order_id(),
        lines=lines,
        region=region,
        subtotal_cents=subtotal,
        total_cents=compute_total(lines, discount, region) + shipping,
        shipping_cents=shipping,
        coupon_code=coupon_code or None,
    )
''')
    r.write("tests/test_shipping.py", r'''
import unittest

from shop.models import LineItem, Product
from shop.shipping import FREE_SHIPPING_THRESHOLD_CENTS, shipping_cost, total_weight

KETTLE = Product("KTL-1", "Kettle", 3499, "kitchen", weight_grams=1200)
PEN = Product("PEN-1", "Gel pen", 250, "stationery", weight_grams=20)


class ShippingTest(unittest.TestCase):
    def test_total_weight_counts_quantity(self):
        self.assertEqual(total_weight([LineItem(KETTLE, 1), LineItem(PEN, 5)]), 1300)

    def test_cost_rounds_weight_up_to_whole_kilos(self):
        self.assertEqual(shipping_cost(1000, 1300), 499 + 2 * 150)

    def test_free_at_threshold(self):
        self.assertEqual(shipping_cost(FREE_SHIPPING_THRESHOLD_CENTS, 5000), 0)
''')
    r.edit("tests/test_orders.py", r'''
PEN = Product("PEN-1", "Gel pen", 250, "stationery")
MUG = Product("MUG-1", "Coffee mug", 899, "kitchen")
''', r'''
PEN = Product("PEN-1", "Gel pen", 250, "stationery", weight_grams=20)
MUG = Product("MUG-1", "Coffee mug", 899, "kitchen", weight_grams=350)
KETTLE = Product("KTL-1", "Electric kettle", 5200, "kitchen", weight_grams=1200)
''')
    r.edit("tests/test_orders.py", r'''
        self.inventory = Inventory({"PEN-1": 10, "MUG-1": 2})
''', r'''
        self.inventory = Inventory({"PEN-1": 10, "MUG-1": 2, "KTL-1": 1})
''')
    r.edit("tests/test_orders.py", r'''
        self.assertEqual(order.subtotal_cents, 1899)
        self.assertEqual(order.total_cents, 1899)
''', r'''
        self.assertEqual(order.subtotal_cents, 1899)
        self.assertEqual(order.shipping_cents, 649)
        self.assertEqual(order.total_cents, 1899 + 649)
''')
    r.edit("tests/test_orders.py", r'''
        self.assertEqual(order.total_cents, 1298)
''', r'''
        self.assertEqual(order.total_cents, 1298 + 649)

    def test_shipping_is_free_above_threshold(self):
        order = place_order(make_cart((KETTLE, 1)), self.inventory, "OR")
        self.assertEqual(order.shipping_cents, 0)
        self.assertEqual(order.total_cents, 5200)
''')
    r.commit(
        "Charge shipping by weight, free above $50\n\n"
        "Until now every order shipped at our expense. Products carry a "
        "weight, shop.shipping prices a parcel at a base rate plus a charge "
        "per started kilo, and place_order adds shipping to the order total "
        "unless the subtotal reaches the free-shipping threshold.",
        MAYA, "good")


def g16_free_shipping_hint(r: DemoRepo) -> None:
    r.append("shop/shipping.py", r'''


def remaining_for_free_shipping(subtotal_cents):
    """How much more the customer has to spend to get free shipping."""
    return max(0, FREE_SHIPPING_THRESHOLD_CENTS - subtotal_cents)
''')
    r.edit("shop/cart.py", r'''
from shop.pricing import compute_total, items_subtotal
''', r'''
from shop.pricing import compute_total, items_subtotal
from shop.shipping import remaining_for_free_shipping
''')
    r.append("shop/cart.py", r'''

    def free_shipping_gap(self):
        """Cents still missing before this cart ships for free."""
        return remaining_for_free_shipping(self.subtotal())
''')
    r.edit("web/cart_view.js", r'''
module.exports = { lineTotal, renderCartLine, renderCart };
''', r'''
function renderFreeShippingHint(subtotalCents, thresholdCents = 5000) {
  const missing = thresholdCents - subtotalCents;
  if (missing <= 0) {
    return 'You qualify for free shipping!';
  }
  return `Add ${formatPrice(missing)} more for free shipping.`;
}

module.exports = { lineTotal, renderCartLine, renderCart, renderFreeShippingHint };
''')
    r.edit("tests/test_shipping.py", r'''
from shop.shipping import FREE_SHIPPING_THRESHOLD_CENTS, shipping_cost, total_weight
''', r'''
from shop.shipping import (
    FREE_SHIPPING_THRESHOLD_CENTS,
    remaining_for_free_shipping,
    shipping_cost,
    total_weight,
)
''')
    r.append("tests/test_shipping.py", r'''

    def test_remaining_for_free_shipping(self):
        self.assertEqual(remaining_for_free_shipping(3499), 1501)
        self.assertEqual(remaining_for_free_shipping(7000), 0)
''')
    r.append("tests/test_cart.py", r'''

    def test_free_shipping_gap(self):
        cart = Cart()
        cart.add(MUG, 2)
        self.assertEqual(cart.free_shipping_gap(), 5000 - 1798)
''')
    r.edit("web/test/cart_view.test.js", r'''
const { lineTotal, renderCartLine, renderCart } = require('../cart_view');
''', r'''
const {
  lineTotal,
  renderCartLine,
  renderCart,
  renderFreeShippingHint,
} = require('../cart_view');
''')
    r.append("web/test/cart_view.test.js", r'''

test('renderFreeShippingHint shows the missing amount', () => {
  assert.strictEqual(renderFreeShippingHint(3499), 'Add $15.01 more for free shipping.');
  assert.strictEqual(renderFreeShippingHint(5000), 'You qualify for free shipping!');
});
''')
    r.commit(
        "Tell shoppers how far they are from free shipping\n\n"
        "Product asked for a 'spend $X more for free shipping' hint in the "
        "cart. The backend exposes the gap via "
        "shipping.remaining_for_free_shipping and Cart.free_shipping_gap, and "
        "the web library renders the hint text for the same $50 threshold.",
        TOMAS, "good")


def f01_wishlist(r: DemoRepo) -> None:
    r.write("shop/wishlist.py", r'''
"""Per-customer wishlist of products to buy later."""


class Wishlist:
    def __init__(self, catalog):
        self._catalog = catalog
        self._skus = []

    def add(self, sku):
        self._catalog.get(sku)  # raises UnknownProductError for bad SKUs
        if sku not in self._skus:
            self._skus.append(sku)

    def remove(self, sku):
        if sku in self._skus:
            self._skus.remove(sku)

    def products(self):
        return [self._catalog.get(sku) for sku in self._skus]

    def move_to_cart(self, sku, cart, quantity=1):
        """Move ``sku`` into ``cart``; products already in the cart are not added twice."""
        if sku not in self._skus:
            raise KeyError(sku)
        if sku not in cart:
            cart.add_sku(self._catalog, sku, quantity)
        self._skus.remove(sku)

    def __contains__(self, sku):
        return sku in self._skus

    def __len__(self):
        return len(self._skus)
''')
    r.edit("shop/cart.py", r'''
    def count(self):
        return sum(line.quantity for line in self._lines.values())
''', r'''
    def count(self):
        return sum(line.quantity for line in self._lines.values())

    def __contains__(self, sku):
        return sku in self._lines
''')
    r.write("tests/test_wishlist.py", r'''
import unittest

from shop.cart import Cart
from shop.catalog import Catalog, UnknownProductError
from shop.models import Product
from shop.wishlist import Wishlist

PEN = Product("PEN-1", "Gel pen", 250, "stationery")
MUG = Product("MUG-1", "Coffee mug", 899, "kitchen")


class WishlistTest(unittest.TestCase):
    def setUp(self):
        self.wishlist = Wishlist(Catalog([PEN, MUG]))

    def test_add_keeps_order_and_ignores_duplicates(self):
        self.wishlist.add("MUG-1")
        self.wishlist.add("PEN-1")
        self.wishlist.add("MUG-1")
        self.assertEqual(self.wishlist.products(), [MUG, PEN])

    def test_add_unknown_sku_raises(self):
        with self.assertRaises(UnknownProductError):
            self.wishlist.add("NOPE")

    def test_move_to_cart(self):
        cart = Cart()
        self.wishlist.add("PEN-1")
        self.wishlist.move_to_cart("PEN-1", cart, 3)
        self.assertNotIn("PEN-1", self.wishlist)
        self.assertIn("PEN-1", cart)
        self.assertEqual(cart.count(), 3)

    def test_move_to_cart_does_not_duplicate_cart_lines(self):
        cart = Cart()
        cart.add(PEN, 2)
        self.wishlist.add("PEN-1")
        self.wishlist.move_to_cart("PEN-1", cart)
        self.assertEqual(cart.count(), 2)
        self.assertEqual(len(self.wishlist), 0)
''')
    r.commit(
        "Add a wishlist that can move products into the cart\n\n"
        "Shoppers want to park products for later. Wishlist stores SKUs "
        "validated against the catalog; moving an entry to the cart skips "
        "products that are already there, which needs Cart to support the "
        "'in' operator.",
        PRIYA, "good")


def f02_wishlist_view(r: DemoRepo) -> None:
    r.write("web/wishlist_view.js", r'''
'use strict';

const { renderCartLine } = require('./cart_view');
const { pluralize, truncate } = require('./format');

function renderWishlist(products, { currency = 'USD', maxNameLength = 24 } = {}) {
  if (products.length === 0) {
    return 'Your wishlist is empty.';
  }
  const lines = products.map((product) => {
    const name = truncate(product.name, maxNameLength);
    return renderCartLine({ ...product, name, quantity: 1 }, currency);
  });
  return [`Wishlist (${pluralize(products.length, 'product')})`, ...lines].join('\n');
}

module.exports = { renderWishlist };
''')
    r.edit("web/format.js", r'''
  return `${count} ${count === 1 ? singular : plural}`;
}
''', r'''
  return `${count} ${count === 1 ? singular : plural}`;
}

function truncate(text, maxLength) {
  if (text.length <= maxLength) {
    return text;
  }
  return `${text.slice(0, maxLength - 1)}\u2026`;
}
''')
    r.edit("web/format.js", r'''
module.exports = { formatPrice, pluralize, SYMBOLS };
''', r'''
module.exports = { formatPrice, pluralize, truncate, SYMBOLS };
''')
    r.write("web/test/wishlist_view.test.js", r'''
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { renderWishlist } = require('../wishlist_view');

test('renderWishlist lists products with their price', () => {
  const products = [
    { sku: 'MUG-1', name: 'Coffee mug', priceCents: 899 },
    { sku: 'KTL-1', name: 'Stainless steel electric kettle', priceCents: 3499 },
  ];
  assert.strictEqual(
    renderWishlist(products),
    ['Wishlist (2 products)', 'Coffee mug  $8.99', 'Stainless steel electri\u2026  $34.99'].join('\n'),
  );
});

test('renderWishlist handles an empty list', () => {
  assert.strictEqual(renderWishlist([]), 'Your wishlist is empty.');
});
''')
    r.edit("web/test/format.test.js", r'''
const { formatPrice, pluralize } = require('../format');
''', r'''
const { formatPrice, pluralize, truncate } = require('../format');
''')
    r.append("web/test/format.test.js", r'''

test('truncate shortens long text with an ellipsis', () => {
  assert.strictEqual(truncate('Coffee mug', 10), 'Coffee mug');
  assert.strictEqual(truncate('Coffee mug', 6), 'Coffe\u2026');
});
''')
    r.commit(
        "Render wishlist entries in the storefront\n\n"
        "The wishlist sidebar reuses renderCartLine so products look the same "
        "as in the cart. Long product names are shortened with a new "
        "format.truncate helper so they no longer break the layout.",
        PRIYA, "good")


def g17_rename_available(r: DemoRepo) -> None:
    r.edit("shop/inventory.py", r'''
    def available(self, sku):
''', r'''
    def quantity_available(self, sku):
''')
    r.replace_all("shop/inventory.py", "self.available(sku)", "self.quantity_available(sku)")
    r.edit("shop/cart.py", r'''
            available = self._inventory.available(product.sku)
''', r'''
            available = self._inventory.quantity_available(product.sku)
''')
    for rel in ("tests/test_inventory.py", "tests/test_orders.py"):
        r.replace_all(rel, '.available("', '.quantity_available("')
    r.commit(
        "Rename Inventory.available to quantity_available\n\n"
        "available() reads like a boolean predicate and was misused as one in "
        "a recent review. The new name says that it returns a count. The "
        "caller in Cart.add and the tests are updated.",
        MAYA, "good")


def g18_tax_after_discount(r: DemoRepo) -> None:
    r.edit("shop/pricing.py", r'''
"""Price calculations for line items and whole carts."""

from shop.taxes import tax_for
''', r'''
"""Price calculations for line items and whole carts."""

from dataclasses import dataclass

from shop.taxes import tax_for


@dataclass(frozen=True)
class PriceBreakdown:
    subtotal: int
    discount: int = 0
    tax: int = 0

    @property
    def total(self):
        return self.subtotal - self.discount + self.tax
''')
    r.edit("shop/pricing.py", r'''
def compute_total(items, discount=None, region=None):
    """Return the amount the customer pays, in cents, including tax."""
    subtotal = items_subtotal(items)
    tax = tax_for(subtotal, region) if region else 0
    if discount is not None:
        subtotal -= discount.amount_off(subtotal)
    return subtotal + tax
''', r'''
def price_breakdown(items, discount=None, region=None):
    """Split the price of ``items`` into subtotal, discount and tax.

    Tax is charged on the discounted amount, as required in every region we
    ship to.
    """
    subtotal = items_subtotal(items)
    discount_cents = discount.amount_off(subtotal) if discount is not None else 0
    tax = tax_for(subtotal - discount_cents, region) if region else 0
    return PriceBreakdown(subtotal, discount_cents, tax)


def compute_total(items, discount=None, region=None):
    """Return the amount the customer pays, in cents, including tax."""
    return price_breakdown(items, discount, region).total
''')
    r.edit("shop/orders.py", r'''
from shop.pricing import compute_total, items_subtotal
''', r'''
from shop.pricing import price_breakdown
''')
    r.edit("shop/orders.py", r'''
    total_cents: int
    shipping_cents: int = 0
''', r'''
    total_cents: int
    discount_cents: int = 0
    tax_cents: int = 0
    shipping_cents: int = 0
''')
    r.edit("shop/orders.py", r'''
    subtotal = items_subtotal(lines)
    shipping = shipping_cost(subtotal, total_weight(lines))
    return Order(
        order_id=next_order_id(),
        lines=lines,
        region=region,
        subtotal_cents=subtotal,
        total_cents=compute_total(lines, discount, region) + shipping,
        shipping_cents=shipping,
''', r'''
    prices = price_breakdown(lines, discount, region)
    shipping = shipping_cost(prices.subtotal, total_weight(lines))
    return Order(
        order_id=next_order_id(),
        lines=lines,
        region=region,
        subtotal_cents=prices.subtotal,
        discount_cents=prices.discount,
        tax_cents=prices.tax,
        shipping_cents=shipping,
        total_cents=prices.total + shipping,
''')
    r.edit("tests/test_pricing.py", r'''
from shop.discounts import PercentDiscount
''', r'''
from shop.discounts import FixedDiscount, PercentDiscount
''')
    r.edit("tests/test_pricing.py", r'''
from shop.pricing import compute_total, items_subtotal, line_total
''', r'''
from shop.pricing import compute_total, items_subtotal, line_total, price_breakdown
''')
    r.append("tests/test_pricing.py", r'''

    def test_tax_is_charged_on_discounted_amount(self):
        items = [LineItem(BOOK, 1)]
        prices = price_breakdown(items, FixedDiscount(299), "CA")
        self.assertEqual((prices.subtotal, prices.discount, prices.tax), (1299, 299, 73))
        self.assertEqual(compute_total(items, FixedDiscount(299), "CA"), 1073)
''')
    r.edit("tests/test_orders.py", r'''
    def test_unknown_coupon_reserves_nothing(self):
''', r'''
    def test_tax_is_charged_after_the_coupon(self):
        order = place_order(make_cart((MUG, 2)), self.inventory, "CA", "FIVEOFF")
        self.assertEqual(order.discount_cents, 500)
        self.assertEqual(order.tax_cents, 94)
        self.assertEqual(order.total_cents, 1298 + 94 + 649)

    def test_unknown_coupon_reserves_nothing(self):
''')
    r.commit(
        "Charge sales tax on the discounted amount\n\n"
        "compute_total taxed the subtotal before the discount was taken off, "
        "overcharging every discounted order in a taxed region. The maths now "
        "lives in pricing.price_breakdown, which place_order also uses to "
        "record the discount and tax separately on the Order.",
        TOMAS, "good")


def g19_api_payload(r: DemoRepo) -> None:
    r.edit("web/validate.js", r'''
const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
''', r'''
const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const COUPON_RE = /^[A-Z0-9]{4,16}$/;
''')
    r.edit("web/validate.js", r'''
module.exports = { REGIONS, isValidQuantity, isValidEmail, isValidRegion };
''', r'''
function isValidCouponCode(value) {
  return typeof value === 'string' && COUPON_RE.test(value.trim().toUpperCase());
}

module.exports = { REGIONS, isValidQuantity, isValidEmail, isValidRegion, isValidCouponCode };
''')
    r.write("web/api.js", r'''
'use strict';

const {
  isValidCouponCode,
  isValidEmail,
  isValidQuantity,
  isValidRegion,
} = require('./validate');

function buildOrderPayload(cart, form) {
  const errors = [];
  if (!isValidEmail(form.email)) {
    errors.push('email');
  }
  if (!isValidRegion(form.region)) {
    errors.push('region');
  }
  if (form.coupon && !isValidCouponCode(form.coupon)) {
    errors.push('coupon');
  }
  if (cart.items.length === 0) {
    errors.push('cart');
  } else if (!cart.items.every((item) => isValidQuantity(item.quantity))) {
    errors.push('quantity');
  }
  if (errors.length > 0) {
    return { ok: false, errors };
  }
  const payload = {
    email: form.email.trim().toLowerCase(),
    region: form.region,
    lines: cart.items.map((item) => ({ sku: item.sku, quantity: item.quantity })),
  };
  if (form.coupon) {
    payload.couponCode = form.coupon.trim().toUpperCase();
  }
  return { ok: true, payload };
}

module.exports = { buildOrderPayload };
''')
    r.write("web/test/api.test.js", r'''
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { buildOrderPayload } = require('../api');

const CART = { items: [{ sku: 'MUG-1', name: 'Coffee mug', priceCents: 899, quantity: 2 }] };

test('builds a normalised payload for a valid form', () => {
  const form = { email: ' Ana@Example.com ', region: 'CA', coupon: ' fiveoff' };
  assert.deepStrictEqual(buildOrderPayload(CART, form), {
    ok: true,
    payload: {
      email: 'ana@example.com',
      region: 'CA',
      lines: [{ sku: 'MUG-1', quantity: 2 }],
      couponCode: 'FIVEOFF',
    },
  });
});

test('collects every invalid field', () => {
  const result = buildOrderPayload({ items: [] }, { email: 'nope', region: 'ZZ', coupon: '!!' });
  assert.deepStrictEqual(result, { ok: false, errors: ['email', 'region', 'coupon', 'cart'] });
});

test('rejects impossible quantities', () => {
  const cart = { items: [{ sku: 'PEN-1', quantity: 0 }] };
  const result = buildOrderPayload(cart, { email: 'a@b.co', region: 'NY' });
  assert.deepStrictEqual(result, { ok: false, errors: ['quantity'] });
});
''')
    r.edit("web/test/validate.test.js", r'''
const { isValidEmail, isValidQuantity, isValidRegion } = require('../validate');
''', r'''
const {
  isValidCouponCode,
  isValidEmail,
  isValidQuantity,
  isValidRegion,
} = require('../validate');
''')
    r.append("web/test/validate.test.js", r'''

test('coupon codes are 4-16 letters or digits', () => {
  assert.ok(isValidCouponCode('FIVEOFF'));
  assert.ok(isValidCouponCode(' welcome10 '));
  assert.ok(!isValidCouponCode('AB'));
  assert.ok(!isValidCouponCode('NO-DASHES'));
});
''')
    r.commit(
        "Build checkout payloads in the web library\n\n"
        "The checkout page assembled the order request inline and never "
        "checked coupon codes. buildOrderPayload validates the form and cart "
        "with the validate.js helpers, including a new coupon code check, and "
        "normalises the fields the backend expects.",
        PRIYA, "good")


def g20_validator_messages(r: DemoRepo) -> None:
    r.write("web/validate.js", r'''
'use strict';

const REGIONS = ['CA', 'NY', 'TX', 'OR', 'WA'];
const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
const COUPON_RE = /^[A-Z0-9]{4,16}$/;

const OK = Object.freeze({ valid: true, message: '' });

function invalid(message) {
  return { valid: false, message };
}

function validateQuantity(value) {
  if (!Number.isInteger(value)) {
    return invalid('Quantity must be a whole number.');
  }
  if (value < 1 || value > 99) {
    return invalid('Quantity must be between 1 and 99.');
  }
  return OK;
}

function validateEmail(value) {
  if (typeof value !== 'string' || !EMAIL_RE.test(value.trim())) {
    return invalid('Please enter a valid e-mail address.');
  }
  return OK;
}

function validateRegion(value) {
  return REGIONS.includes(value) ? OK : invalid(`We do not ship to ${value} yet.`);
}

function validateCouponCode(value) {
  if (typeof value !== 'string' || !COUPON_RE.test(value.trim().toUpperCase())) {
    return invalid('Coupon codes are 4 to 16 letters or digits.');
  }
  return OK;
}

module.exports = {
  REGIONS,
  validateQuantity,
  validateEmail,
  validateRegion,
  validateCouponCode,
};
''')
    r.write("web/api.js", r'''
'use strict';

const {
  validateCouponCode,
  validateEmail,
  validateQuantity,
  validateRegion,
} = require('./validate');

function buildOrderPayload(cart, form) {
  const errors = [];
  const check = (field, result) => {
    if (!result.valid) {
      errors.push({ field, message: result.message });
    }
  };
  check('email', validateEmail(form.email));
  check('region', validateRegion(form.region));
  if (form.coupon) {
    check('coupon', validateCouponCode(form.coupon));
  }
  if (cart.items.length === 0) {
    errors.push({ field: 'cart', message: 'Your cart is empty.' });
  }
  for (const item of cart.items) {
    check(`quantity:${item.sku}`, validateQuantity(item.quantity));
  }
  if (errors.length > 0) {
    return { ok: false, errors };
  }
  const payload = {
    email: form.email.trim().toLowerCase(),
    region: form.region,
    lines: cart.items.map((item) => ({ sku: item.sku, quantity: item.quantity })),
  };
  if (form.coupon) {
    payload.couponCode = form.coupon.trim().toUpperCase();
  }
  return { ok: true, payload };
}

module.exports = { buildOrderPayload };
''')
    r.edit("web/cart_view.js", r'''
const { isValidQuantity } = require('./validate');
''', r'''
const { validateQuantity } = require('./validate');
''')
    r.edit("web/cart_view.js", r'''
  const warning = isValidQuantity(item.quantity) ? '' : ' (check quantity)';
''', r'''
  const check = validateQuantity(item.quantity);
  const warning = check.valid ? '' : ` (${check.message})`;
''')
    r.write("web/test/validate.test.js", r'''
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const {
  validateCouponCode,
  validateEmail,
  validateQuantity,
  validateRegion,
} = require('../validate');

test('quantities must be whole numbers between 1 and 99', () => {
  assert.ok(validateQuantity(1).valid);
  assert.ok(validateQuantity(99).valid);
  assert.deepStrictEqual(validateQuantity(0), {
    valid: false,
    message: 'Quantity must be between 1 and 99.',
  });
  assert.strictEqual(validateQuantity(1.5).message, 'Quantity must be a whole number.');
  assert.ok(!validateQuantity('2').valid);
});

test('emails need a local part, an @ and a dotted domain', () => {
  assert.ok(validateEmail('ana@example.com').valid);
  assert.ok(validateEmail('  ana@example.com ').valid);
  assert.ok(!validateEmail('ana@example').valid);
  assert.ok(!validateEmail('ana example.com').valid);
  assert.strictEqual(validateEmail(undefined).message, 'Please enter a valid e-mail address.');
});

test('regions must be ones we ship to', () => {
  assert.ok(validateRegion('CA').valid);
  assert.ok(validateRegion('WA').valid);
  assert.strictEqual(validateRegion('ZZ').message, 'We do not ship to ZZ yet.');
});

test('coupon codes are 4-16 letters or digits', () => {
  assert.ok(validateCouponCode('FIVEOFF').valid);
  assert.ok(validateCouponCode(' welcome10 ').valid);
  assert.ok(!validateCouponCode('AB').valid);
  assert.ok(!validateCouponCode('NO-DASHES').valid);
});
''')
    r.edit("web/test/api.test.js", r'''
test('collects every invalid field', () => {
  const result = buildOrderPayload({ items: [] }, { email: 'nope', region: 'ZZ', coupon: '!!' });
  assert.deepStrictEqual(result, { ok: false, errors: ['email', 'region', 'coupon', 'cart'] });
});

test('rejects impossible quantities', () => {
  const cart = { items: [{ sku: 'PEN-1', quantity: 0 }] };
  const result = buildOrderPayload(cart, { email: 'a@b.co', region: 'NY' });
  assert.deepStrictEqual(result, { ok: false, errors: ['quantity'] });
});
''', r'''
test('collects every invalid field with a message', () => {
  const result = buildOrderPayload({ items: [] }, { email: 'nope', region: 'ZZ', coupon: '!!' });
  assert.strictEqual(result.ok, false);
  assert.deepStrictEqual(
    result.errors.map((error) => error.field),
    ['email', 'region', 'coupon', 'cart'],
  );
  assert.strictEqual(result.errors[1].message, 'We do not ship to ZZ yet.');
});

test('reports which line has an impossible quantity', () => {
  const cart = { items: [{ sku: 'PEN-1', quantity: 0 }] };
  const result = buildOrderPayload(cart, { email: 'a@b.co', region: 'WA' });
  assert.deepStrictEqual(result, {
    ok: false,
    errors: [{ field: 'quantity:PEN-1', message: 'Quantity must be between 1 and 99.' }],
  });
});
''')
    r.edit("web/test/cart_view.test.js", r'''
  assert.strictEqual(line, 'Gel pen x120  $300.00 (check quantity)');
''', r'''
  assert.strictEqual(line, 'Gel pen x120  $300.00 (Quantity must be between 1 and 99.)');
''')
    r.commit(
        "Return error messages from the web validators\n\n"
        "The checkout form could only say that a field was wrong, not why. "
        "The isValid* predicates become validate* functions returning "
        "{ valid, message }; buildOrderPayload reports { field, message } "
        "errors and the cart view shows the message next to the line. WA is "
        "accepted now that the backend taxes it.",
        MAYA, "good")


def n04_binary(r: DemoRepo) -> None:
    r.write_bytes("web/static/logo.png", make_png(32, _bag_pixel(32)))
    r.write_bytes("docs/logo.ico", make_ico(16))
    r.commit(
        "Add storefront logo and favicon\n\n"
        "Binary-only change: adds web/static/logo.png and docs/logo.ico "
        "exported from the design file. No code changes.",
        TOMAS, "binary")


def g21_cancel_order(r: DemoRepo) -> None:
    r.edit("shop/inventory.py", r'''
    def reserve_all(self, requests):
''', r'''
    def release(self, sku, quantity):
        """Put back stock that was reserved for a cancelled order."""
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        self.add_stock(sku, quantity)

    def reserve_all(self, requests):
''')
    r.edit("shop/orders.py", r'''
class EmptyCartError(ValueError):
    pass
''', r'''
class EmptyCartError(ValueError):
    pass


class OrderStateError(RuntimeError):
    pass
''')
    r.append("shop/orders.py", r'''


def cancel_order(order, inventory):
    """Cancel a placed order and return its stock to ``inventory``."""
    if order.status != "placed":
        raise OrderStateError(f"cannot cancel an order that is {order.status}")
    for line in order.lines:
        inventory.release(line.sku, line.quantity)
    order.status = "cancelled"
    return order
''')
    r.edit("tests/test_orders.py", r'''
from shop.orders import EmptyCartError, place_order
''', r'''
from shop.orders import EmptyCartError, OrderStateError, cancel_order, place_order
''')
    r.append("tests/test_orders.py", r'''


class CancelOrderTest(unittest.TestCase):
    def test_cancel_returns_stock(self):
        inventory = Inventory({"PEN-1": 5})
        order = place_order(make_cart((PEN, 3)), inventory, "OR")
        cancel_order(order, inventory)
        self.assertEqual(order.status, "cancelled")
        self.assertEqual(inventory.quantity_available("PEN-1"), 5)

    def test_cannot_cancel_twice(self):
        inventory = Inventory({"PEN-1": 5})
        order = place_order(make_cart((PEN, 1)), inventory, "OR")
        cancel_order(order, inventory)
        with self.assertRaises(OrderStateError):
            cancel_order(order, inventory)
        self.assertEqual(inventory.quantity_available("PEN-1"), 5)
''')
    r.append("tests/test_inventory.py", r'''

    def test_release_puts_stock_back(self):
        inventory = Inventory({"PEN-1": 5})
        inventory.reserve("PEN-1", 4)
        inventory.release("PEN-1", 4)
        self.assertEqual(inventory.quantity_available("PEN-1"), 5)
        with self.assertRaises(ValueError):
            inventory.release("PEN-1", 0)
''')
    r.commit(
        "Release reserved stock when an order is cancelled\n\n"
        "Cancelled orders kept their stock reserved until someone corrected "
        "the numbers by hand. orders.cancel_order returns each line to the "
        "inventory through the new Inventory.release and refuses to cancel "
        "the same order twice.",
        PRIYA, "good")


def g22_validate_quantity(r: DemoRepo) -> None:
    r.edit("shop/models.py", r'''
from dataclasses import dataclass
''', r'''
from dataclasses import dataclass

MAX_LINE_QUANTITY = 99


def validate_quantity(quantity, maximum=MAX_LINE_QUANTITY):
    """Return ``quantity`` if it is a positive int no larger than ``maximum``.

    Raises ValueError otherwise; pass ``maximum=None`` to skip the upper bound.
    """
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValueError(f"quantity must be a whole number, got {quantity!r}")
    if quantity <= 0:
        raise ValueError(f"quantity must be positive, got {quantity}")
    if maximum is not None and quantity > maximum:
        raise ValueError(f"quantity must be at most {maximum}, got {quantity}")
    return quantity
''')
    r.edit("shop/cart.py", r'''
from shop.models import LineItem
''', r'''
from shop.models import LineItem, validate_quantity
''')
    r.edit("shop/cart.py", r'''
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
        line = self._lines.get(product.sku)
        wanted = quantity + (line.quantity if line else 0)
''', r'''
        validate_quantity(quantity)
        line = self._lines.get(product.sku)
        wanted = validate_quantity(quantity + (line.quantity if line else 0))
''')
    r.edit("shop/inventory.py", r'''
"""Stock levels per SKU."""
''', r'''
"""Stock levels per SKU."""

from shop.models import validate_quantity
''')
    r.edit("shop/inventory.py", r'''
        if quantity <= 0:
            raise ValueError(f"quantity must be positive, got {quantity}")
''', r'''
        validate_quantity(quantity, maximum=None)
''', count=2)
    r.write("tests/test_models.py", r'''
import unittest

from shop.models import MAX_LINE_QUANTITY, LineItem, Product, validate_quantity

KETTLE = Product("KTL-1", "Electric kettle", 5200, "kitchen", weight_grams=1200)


class ValidateQuantityTest(unittest.TestCase):
    def test_accepts_positive_integers(self):
        self.assertEqual(validate_quantity(3), 3)
        self.assertEqual(validate_quantity(MAX_LINE_QUANTITY), MAX_LINE_QUANTITY)

    def test_rejects_non_positive_and_non_integer_values(self):
        for bad in (0, -1, 1.5, "2", True):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                validate_quantity(bad)

    def test_upper_bound_can_be_disabled(self):
        with self.assertRaises(ValueError):
            validate_quantity(500)
        self.assertEqual(validate_quantity(500, maximum=None), 500)


class LineItemTest(unittest.TestCase):
    def test_weight_scales_with_quantity(self):
        self.assertEqual(LineItem(KETTLE, 2).weight_grams, 2400)
''')
    r.append("tests/test_cart.py", r'''

    def test_line_quantity_is_capped_and_must_be_whole(self):
        cart = Cart()
        cart.add(PEN, 60)
        with self.assertRaises(ValueError):
            cart.add(PEN, 40)
        with self.assertRaises(ValueError):
            cart.add(MUG, 1.5)
        self.assertEqual(cart.count(), 60)
''')
    r.commit(
        "Centralise quantity validation in models.validate_quantity\n\n"
        "Cart and Inventory each had their own positive-quantity check and "
        "neither rejected fractions, so cart.add(pen, 1.5) went through. The "
        "shared helper also enforces the 99-per-line limit that the "
        "storefront already applies.",
        MAYA, "good")


def g23_category_discounts(r: DemoRepo) -> None:
    r.write("shop/discounts.py", r'''
"""Discounts that reduce the price of an order."""

from dataclasses import dataclass

from shop.currency import percent_of
from shop.pricing import items_subtotal


def eligible_subtotal(items, category=None):
    """Subtotal of the items a discount applies to (all items if no category)."""
    if category is not None:
        items = [item for item in items if item.product.category == category]
    return items_subtotal(items)


@dataclass(frozen=True)
class PercentDiscount:
    percent: float
    label: str = ""
    category: str | None = None

    def __post_init__(self):
        if not 0 <= self.percent <= 100:
            raise ValueError(f"percent out of range: {self.percent}")

    def amount_off(self, items):
        return percent_of(eligible_subtotal(items, self.category), self.percent)


@dataclass(frozen=True)
class FixedDiscount:
    cents: int
    label: str = ""
    category: str | None = None

    def amount_off(self, items):
        return min(self.cents, eligible_subtotal(items, self.category))


class UnknownCouponError(KeyError):
    pass


COUPONS = {
    "WELCOME10": PercentDiscount(10, "Welcome offer"),
    "FIVEOFF": FixedDiscount(500, "$5 off"),
    "KITCHEN15": PercentDiscount(15, "15% off kitchenware", category="kitchen"),
}


def find_coupon(code):
    """Return the discount for a coupon code (case and whitespace insensitive)."""
    key = code.strip().upper()
    try:
        return COUPONS[key]
    except KeyError:
        raise UnknownCouponError(key) from None
''')
    r.edit("shop/pricing.py", r'''
    discount_cents = discount.amount_off(subtotal) if discount is not None else 0
''', r'''
    discount_cents = discount.amount_off(items) if discount is not None else 0
''')
    r.write("tests/test_discounts.py", r'''
import unittest

from shop.discounts import (
    FixedDiscount,
    PercentDiscount,
    UnknownCouponError,
    eligible_subtotal,
    find_coupon,
)
from shop.models import LineItem, Product

BOOK = Product("BOOK-1", "Notebook", 1250, "stationery")
LAMP = Product("LAMP-1", "Desk lamp", 1500, "home")
MUG = Product("MUG-1", "Coffee mug", 1000, "kitchen")


def lines(*pairs):
    return [LineItem(product, quantity) for product, quantity in pairs]


class PercentDiscountTest(unittest.TestCase):
    def test_amount_off(self):
        self.assertEqual(PercentDiscount(10).amount_off(lines((BOOK, 2))), 250)

    def test_one_third_off_rounds_half_up(self):
        self.assertEqual(PercentDiscount(33.3).amount_off(lines((LAMP, 1))), 500)

    def test_rejects_out_of_range_percent(self):
        with self.assertRaises(ValueError):
            PercentDiscount(120)

    def test_category_discount_only_counts_matching_items(self):
        discount = PercentDiscount(15, category="kitchen")
        self.assertEqual(discount.amount_off(lines((MUG, 2), (BOOK, 1))), 300)


class FixedDiscountTest(unittest.TestCase):
    def test_amount_off(self):
        self.assertEqual(FixedDiscount(500).amount_off(lines((BOOK, 2))), 500)

    def test_never_exceeds_eligible_subtotal(self):
        discount = FixedDiscount(5000, category="kitchen")
        self.assertEqual(discount.amount_off(lines((MUG, 1), (BOOK, 1))), 1000)


class EligibleSubtotalTest(unittest.TestCase):
    def test_without_category_counts_everything(self):
        self.assertEqual(eligible_subtotal(lines((MUG, 1), (BOOK, 1))), 2250)
        self.assertEqual(eligible_subtotal(lines((MUG, 1), (BOOK, 1)), "home"), 0)


class CouponTest(unittest.TestCase):
    def test_find_coupon_normalises_code(self):
        self.assertEqual(find_coupon(" welcome10 ").percent, 10)

    def test_kitchen_coupon_is_restricted(self):
        self.assertEqual(find_coupon("KITCHEN15").category, "kitchen")

    def test_unknown_coupon(self):
        with self.assertRaises(UnknownCouponError):
            find_coupon("NOPE")
''')
    r.edit("tests/test_pricing.py", r'''
BOOK = Product("BOOK-1", "Notebook", 1299, "stationery")
''', r'''
BOOK = Product("BOOK-1", "Notebook", 1299, "stationery")
MUG = Product("MUG-1", "Coffee mug", 899, "kitchen")
''')
    r.append("tests/test_pricing.py", r'''

    def test_category_discount_is_taxed_correctly(self):
        items = [LineItem(MUG, 2), LineItem(PEN, 2)]
        prices = price_breakdown(items, PercentDiscount(50, category="kitchen"), "NY")
        self.assertEqual(prices.discount, 899)
        self.assertEqual(prices.tax, 124)
''')
    r.commit(
        "Allow discounts to target a single product category\n\n"
        "The kitchen promotion must not discount stationery. Discounts now "
        "receive the line items instead of a precomputed subtotal so they can "
        "restrict themselves to one category via eligible_subtotal, and "
        "price_breakdown passes the items through. Adds the KITCHEN15 coupon.",
        TOMAS, "good")


def g24_receipts(r: DemoRepo) -> None:
    r.append("shop/currency.py", r'''


def format_cents(cents, symbol="$"):
    """Format an integer number of cents, e.g. ``format_cents(123450)`` -> ``$1,234.50``."""
    return f"{symbol}{cents // 100:,}.{cents % 100:02d}"
''')
    r.write("shop/receipts.py", r'''
"""Plain-text receipts for placed orders."""

from shop.currency import format_cents
from shop.pricing import line_total

WIDTH = 40


def _row(label, amount_text):
    return f"{label}{amount_text:>{WIDTH - len(label)}}"


def render_receipt(order):
    """Render ``order`` as a fixed-width block of text for e-mails."""
    rows = [f"Order {order.order_id}", "=" * WIDTH]
    for line in order.lines:
        label = f"{line.quantity} x {line.product.name}"
        rows.append(_row(label, format_cents(line_total(line))))
    rows.append("-" * WIDTH)
    rows.append(_row("Subtotal", format_cents(order.subtotal_cents)))
    if order.discount_cents:
        label = f"Discount {order.coupon_code or ''}".rstrip()
        rows.append(_row(label, "-" + format_cents(order.discount_cents)))
    if order.tax_cents:
        rows.append(_row(f"Tax ({order.region})", format_cents(order.tax_cents)))
    shipping = format_cents(order.shipping_cents) if order.shipping_cents else "free"
    rows.append(_row("Shipping", shipping))
    rows.append("=" * WIDTH)
    rows.append(_row("Total", format_cents(order.total_cents)))
    return "\n".join(rows)
''')
    r.write("tests/test_receipts.py", r'''
import unittest

from shop.models import LineItem, Product
from shop.orders import Order
from shop.receipts import WIDTH, render_receipt

MUG = Product("MUG-1", "Coffee mug", 899, "kitchen", weight_grams=350)


def row(label, amount):
    return label + amount.rjust(WIDTH - len(label))


class ReceiptTest(unittest.TestCase):
    def test_receipt_lists_every_amount(self):
        order = Order(
            order_id="ORD-00042",
            lines=[LineItem(MUG, 2)],
            region="CA",
            subtotal_cents=1798,
            total_cents=2041,
            discount_cents=500,
            tax_cents=94,
            shipping_cents=649,
            coupon_code="FIVEOFF",
        )
        self.assertEqual(
            render_receipt(order).splitlines(),
            [
                "Order ORD-00042",
                "=" * WIDTH,
                row("2 x Coffee mug", "$17.98"),
                "-" * WIDTH,
                row("Subtotal", "$17.98"),
                row("Discount FIVEOFF", "-$5.00"),
                row("Tax (CA)", "$0.94"),
                row("Shipping", "$6.49"),
                "=" * WIDTH,
                row("Total", "$20.41"),
            ],
        )

    def test_free_shipping_and_no_discount(self):
        order = Order("ORD-00043", [LineItem(MUG, 6)], "OR", 5394, 5394)
        text = render_receipt(order)
        self.assertIn(row("Shipping", "free"), text)
        self.assertNotIn("Discount", text)
        self.assertNotIn("Tax", text)
''')
    r.append("tests/test_currency.py", r'''


class FormatCentsTest(unittest.TestCase):
    def test_formats_dollars_and_cents(self):
        self.assertEqual(format_cents(123450), "$1,234.50")
        self.assertEqual(format_cents(5), "$0.05")

    def test_custom_symbol(self):
        self.assertEqual(format_cents(999, symbol="EUR "), "EUR 9.99")
''')
    r.edit("tests/test_currency.py", r'''
from shop.currency import percent_of
''', r'''
from shop.currency import format_cents, percent_of
''')
    r.commit(
        "Render plain-text receipts for placed orders\n\n"
        "Support needs a printable summary of an order for confirmation "
        "e-mails. shop.receipts lays out the lines, discount, tax, shipping "
        "and total in a fixed-width block, using a new currency.format_cents "
        "helper.",
        PRIYA, "good")


def g25_negative_amounts(r: DemoRepo) -> None:
    r.edit("shop/currency.py", r'''
    """Format an integer number of cents, e.g. ``format_cents(123450)`` -> ``$1,234.50``."""
    return f"{symbol}{cents // 100:,}.{cents % 100:02d}"
''', r'''
    """Format an integer number of cents, e.g. ``format_cents(-150)`` -> ``-$1.50``."""
    sign = "-" if cents < 0 else ""
    whole, fraction = divmod(abs(cents), 100)
    return f"{sign}{symbol}{whole:,}.{fraction:02d}"
''')
    r.edit("shop/receipts.py", r'''
        rows.append(_row(label, "-" + format_cents(order.discount_cents)))
''', r'''
        rows.append(_row(label, format_cents(-order.discount_cents)))
''')
    r.edit("web/format.js", r'''
  const whole = Math.floor(cents / 100);
  const fraction = String(cents % 100).padStart(2, '0');
  const amount = `${groupThousands(whole)}.${fraction}`;
  return showSymbol ? `${symbol}${amount}` : amount;
''', r'''
  const sign = cents < 0 ? '-' : '';
  const absolute = Math.abs(cents);
  const whole = Math.floor(absolute / 100);
  const fraction = String(absolute % 100).padStart(2, '0');
  const amount = `${groupThousands(whole)}.${fraction}`;
  return showSymbol ? `${sign}${symbol}${amount}` : `${sign}${amount}`;
''')
    r.append("tests/test_currency.py", r'''

    def test_negative_amounts_put_the_sign_first(self):
        self.assertEqual(format_cents(-150), "-$1.50")
        self.assertEqual(format_cents(-5), "-$0.05")
''')
    r.append("web/test/format.test.js", r'''

test('formats negative amounts with a leading minus sign', () => {
  assert.strictEqual(formatPrice(-150), '-$1.50');
  assert.strictEqual(formatPrice(-123456, { showSymbol: false }), '-1,234.56');
});
''')
    r.commit(
        "Format negative amounts correctly in Python and JS\n\n"
        "format_cents(-150) produced '$-2.50' because floor division rounds "
        "towards minus infinity, and formatPrice had the same bug and printed "
        "'$-2.-50'. Both now format the absolute value and prefix the sign, "
        "so refunds and discounts render as '-$1.50'. The receipt uses this "
        "for its discount row instead of gluing on a minus sign itself.",
        MAYA, "good")


def g26_rename_render_line(r: DemoRepo) -> None:
    for rel in ("web/cart_view.js", "web/wishlist_view.js", "web/test/cart_view.test.js"):
        r.replace_all(rel, "renderCartLine", "renderLineItem")
    r.edit("web/test/wishlist_view.test.js", r'''
test('renderWishlist handles an empty list', () => {
''', r'''
test('renderWishlist uses the requested currency', () => {
  const products = [{ sku: 'MUG-1', name: 'Coffee mug', priceCents: 899 }];
  assert.strictEqual(
    renderWishlist(products, { currency: 'EUR' }),
    'Wishlist (1 product)\nCoffee mug  \u20ac8.99',
  );
});

test('renderWishlist handles an empty list', () => {
''')
    r.commit(
        "Rename renderCartLine to renderLineItem\n\n"
        "The helper is no longer cart specific now that the wishlist view "
        "renders its entries with it too. Callers in cart_view and "
        "wishlist_view and the tests are updated.",
        TOMAS, "good")


def build_history(r: DemoRepo) -> None:
    r.init()
    c00_initial(r)
    g01_catalog(r)
    g02_inventory(r)
    g03_discounts(r)
    g04_cart_view(r)
    g05_money(r)
    g06_taxes(r)
    g07_orders(r)
    g08_rename_subtotal(r)
    n01_formatting(r)
    g09_validate(r)
    g10_reject_non_positive(r)
    g11_format_options(r)
    n02_lockfile_vendor(r)
    g12_coupons(r)
    g13_rename_money_module(r)
    n03_single_file(r)
    g14_remove_dead_code(r)
    g15_shipping(r)
    g16_free_shipping_hint(r)
    # A short feature branch, merged back with --no-ff.
    r.checkout("-b", "feature/wishlist")
    f01_wishlist(r)
    f02_wishlist_view(r)
    r.checkout("main")
    g17_rename_available(r)
    g18_tax_after_discount(r)
    r.merge("feature/wishlist",
            "Merge branch 'feature/wishlist'\n\n"
            "Merge commit: brings in the wishlist backend and its storefront "
            "view.",
            MAYA)
    r.git("branch", "-d", "feature/wishlist")
    g19_api_payload(r)
    g20_validator_messages(r)
    n04_binary(r)
    g21_cancel_order(r)
    g22_validate_quantity(r)
    g23_category_discounts(r)
    g24_receipts(r)
    g25_negative_amounts(r)
    g26_rename_render_line(r)


# ---------------------------------------------------------------------------
# Classification (what a miner should see) and verification.
# ---------------------------------------------------------------------------

def _is_test(path: str) -> bool:
    return path.startswith(TEST_PREFIXES)


def _is_source(path: str) -> bool:
    return (path.endswith(SOURCE_EXTS) and not _is_test(path)
            and not path.startswith(VENDOR_PREFIX))


def classify(repo: DemoRepo, sha: str) -> tuple[str, str]:
    parents = repo.git("rev-list", "--parents", "-n", "1", sha).split()[1:]
    if len(parents) > 1:
        return "merge", ""
    if not parents:
        return "initial", ""
    numstat = [line.split("\t") for line in
               repo.git("diff", "--numstat", "-M", parents[0], sha).splitlines() if line]
    files = [f[2] for f in numstat]
    if all(f[0] == "-" for f in numstat):
        return "binary", f"{len(files)} binary files"
    if all(f in LOCKFILE_PATHS or f.startswith(VENDOR_PREFIX) for f in files):
        return "lockfile+vendor", f"{len(files)} files"
    if not repo.git("diff", "-w", "--ignore-blank-lines", parents[0], sha):
        return "formatting", f"{len(files)} files, whitespace only"
    if len(files) == 1:
        return "single-file", files[0]
    names = repo.git("diff", "--name-only", "--no-renames", parents[0], sha).split()
    src = [f for f in names if _is_source(f)]
    tests = [f for f in names if _is_test(f)]
    if len(src) >= 2 and tests:
        return "good", f"{len(src)} src + {len(tests)} test files"
    return "other", f"{len(src)} src + {len(tests)} test files"


def summarize(repo: DemoRepo) -> dict[str, int]:
    counts: dict[str, int] = {}
    shas = repo.git("rev-list", "--reverse", "--topo-order", "HEAD").split()
    for sha in shas:
        kind, detail = classify(repo, sha)
        intended = repo.kinds.get(sha)
        if intended is not None and intended != kind:
            raise AssertionError(f"{sha[:10]}: intended {intended}, classified {kind}")
        counts[kind] = counts.get(kind, 0) + 1
        subject = repo.git("log", "-1", "--format=%ad %s", "--date=short", sha).strip()
        print(f"  {sha[:10]}  {kind:<15} {subject}  [{detail}]" if detail
              else f"  {sha[:10]}  {kind:<15} {subject}")
    return counts


def verify(repo: DemoRepo) -> bool:
    shas = repo.git("rev-list", "--reverse", "--topo-order", "HEAD").split()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    ok_all = True
    with tempfile.TemporaryDirectory(prefix="demo-shop-verify-") as tmp:
        for sha in shas:
            wt = Path(tmp) / sha[:12]
            repo.git("worktree", "add", "-q", "--detach", str(wt), sha)
            try:
                py = subprocess.run(
                    [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
                    cwd=wt, env=env, capture_output=True, text=True)
                js = subprocess.run(["node", "--test", "web/test/"],
                                    cwd=wt, env=env, capture_output=True, text=True)
            finally:
                repo.git("worktree", "remove", "--force", str(wt))
            py_ok, js_ok = py.returncode == 0, js.returncode == 0
            ran = re.search(r"Ran (\d+) test", py.stderr)
            js_pass = re.search(r"# pass (\d+)", js.stdout)
            subject = repo.git("log", "-1", "--format=%s", sha).strip()
            print(f"  {sha[:10]}  py:{'PASS' if py_ok else 'FAIL'}"
                  f"({ran.group(1) if ran else '?'})"
                  f"  js:{'PASS' if js_ok else 'FAIL'}({js_pass.group(1) if js_pass else '?'})"
                  f"  {subject}")
            if not py_ok:
                print(py.stdout + py.stderr)
            if not js_ok:
                print(js.stdout[-3000:] + js.stderr[-3000:])
            ok_all = ok_all and py_ok and js_ok
    repo.git("worktree", "prune")
    return ok_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for the working repository")
    parser.add_argument("--bundle", type=Path, help="also write `git bundle create PATH --all`")
    parser.add_argument("--force", action="store_true", help="wipe a non-empty --out directory")
    parser.add_argument("--verify", action="store_true",
                        help="run both test suites at every commit")
    args = parser.parse_args(argv)

    bundle = args.bundle
    if args.out is None and bundle is None:
        bundle = DEFAULT_BUNDLE

    with tempfile.TemporaryDirectory(prefix="demo-shop-") as tmp:
        if args.out is not None:
            out = args.out.resolve()
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                if not args.force:
                    print(f"error: {out} exists and is not empty (use --force to replace it)",
                          file=sys.stderr)
                    return 2
                if out.is_dir():
                    shutil.rmtree(out)
                else:
                    out.unlink()
        else:
            out = Path(tmp) / "demo-shop"

        repo = DemoRepo(out)
        build_history(repo)
        print(f"built {out}")
        counts = summarize(repo)
        print("commit kinds: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))

        if bundle is not None:
            bundle = bundle.resolve()
            bundle.parent.mkdir(parents=True, exist_ok=True)
            if bundle.exists():
                bundle.unlink()
            repo.git("bundle", "create", "-q", str(bundle), "--all")
            print(f"bundle {bundle} ({bundle.stat().st_size} bytes)")

        ok = True
        if args.verify:
            print("verifying every commit:")
            ok = verify(repo)
            print("verify: all commits pass" if ok else "verify: FAILURES")

        head = repo.git("rev-parse", "HEAD").strip()
        print(f"HEAD {head}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
