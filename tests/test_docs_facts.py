"""Facts the docs state about the committed models and the server, checked against them (so they stay true)."""
from __future__ import annotations

import re

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
