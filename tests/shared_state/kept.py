"""Where a test finds the contents of stored files, whichever store its server runs on: under the data
dir with SQLite, in the `blobs` table when instances share the store (runs/files.py).

Names are the server-made ones: "attachments/<bucket>/<path>", "documents/<id>".
"""
from __future__ import annotations

from pathlib import Path

from store import Store, blobs


async def kept(db: Store, data_dir: Path, name: str) -> bytes | None:
    """The content kept as `name`, or None."""
    if db.shared:
        return await blobs.get(db, name)
    path = data_dir / name
    return path.read_bytes() if path.is_file() else None


async def kept_names(db: Store, data_dir: Path, prefix: str) -> set[str]:
    """The names of the contents kept under `prefix` (e.g. "attachments/")."""
    if db.shared:
        rows = await db.read(lambda c: c.execute_fetchall("SELECT name FROM blobs WHERE name LIKE ?", (prefix + "%",)))
        return {r[0] for r in rows}
    root = data_dir / prefix
    return {str(p.relative_to(data_dir)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


async def forget(db: Store, data_dir: Path, name: str) -> None:
    """The content kept as `name` is gone (its record stays), as a file deleted behind the server's back."""
    if db.shared:
        await blobs.delete(db, name)
    else:
        (data_dir / name).unlink()


async def keep(db: Store, data_dir: Path, name: str, data: bytes) -> None:
    """Keep `data` as `name` where the server would (without its record), as an older server left it."""
    if db.shared:
        await blobs.put(db, name, data)
    else:
        path = data_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
