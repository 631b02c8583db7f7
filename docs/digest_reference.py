#!/usr/bin/env python3
"""An independent reference implementation of the content digest
"rewind-digest-1", written from docs/digest.md alone (it shares no code with
shared/src/digest.rs). Needs only Python 3's sqlite3 and the PyPI package
`blake3` (pip install blake3).

    python3 docs/digest_reference.py DB [DB ...]     # one JSON object per line
    python3 docs/digest_reference.py --sql SCRIPT    # digest of a fresh
                                                     # in-memory db built by SCRIPT

Each line has the shape `rewind-agent checksum --json` prints:
{"digest": "b3:..", "schema": "b3:..", "tables": [{"name", "rows", "digest"}]}

Section numbers below (§) refer to docs/digest.md.
"""

import json
import sqlite3
import struct
import sys

import blake3

SCHEMA_DOMAIN = b"rewind-digest-1/schema\x00"
TABLE_DOMAIN = b"rewind-digest-1/table\x00"
DB_DOMAIN = b"rewind-digest-1/db\x00"


def u32(n):
    return struct.pack(">I", n)


def u64(n):
    return struct.pack(">Q", n)


def field(b):
    """§1: a length-prefixed byte string."""
    return u32(len(b)) + b


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(s):
    """§1: only A-Z are folded; other letters are left as they are."""
    return s.translate(_ASCII_LOWER)


def is_internal(name):
    lower = ascii_lower(name)
    return lower.startswith("sqlite_") or lower.startswith("_rewind_")


# ---- §3.1 the tokenizer ----------------------------------------------------

SPACE = " \t\n\f\r"


def is_word_char(c):
    return (not c.isascii()) or c.isalnum() or c in "_$"


def quoted(s, start, q):
    """Reads s[start] == q ... closing q, with qq as an escaped quote. Returns
    the unescaped content and the index after the closing quote (or len(s))."""
    content = []
    i = start + 1
    n = len(s)
    while i < n:
        if s[i] == q:
            if i + 1 < n and s[i + 1] == q:
                content.append(q)
                i += 2
                continue
            i += 1
            break
        content.append(s[i])
        i += 1
    return "".join(content), i


def tokens(sql):
    out = []
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in SPACE:
            i += 1
        elif c == "-" and i + 1 < n and sql[i + 1] == "-":
            while i < n and sql[i] != "\n":
                i += 1
        elif c == "/" and i + 1 < n and sql[i + 1] == "*":
            i += 2
            while i < n and not (sql[i] == "*" and i + 1 < n and sql[i + 1] == "/"):
                i += 1
            i = min(i + 2, n)
        elif c == "'":
            content, i = quoted(sql, i, "'")
            out.append(("string", "'" + content.replace("'", "''") + "'"))
        elif c in '"`':
            content, i = quoted(sql, i, c)
            out.append(("ident", content))
        elif c == "[":
            j = sql.find("]", i + 1)
            if j < 0:
                j = n
            out.append(("ident", sql[i + 1 : j]))
            i = min(j + 1, n)
        elif is_word_char(c) or (c in "?:@" and i + 1 < n):
            start = i
            i += 1
            while i < n:
                d = sql[i]
                in_number = sql[start] in "0123456789" and (
                    d == "." or (d in "+-" and sql[i - 1] in "eE")
                )
                if is_word_char(d) or in_number:
                    i += 1
                elif d == "'" and i == start + 1 and sql[start] in "xX":
                    _, i = quoted(sql, i, "'")
                    break
                else:
                    break
            out.append(("word", sql[start:i]))
        else:
            out.append(("punct", c))
            i += 1
    return out


def is_plain_ident(s):
    if not s or not (("a" <= s[0] <= "z") or ("A" <= s[0] <= "Z") or s[0] == "_"):
        return False
    return all(c.isascii() and (c.isalnum() or c == "_") for c in s)


def normalize_schema_sql(sql):
    """§3.2"""
    parts = []
    for kind, text in tokens(sql):
        if kind == "word":
            parts.append(ascii_lower(text))
        elif kind == "ident":
            lower = ascii_lower(text)
            if is_plain_ident(lower):
                parts.append(lower)
            else:
                parts.append('"' + lower.replace('"', '""') + '"')
        else:
            parts.append(text)
    return " ".join(parts)


# ---- §3 schema digest --------------------------------------------------------

KIND_RANK = {"table": 0, "index": 1, "view": 2, "trigger": 3}


def schema_digest(conn):
    objects = []
    for kind, name, tbl, sql in conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL"
    ):
        if is_internal(name) or is_internal(tbl):
            continue
        objects.append(
            (
                KIND_RANK.get(kind, 3),
                ascii_lower(name).encode(),
                ascii_lower(tbl).encode(),
                normalize_schema_sql(sql).encode(),
            )
        )
    objects.sort(key=lambda o: (o[0], o[1]))
    h = blake3.blake3(SCHEMA_DOMAIN)
    h.update(u32(len(objects)))
    for rank, name, tbl, sql in objects:
        h.update(bytes([rank]))
        h.update(field(name))
        h.update(field(tbl))
        h.update(field(sql))
    return h.digest()


