"""The README's examples are true: each `curl` line with a JSON answer under it runs against a live server."""
import json
import re
import subprocess

import pytest

from app.config import PROJECT_ROOT


def examples() -> list[tuple[str, dict]]:
    """(curl command, the JSON answer the README shows for it) from the README's shell blocks."""
    text = (PROJECT_ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for command, answer in zip(lines, lines[1:]):
            if command.startswith("curl ") and answer.startswith("# {") and "..." not in command:
                found.append((command, json.loads(answer[2:])))
    return found


def same(shown, got, path="answer"):
    """The shown answer equals the real one (numbers to 1e-6)."""
    if isinstance(shown, dict):
        assert isinstance(got, dict) and set(shown) == set(got), (path, shown, got)
        for key in shown:
            same(shown[key], got[key], f"{path}.{key}")
    elif isinstance(shown, list):
        assert isinstance(got, list) and len(shown) == len(got), (path, shown, got)
        for i, (a, b) in enumerate(zip(shown, got)):
            same(a, b, f"{path}[{i}]")
    elif isinstance(shown, float):
        assert got == pytest.approx(shown, abs=1e-6), (path, shown, got)
    else:
        assert shown == got, (path, shown, got)


def test_the_readme_shows_examples():
    assert len(examples()) >= 5


@pytest.mark.parametrize("command, shown", examples(), ids=[c[:60] for c, _ in examples()])
def test_readme_example_prints_what_the_readme_says(command, shown, live_server):
    command = command.replace("localhost:8000", live_server.removeprefix("http://"))
    done = subprocess.run(command + " --silent --show-error", shell=True, cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    same(shown, json.loads(done.stdout))
