"""The layers below the web: models/, codecs/, batch/, preprocessing/ and the job store import no Flask, not even
through another module of this package (read from the source, every import in a function included). Their
commands (each package's cli.py) are an edge like the views: Flask's command line registers them, and no
module below imports one."""
import ast
from pathlib import Path

from app.config import PROJECT_ROOT

APP = PROJECT_ROOT / "app"
BELOW_THE_WEB = ("app.models", "app.codecs", "app.batch", "app.preprocessing", "app.jobs.store", "app.monitoring.log",
                 "app.monitoring.profile", "app.monitoring.feedback", "app.errors", "app.metrics", "app.database")
WEB = {"flask", "werkzeug", "flask_cors", "flask_limiter", "flasgger", "apispec", "apispec_webframeworks"}


def module_files() -> dict[str, Path]:
    files = {}
    for path in APP.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported(path: Path) -> set[str]:
    """Every module name an import statement of the file names (``from a import b``: a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def web_import_chain(start: str, files: dict[str, Path]) -> list[str] | None:
    """The chain of this package's modules from ``start`` to one that imports a web library, if any (the
    package itself, app/__init__.py, is the factory and is left out)."""
    came_from, todo = {start: None}, [start]
    while todo:
        name = todo.pop(0)
        names = imported(files[name])
        if {n.split(".")[0] for n in names} & WEB:
            chain = [name]
            while came_from[chain[-1]]:
                chain.append(came_from[chain[-1]])
            return chain[::-1]
        for other in sorted(n for n in names if n in files and n != "app" and n not in came_from):
            came_from[other] = name
            todo.append(other)
    return None


def test_the_layers_below_the_web_import_no_flask():
    files = module_files()
    below = [name for name in files if name.startswith(BELOW_THE_WEB) and not name.endswith(".cli")]
    assert len(below) > 30  # the whole of those packages was read
    chains = {name: chain for name in below if (chain := web_import_chain(name, files))}
    assert chains == {}


def test_the_check_sees_a_web_import_through_another_module():
    files = module_files()
    assert web_import_chain("app.api.models", files)[-1].startswith("app.api")
    assert web_import_chain("app.monitoring.report", files) is None
    assert web_import_chain("app.monitoring.cli", files) == ["app.monitoring.cli"]


def test_training_sits_below_nothing_but_the_command_line():
    """Besides training's own modules, only command modules import app.training (`feedback learn` trains a
    version; the factory registers training's commands by name): no view, model, store or batch code does."""
    from app import COMMAND_MODULES

    files = module_files()
    importers = sorted(name for name, path in files.items() if not name.startswith("app.training")
                       and any(n == "app.training" or n.startswith("app.training.") for n in imported(path)))
    assert importers and set(importers) <= set(COMMAND_MODULES), importers
