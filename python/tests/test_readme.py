"""The README's Python snippets: every one passes ``mypy --strict``, and every one that needs
no network runs as pasted. README.md is what users copy from; this keeps it honest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"

# Names some snippets use as stand-ins for the reader's own code; defined here, typed, and real
# enough to run. A snippet gets only the ones it uses and does not define itself.
STAND_INS = {
    "stream": "def stream() -> Iterator[bytes]:\n    yield b'chunk'\n",
    "handle": "def handle(chunk: bytes) -> None:\n    pass\n",
    "app": "from fastapi import FastAPI\napp = FastAPI()\n",
    "url": "url = 'https://match.example.com/match'\n",
    "doc": "doc: Dict[str, str] = {}\n",
}


def snippets() -> List[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def with_stand_ins(code: str) -> str:
    needed = [
        name
        for name in STAND_INS
        if re.search(rf"\b{name}\b", code) and not re.search(rf"^(def {name}\b|{name} =)", code, re.M)
    ]
    head = "from typing import Dict, Iterator\n" + "".join(STAND_INS[n] for n in needed) if needed else ""
    return head + code


def runs_offline(code: str) -> bool:
    # The HTTP helpers call example.com; the FastAPI app is run by test_workers.py under servers.
    return "protected_get(" not in code and not code.startswith("# app.py")


def test_there_are_snippets_and_no_internal_jargon() -> None:
    text = README.read_text()
    assert len(snippets()) >= 10
    for jargon in ("seed 0", "documented module", "issue 1", "issue 2"):
        assert jargon not in text.lower(), jargon


def test_every_python_snippet_passes_mypy_strict(tmp_path: Path) -> None:
    files = []
    for i, code in enumerate(snippets()):
        path = tmp_path / f"snippet_{i}.py"
        path.write_text(with_stand_ins(code))
        files.append(str(path))
    # One file at a time: snippets reuse names, as separate programs do.
    failures = []
    for f in files:
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental", f],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            failures.append(Path(f).read_text() + "\n" + result.stdout)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("index", [i for i, code in enumerate(snippets()) if runs_offline(code)])
def test_snippets_run_as_pasted(index: int, tmp_path: Path) -> None:
    code = with_stand_ins(snippets()[index])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, code + "\n" + result.stderr
