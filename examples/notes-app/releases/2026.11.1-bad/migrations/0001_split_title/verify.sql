-- Every note must have had a subtitle: fails on the sample data on purpose.
SELECT count(*) = 0 FROM notes WHERE subtitle IS NULL;
