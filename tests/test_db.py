from sqlalchemy import text

from app.generation.db import create_database_engine


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = create_database_engine(f"sqlite:///{tmp_path / 'sub' / 'jobs.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
    assert (tmp_path / "sub").is_dir()
