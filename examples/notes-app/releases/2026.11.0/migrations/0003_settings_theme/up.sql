INSERT INTO settings(key, value) VALUES ('theme', 'system');
