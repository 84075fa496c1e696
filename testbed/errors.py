"""The one family of fatal errors: each carries an exit code and a message that says what to do."""

from __future__ import annotations

from typing import Any


class TestbedError(Exception):
    """A fatal error shown to the user as one line; `main()` turns it into the exit code."""

    __test__ = False  # not a pytest test class, despite the name
    return_code = 1

    def __init__(self, message: str, *, return_code: int | None = None) -> None:
        super().__init__(message)
        if return_code is not None:
            self.return_code = return_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class UsageError(TestbedError):
    """Bad input on the command line or in a configuration file (exit code 2)."""

    return_code = 2


class ConfigError(UsageError):
    """A scenario or topology file that does not validate; the message names the file and the field."""


class CommandError(TestbedError):
    """An external command failed or timed out; keeps what it printed for the log."""

    def __init__(
        self,
        message: str,
        *,
        argv: list[str],
        exit_code: int | None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr


class TrialFailed(TestbedError):
    """The system under test failed during one trial (a process died, a check failed): that trial is
    recorded as failed with its cause, and the run goes on with the next one."""

    def __init__(
        self, message: str, *, failure: dict[str, Any] | None = None, before_load: bool = False
    ) -> None:
        super().__init__(message)
        #: What is known of the failure and what was measured before it (written to failed.json).
        self.failure: dict[str, Any] = dict(failure or {})
        #: The trial failed before its load began (a pod not ready, a setup step): it measured nothing
        #: of the load, so a capacity search tries the same rate again rather than calling it too high.
        self.before_load = before_load


class Interrupted(TestbedError):
    """Ctrl-C: everything started was stopped; what was finished is kept."""

    return_code = 130
