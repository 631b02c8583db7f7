DELETE FROM settings WHERE key = 'theme';
