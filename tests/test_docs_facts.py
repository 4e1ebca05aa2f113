"""Facts the docs state about the committed models and the server, checked against them (so they stay true)."""
from __future__ import annotations

import re

import pytest

from app.config import PROJECT_ROOT
from tests.conftest import SAVED_MODELS, committed_version

DOCS = PROJECT_ROOT / "docs"


def test_example_answers_name_the_committed_versions():
    text = (DOCS / "api.md").read_text()
    named = re.findall(r'"name":"(\w+)","version":"(\d+)"', text)
    assert named, "docs/api.md shows no example answer"
    for name, version in named:
        assert version == committed_version(name), (name, version)


def test_the_image_tensor_shape_is_the_served_network_s():
    from app.models.base import Manifest

    size = Manifest.read(SAVED_MODELS / "malaria_cell" / committed_version("malaria_cell") / "manifest.json").config["input_size"]
    assert f"tensor `[N, {size}, {size}, 3]`" in (DOCS / "api.md").read_text()


def test_lifecycle_examples_name_versions_that_exist():
    for name, version in re.findall(r"models promote (\w+) (\d+)", (DOCS / "models.md").read_text()):
        assert (SAVED_MODELS / name / version / "manifest.json").exists(), (name, version)


def test_every_pinned_dependency_is_explained_where_the_requirements_files_say():
    explained = (DOCS / "dependencies.md").read_text().lower()
    for requirements in sorted(PROJECT_ROOT.glob("requirements*.txt")):
        text = requirements.read_text()
        pointer = re.search(r"Why each one is here: ([\w/.-]+\.md)", text)
        assert pointer and pointer.group(1) == "docs/dependencies.md", requirements.name
        for package in re.findall(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==", text, re.M):
            assert package.lower() in explained, f"{requirements.name}: {package} is not in docs/dependencies.md"


def test_metrics_content_type_names_its_charset_once(client):
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type.count("charset") == 1, content_type


# -- every CLI line the README and docs print names commands and options that exist ----------------------------

CLI_LINE = re.compile(r"^\s*(?:[A-Z_]+=\S+\s+)*(?:\.venv[a-z-]*/bin/)?(?:flask --app app|modelserve)\s+(.*)$")


def cli_lines() -> list[tuple[str, str]]:
    """(page, command line) for every `modelserve ...` or `flask --app app ...` line in a shell block."""
    found = []
    for page in [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                match = CLI_LINE.match(line)
                if match and "|" not in match.group(1).split("#")[0]:  # not a diagram's list of choices
                    found.append((page.name, match.group(1)))
    return found


def test_the_docs_print_cli_lines():
    assert len(cli_lines()) >= 25


@pytest.mark.parametrize("page, line", cli_lines(), ids=[f"{p}: {line[:50]}" for p, line in cli_lines()])
def test_every_printed_cli_line_parses(page, line):
    """Each line's command exists and takes its options and arguments (parsed by Click as the command would be;
    only a named file's absence is forgiven, since the docs' example files are the reader's)."""
    import shlex

    import click

    from app.cli import cli

    args = shlex.split(line, comments=True)
    args = args[:args.index("&")] if "&" in args else args
    # The contexts are closed on the way out: the Flask group pushes an app context (of an app on the
    # default settings) that must not outlive this test.
    with cli.make_context("modelserve", list(args), resilient_parsing=True) as ctx:
        command, path = cli, ["modelserve"]
        while isinstance(command, click.Group):
            name = args.pop(0)
            sub = command.get_command(ctx, name)
            assert sub is not None, f"{page}: no command `{' '.join(path)} {name}`"
            path.append(name)
            command, parent, ctx = sub, ctx, click.Context(sub, info_name=name, parent=ctx)
        if not command.context_settings.get("ignore_unknown_options"):
            try:
                with command.make_context(path[-1], list(args), parent=parent):
                    pass
            except click.BadParameter as exc:
                assert "does not exist" in exc.format_message(), f"{page}: `{line}`: {exc.format_message()}"
            except click.UsageError as exc:
                pytest.fail(f"{page}: `{line}`: {exc.format_message()}")


def test_one_version_everywhere(client):
    """The package, the V2 server metadata and the OpenAPI document state the same version."""
    import importlib.metadata

    from app import __version__

    assert client.get("/v2").json["version"] == __version__
    assert client.get("/openapi.json").json["info"]["version"] == __version__
    assert importlib.metadata.version("modelserve") == __version__
