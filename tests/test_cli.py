"""The command line: every option of every command explains itself."""
import click


def walk(command, path):
    """(path, command) of every leaf command under ``command``."""
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, [*path, name])
    else:
        yield path, command


def test_every_option_has_help_text(app):
    ours = ["train", "evaluate", "feedback", "models", "score", "db"]
    missing = [(" ".join(path), param.name) for name in ours for path, command in walk(app.cli.commands[name], [name])
               for param in command.params if isinstance(param, click.Option) and not param.help]
    assert missing == []


def test_feedback_list_says_when_there_is_none(runner):
    assert "no feedback stored yet" in runner.invoke(args=["feedback", "list"]).output


def test_the_pull_worker_has_one_entry_point(app):
    """`python -m app.worker` (it needs no app and no database); `flask worker` is gone."""
    from app.worker import main

    assert "worker" not in app.cli.commands and callable(main)


def test_reload_finds_the_one_running_server_of_this_checkout(tmp_path, monkeypatch, runner):
    import os
    import subprocess
    import time

    from app import config
    from app.models.cli import running_server_pidfile

    monkeypatch.setattr(config, "pidfile_folder", lambda: tmp_path)
    monkeypatch.delenv("GUNICORN_PIDFILE", raising=False)
    (tmp_path / "gunicorn-8001.pid").write_text("999999999")  # a server that is gone
    (tmp_path / "gunicorn-8003.pid").write_text(str(os.getpid()))  # a live process that is no gunicorn
    assert "no running server" in runner.invoke(args=["models", "reload", "--restart"]).output
    # A process that is a gunicorn started from this checkout (its command line says so, its folder is here).
    fake = subprocess.Popen(["bash", "-c", "exec -a gunicorn sleep 30"], cwd=config.PROJECT_ROOT)
    elsewhere = subprocess.Popen(["bash", "-c", "exec -a gunicorn sleep 30"], cwd=tmp_path)
    for process in (fake, elsewhere):  # until bash has exec'd: only then is its command line gunicorn's
        deadline = time.monotonic() + 10
        while not open(f"/proc/{process.pid}/cmdline", "rb").read().startswith(b"gunicorn"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    try:
        alive = tmp_path / "gunicorn-8000.pid"
        alive.write_text(str(fake.pid))
        (tmp_path / "gunicorn-8004.pid").write_text(str(elsewhere.pid))  # another checkout's server: never ours
        assert running_server_pidfile() == alive
        refused = runner.invoke(args=["models", "reload", "--restart", "--pidfile", str(tmp_path / "gunicorn-8003.pid")])
        assert refused.exit_code != 0 and "not a running gunicorn" in refused.output
    finally:
        fake.kill()
        elsewhere.kill()
    fake.wait()
    assert "no running server" in runner.invoke(args=["models", "reload", "--restart"]).output  # stale pidfile now


def test_parquet_without_pyarrow_is_refused_before_any_work(tmp_path, runner, monkeypatch):
    import importlib.util

    table = tmp_path / "reviews.csv"
    table.write_text('id,text\n1,"A fine film."\n')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    done = runner.invoke(args=["score", "review_sentiment", str(table), str(tmp_path / "out.parquet"), "--key", "id"])
    assert done.exit_code != 0
    assert "Parquet needs pyarrow, which this environment lacks: pip install -r requirements-batch.txt" in done.output
    assert not list(tmp_path.glob("out.parquet*"))  # nothing scored, nothing half-written


def test_the_progress_bar_knows_the_total(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from app.batch.local import item_count, progress_bar

    (tmp_path / "cells" / "a").mkdir(parents=True)
    for name in ("a/1.png", "2.png", "3.jpg"):
        (tmp_path / "cells" / name).write_bytes(b"x")
    (tmp_path / "cells" / "notes.txt").write_text("not an image")
    (tmp_path / "t.csv").write_text('id,text\n1,"two\nlines"\n2,b\n3,c\n')
    pq.write_table(pa.table({"text": ["a", "b", "c", "d"]}), tmp_path / "t.parquet")
    assert [item_count(tmp_path / n) for n in ("cells", "t.csv", "t.parquet")] == [3, 3, 4]
    bar = progress_bar(True, 1, 3)
    assert bar.total == 3 and bar.n == 1  # tqdm: a total, hence a percentage and the time left
    bar.close()
