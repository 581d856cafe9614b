"""A throwaway PostgreSQL server for tests: the one the benchmarks use too, in bench/pgserver.py
(``PgServer().start()``: initdb into a temporary directory, a free 127.0.0.1 port, trust auth)."""

from bench.pgserver import SUPERUSER, PgServer, free_port, pg_bin_dir

__all__ = ["SUPERUSER", "PgServer", "free_port", "pg_bin_dir"]
