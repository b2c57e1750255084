"""`with service:` for the harness's servers and clusters: entering starts, leaving stops, and a
start that fails part-way stops what did start (a process or node left running would outlive the
test and hold its ports)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Lifecycle(ABC):
    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Safe to call when only part of it, or none, started."""

    def end(self) -> None:
        """What leaving the `with` does; stop() unless the service also removes its files."""
        self.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.end()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end()
