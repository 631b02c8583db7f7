UPDATE notes SET title = title || ' - ' || subtitle WHERE subtitle IS NOT NULL;
ALTER TABLE notes DROP COLUMN subtitle;
