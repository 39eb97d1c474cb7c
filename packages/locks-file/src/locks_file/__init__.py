"""locks-file: OS file locks for ``locks``, the embedded default backend (no server)."""

from locks_file.backend import FileLockBackend, default_directory

__all__ = ["FileLockBackend", "default_directory"]
