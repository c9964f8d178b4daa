"""What every project dataset shares: a local path, Kedro versioning, a description."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io.core import AbstractVersionedDataset, DatasetError, Version


class LocalVersionedDataset(AbstractVersionedDataset):
    """A versioned dataset at a local ``filepath``; subclasses say what counts as saved.

    ``_exists`` is true when the version to load resolves and :meth:`_found`
    accepts its path (a file, a folder with the right files).
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.metadata = metadata
        super().__init__(filepath=PurePosixPath(filepath), version=version)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def _found(self, path: Path) -> bool:
        return path.is_file()

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except DatasetError:
            return False
        return self._found(Path(path))
