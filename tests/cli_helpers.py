"""Shared assertions for CLI tests (imported as a plain module: tests/ is on sys.path)."""


def one_line_error(result, code: int = 1) -> str:
    """The CLI failed with ``code``, printed exactly one line and no traceback; returns that line."""
    assert result.exit_code == code, result.output
    text = result.output.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text
