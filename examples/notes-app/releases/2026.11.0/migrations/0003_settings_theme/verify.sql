SELECT count(*) = 1 FROM settings WHERE key = 'theme';
