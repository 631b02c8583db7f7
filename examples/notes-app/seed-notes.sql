-- Sample data for the notes app's main database (target "notes"), as the
-- app at 4.1.x leaves it. Used by the demo, the docs and the tests.
PRAGMA journal_mode = WAL;
CREATE TABLE notes(
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE orders(
    id INTEGER PRIMARY KEY,
    note_id INTEGER REFERENCES notes(id),
    total REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX orders_by_note ON orders(note_id);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
INSERT INTO notes(id, title, body, created_at)
SELECT i, 'Note ' || i, 'Body of note ' || i, datetime('2026-01-01', '+' || i || ' hours') FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
INSERT INTO orders(id, note_id, total, status)
SELECT i, 1 + (i % 200), round(i * 1.37, 2),
       CASE i % 4 WHEN 0 THEN 'Paid' WHEN 1 THEN 'paid ' WHEN 2 THEN 'OPEN' ELSE 'shipped' END FROM n;
