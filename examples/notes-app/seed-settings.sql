-- Sample data for the notes app's settings database (target "settings").
PRAGMA journal_mode = WAL;
CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO settings VALUES ('locale', 'en-GB'), ('sync', 'on'), ('font_size', '14');
