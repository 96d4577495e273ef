"""The append-only file on disk: which files make it up, their size, the commands inside.

Redis 7.0+ (and Valkey) keep the AOF in a directory (``appendonlydir/``: a base snapshot, an
incremental file of commands, and a manifest that lists them); Redis 6.2 keeps one
``appendonly.aof``. These helpers read either layout, so lesson 03 shows the running server's.
"""

from __future__ import annotations

from pathlib import Path

from .server import LabServer


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


def aof_commands(path: Path, limit: int = 10) -> list[list[str]]:
    """The first ``limit`` commands in an AOF file (RESP), as lists of strings.

    An AOF is the write commands themselves, as clients send them. A file that starts with
    an RDB preamble (``REDIS...``, after a rewrite) holds a snapshot first: none returned.
    """
    commands: list[list[str]] = []
    with open(path, "rb") as aof:
        while len(commands) < limit:
            header = aof.readline()
            if not header.startswith(b"*"):
                break
            command = []
            for _ in range(int(header[1:])):
                size = int(aof.readline()[1:])
                command.append(aof.read(size + 2)[:-2].decode(errors="replace"))
            commands.append(command)
    return commands
