"""Everything that speaks SQL: migrations, partitions and the queries, behind named functions."""
