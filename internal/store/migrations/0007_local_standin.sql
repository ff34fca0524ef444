-- local stand-in for the snapshot branch 0007 (NOT committed)
SELECT 1;
