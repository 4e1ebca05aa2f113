"""The package's dependencies, read from the pinned requirements files (one list of pins, the files'):
the serving ones, and an extra per optional capability (`pip install -e '.[batch]'`)."""
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
EXTRAS = ("store", "monitor", "batch", "beam", "train", "dev")


def pins(name: str) -> list[str]:
    """The requirements of one file, following its `-r` includes."""
    found = []
    for line in (HERE / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += pins(line[3:].strip())
        elif line:
            found.append(line)
    return found


serving = pins("requirements.txt")
setup(install_requires=serving,
      extras_require={extra: [p for p in pins(f"requirements-{extra}.txt") if p not in serving] for extra in EXTRAS})
