ALTER TABLE notes ADD COLUMN subtitle TEXT;
UPDATE notes SET subtitle = substr(title, instr(title, ' - ') + 3), title = substr(title, 1, instr(title, ' - ') - 1)
 WHERE instr(title, ' - ') > 0;