# ---- §4 table digests ------------------------------------------------------


class Text(bytes):
    """A TEXT value, as UTF-8 bytes (kept apart from BLOBs)."""


def quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def content_tables(conn):
    names = []
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'"):
        if sql is None or sql[:20].upper() == "CREATE VIRTUAL TABLE" or is_internal(name):
            continue
        names.append(name)
    return names


def encode_value(v):
    """§4.3"""
    if v is None:
        return b"\x00"
    if isinstance(v, int):
        return b"\x01" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\x02" + struct.pack(">d", 0.0 if v == 0.0 else v)
    if isinstance(v, Text):
        return b"\x03" + u64(len(v)) + bytes(v)
    return b"\x04" + u64(len(v)) + bytes(v)


def binary_sort_key(values, text_encoding):
    """§4.2: SQLite's ORDER BY c COLLATE BINARY, typeof(c) for each column."""
    key = []
    for v in values:
        if v is None:
            key.append((0, 0, "null"))
        elif isinstance(v, bool):
            raise TypeError("unexpected bool")
        elif isinstance(v, int):
            key.append((1, v, "integer"))
        elif isinstance(v, float):
            key.append((1, v, "real"))
        elif isinstance(v, Text):
            raw = bytes(v)
            if text_encoding != "UTF-8":
                codec = "utf-16-le" if text_encoding.lower().endswith("le") else "utf-16-be"
                raw = raw.decode("utf-8", "surrogatepass").encode(codec, "surrogatepass")
            key.append((2, raw, "text"))
        else:
            key.append((3, bytes(v), "blob"))
    return key


def table_digest(conn, table, text_encoding):
    q = quote_ident(table)
    columns = [
        (name, decl or "", notnull, pk)
        for (_cid, name, decl, notnull, _dflt, pk, hidden) in conn.execute(f"PRAGMA table_xinfo({q})")
        if hidden != 1
    ]
    wr = conn.execute(
        "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ? COLLATE NOCASE",
        (table,),
    ).fetchone()
    without_rowid = bool(wr and wr[0])
    pk_cols = sorted((c for c in columns if c[3] > 0), key=lambda c: c[3])
    pk_index = any(row[3] == "pk" for row in conn.execute(f"PRAGMA index_list({q})"))
    rowid_alias = (
        not without_rowid
        and len(pk_cols) == 1
        and ascii_lower(pk_cols[0][1]) == "integer"
        and not pk_index
    )
    by_key = bool(pk_cols) and (without_rowid or rowid_alias or all(c[2] for c in pk_cols))

    select = ", ".join(quote_ident(c[0]) for c in columns)
    conn.text_factory = Text
    try:
        if by_key:
            order = ", ".join(quote_ident(c[0]) for c in pk_cols)
            rows = conn.execute(f"SELECT {select} FROM {q} ORDER BY {order}").fetchall()
        else:
            rows = conn.execute(f"SELECT {select} FROM {q}").fetchall()
            positions = [columns.index(c) for c in pk_cols] + [
                i for i, c in enumerate(columns) if c[3] == 0
            ]
            rows.sort(key=lambda r: binary_sort_key([r[i] for i in positions], text_encoding))
    finally:
        conn.text_factory = str

    name = ascii_lower(table)
    h = blake3.blake3(TABLE_DOMAIN)
    h.update(field(name.encode()))
    h.update(u32(len(columns)))
    for c in columns:
        h.update(field(ascii_lower(c[0]).encode()))
    for r in rows:
        h.update(b"".join(encode_value(v) for v in r))
    h.update(u64(len(rows)))
    return {"name": name, "rows": len(rows), "digest": h.digest()}


# ---- §5 the whole database -------------------------------------------------


def database_digest(conn):
    conn.execute("BEGIN")
    try:
        text_encoding = conn.execute("PRAGMA encoding").fetchone()[0]
        schema = schema_digest(conn)
        tables = [table_digest(conn, t, text_encoding) for t in content_tables(conn)]
    finally:
        conn.execute("COMMIT")
    tables.sort(key=lambda t: t["name"].encode())
    h = blake3.blake3(DB_DOMAIN)
    h.update(schema)
    h.update(u32(len(tables)))
    for t in tables:
        h.update(field(t["name"].encode()))
        h.update(u64(t["rows"]))
        h.update(t["digest"])
    text = lambda d: "b3:" + d.hex()  # noqa: E731
    return {
        "digest": text(h.digest()),
        "schema": text(schema),
        "tables": [{"name": t["name"], "rows": t["rows"], "digest": text(t["digest"])} for t in tables],
    }


def main(argv):
    if len(argv) == 2 and argv[0] == "--sql":
        conn = sqlite3.connect(":memory:", isolation_level=None)
        with open(argv[1], encoding="utf-8") as f:
            conn.executescript(f.read())
        print(json.dumps(database_digest(conn)))
        return 0
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    for path in argv:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        print(json.dumps(database_digest(conn)))
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
