"""The stubs type the document's examples under ``mypy --strict``, and catch misuse."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).parent


def mypy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *args],
        capture_output=True,
        text=True,
        cwd=HERE,
    )


def test_documented_examples_pass_mypy_strict() -> None:
    result = mypy(str(HERE / "typing" / "documented_examples.py"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_extended_api_passes_mypy_strict() -> None:
    result = mypy(str(HERE / "typing" / "extended_examples.py"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_rejects_misuse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        textwrap.dedent(
            """
            from circuit_breaker import CircuitBreaker, circuit_breaker
            b = CircuitBreaker("x", failure_threshold="5")
            n: str = b.call(lambda: 1)
            def takes_int(x: int) -> int:
                return x
            b.call(takes_int, "not an int")
            @circuit_breaker()
            def decorated(x: int) -> int:
                return x
            decorated("not an int")
            s: str = decorated(1)
            decorated.circuit_breaker.no_such_method()
            """
        )
    )
    result = mypy(str(bad))
    assert result.returncode == 1
    assert "failure_threshold" in result.stdout or "arg-type" in result.stdout
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in result.stdout
    out = result.stdout
    assert 'Argument 2 to "call" of "BreakerCore" has incompatible type "str"; expected "int"' in out, out
    assert 'Argument 1 to "__call__" of "Protected" has incompatible type "str"; expected "int"' in out, out
    assert '"CircuitBreaker" has no attribute "no_such_method"' in out, out
    assert out.count("error:") == 6, out
