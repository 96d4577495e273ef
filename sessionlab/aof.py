"""The append-only file on disk: which files make it up, their size, the commands inside.

Redis 7.0+ (and Valkey) keep the AOF in a directory (``appendonlydir/``: a base snapshot, an
incremental file of commands, and a manifest that lists them); Redis 6.2 keeps one
``appendonly.aof``. These helpers read either layout, so lesson 03 shows the running server's.
"""

from __future__ import annotations

from pathlib import Path

from .server import LabServer, wait_until


def aof_files(server: LabServer) -> list[Path]:
    """The files that make up the AOF now, for either layout.

    Redis 7.0+: the manifest in ``appendonlydir/`` and the base and incr files it lists
    (old ones left over from a rewrite are not part of it). Redis 6.2: ``appendonly.aof``.
    """
    folder = server.dir / str(server.directives.get("appenddirname") or "appendonlydir")
    manifests = sorted(folder.glob("*.manifest"))
    if manifests:
        files = [manifests[-1]]
        for line in manifests[-1].read_text().splitlines():
            parts = line.split()
            entry = dict(zip(parts[::2], parts[1::2], strict=False))
            if entry.get("type") in ("b", "i") and "file" in entry:
                files.append(folder / entry["file"].strip('"'))
        return files
    single = server.dir / str(server.directives.get("appendfilename") or "appendonly.aof")
    return [single] if single.is_file() else []


def aof_size(server: LabServer) -> int:
    """Bytes of AOF data on disk (base + incr files, or the one file), manifest excluded."""
    return sum(
        path.stat().st_size
        for path in aof_files(server)
        if path.suffix != ".manifest" and path.is_file()
    )


def aof_commands(path: Path, limit: int = 10, wait: float = 0.0) -> list[list[str]]:
    """The first ``limit`` commands in an AOF file (RESP), as lists of strings.

    An AOF is the write commands themselves, as clients send them. A file that starts with
    an RDB preamble (``REDIS...``, after a rewrite) holds a snapshot first: none returned.

    ``wait``: seconds to wait until the file holds ``limit`` commands. Redis writes its AOF
    buffer to the file before it answers, except with ``appendfsync everysec`` while the
    background fsync of the last second is still running: then it postpones the write for up
    to 2 s (``INFO persistence`` counts those as ``aof_delayed_fsync``), so a busy machine can
    show a file without the newest acknowledged writes for a moment.
    """
    if wait <= 0:
        return _read_commands(path, limit)

    def complete() -> list[list[str]] | None:
        commands = _read_commands(path, limit)
        return commands if len(commands) >= limit else None

    return wait_until(complete, f"{path.name} to hold {limit} commands", wait)


def _read_commands(path: Path, limit: int) -> list[list[str]]:
    commands: list[list[str]] = []
    with open(path, "rb") as aof:
        while len(commands) < limit:
            header = aof.readline()
            if not header.startswith(b"*") or not header.endswith(b"\r\n"):
                break
            command = []
            for _ in range(int(header[1:])):
                size = aof.readline()
                if not size.startswith(b"$") or not size.endswith(b"\r\n"):
                    return commands  # a command still being written: not counted
                data = aof.read(int(size[1:]) + 2)
                if len(data) < int(size[1:]) + 2:
                    return commands
                command.append(data[:-2].decode(errors="replace"))
            commands.append(command)
    return commands
