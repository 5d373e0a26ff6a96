"""Model versions on disk: implicit's npz, the id mapping and metadata; never a pickle.

Layout under ``settings.model_dir``::

    v000012/                 the newest version: the one a trainer loads
        als.npz              implicit's own format (np.savez of arrays/scalars)
        ids.json             {"user_ids": [...], "item_ids": [...]}, index order
        meta.json            version, trained_at, trained_seq (the last store
                             change sequence the fit saw), users, items,
                             interactions, params, popular items, fit_seconds
    v000011/
    v000010.rolled-back/     taken out of service by rollback(), kept to inspect

A version is written into a hidden temporary directory and renamed into place,
so a reader never sees half of one. Version numbers only grow, also past
rolled-back ones.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vrec.errors import ModelError
from vrec.model import AlsModel, F32Array, IntArray
from vrec.store.base import Store

logger = logging.getLogger(__name__)

FORMAT = 1
ROLLED_BACK = ".rolled-back"
_NAME = re.compile(r"^v(\d{6,})(\.rolled-back)?$")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The metadata of one saved version."""

    version: str
    path: Path
    trained_at: str
    trained_seq: int
    users: int
    items: int
    interactions: int
    params: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

    @property
    def number(self) -> int:
        """The version as a number, for ordering."""
        return _number(self.version)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "version": self.version,
            "path": str(self.path),
            "trained_at": self.trained_at,
            "trained_seq": self.trained_seq,
            "users": self.users,
            "items": self.items,
            "interactions": self.interactions,
            "params": self.params,
            "fit_seconds": self.fit_seconds,
        }

    def describe(self) -> str:
        """One line for people."""
        return (
            f"{self.version}  trained {self.trained_at}  seq={self.trained_seq}  "
            f"users={self.users} items={self.items} "
            f"interactions={self.interactions} fit={self.fit_seconds:.1f}s"
        )


@dataclass(frozen=True)
class SavedModel:
    """A loaded version: the model, its id mapping and its popular items."""

    model: AlsModel
    user_ids: list[str]
    item_ids: list[str]
    popular_idx: IntArray
    popular_scores: F32Array
    info: ModelInfo


def _number(version: str) -> int:
    match = _NAME.match(version)
    if match is None:
        raise ModelError(f"not a model version name: {version!r}")
    return int(match.group(1))


def utc_now() -> str:
    """The current time as ISO 8601 UTC, to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def version_names(model_dir: Path) -> list[str]:
    """Versions in service order, newest first (rolled-back ones left out)."""
    if not model_dir.is_dir():
        return []
    names = [
        p.name
        for p in model_dir.iterdir()
        if p.is_dir() and (m := _NAME.match(p.name)) and not m.group(2)
    ]
    return sorted(names, key=_number, reverse=True)


# TODO: nothing stops two trainers from writing one model directory; run
# one trainer per store, model_dir and Redis prefix.
def _next_number(model_dir: Path) -> int:
    numbers = [
        int(m.group(1))
        for p in model_dir.iterdir()
        if (m := _NAME.match(p.name)) is not None
    ]
    return max(numbers, default=0) + 1


def save_model(
    model_dir: Path,
    model: AlsModel,
    *,
    user_ids: list[str],
    item_ids: list[str],
    popular_idx: IntArray,
    popular_scores: F32Array,
    trained_seq: int,
    trained_at: str,
    interactions: int,
    params: dict[str, Any],
    fit_seconds: float,
) -> ModelInfo:
    """Write a new version and return its metadata; the version number is the next."""
    if len(user_ids) != model.n_users or len(item_ids) != model.n_items:
        raise ModelError(
            f"id mapping ({len(user_ids)} users, {len(item_ids)} items) does not "
            f"match the model ({model.n_users} users, {model.n_items} items)"
        )
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        version = f"v{_next_number(model_dir):06d}"
        tmp = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as exc:
        raise ModelError(f"cannot write to model_dir {model_dir}: {exc}") from exc
    info = ModelInfo(
        version=version,
        path=model_dir / version,
        trained_at=trained_at,
        trained_seq=trained_seq,
        users=model.n_users,
        items=model.n_items,
        interactions=interactions,
        params=params,
        fit_seconds=round(fit_seconds, 3),
    )
    meta = {
        "format": FORMAT,
        **info.to_dict(),
        "popular": {
            "item_idx": popular_idx.tolist(),
            "scores": popular_scores.tolist(),
        },
    }
    meta.pop("path")
    try:
        model.save(tmp / "als.npz")
        _write_json(tmp / "ids.json", {"user_ids": user_ids, "item_ids": item_ids})
        _write_json(tmp / "meta.json", meta)
        os.rename(tmp, info.path)
    except (OSError, ModelError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelError(f"cannot save model {version} in {model_dir}: {exc}") from exc
    return info


def _write_json(path: Path, body: Any) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(body, out, separators=(",", ":"))
        out.flush()
        os.fsync(out.fileno())


def _read_meta(path: Path) -> tuple[ModelInfo, dict[str, Any]]:
    try:
        with open(path / "meta.json", encoding="utf-8") as src:
            meta = json.load(src)
        info = ModelInfo(
            version=str(meta["version"]),
            path=path,
            trained_at=str(meta["trained_at"]),
            trained_seq=int(meta["trained_seq"]),
            users=int(meta["users"]),
            items=int(meta["items"]),
            interactions=int(meta["interactions"]),
            params=dict(meta.get("params", {})),
            fit_seconds=float(meta.get("fit_seconds", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"unreadable metadata in {path}: {exc}") from exc
    if info.version != path.name:
        raise ModelError(f"{path} holds metadata of version {info.version}")
    return info, meta


def list_versions(model_dir: Path) -> list[ModelInfo]:
    """Metadata of every version in service order, newest first.

    A version whose metadata cannot be read is logged and left out.
    """
    infos = []
    for name in version_names(model_dir):
        try:
            infos.append(_read_meta(model_dir / name)[0])
        except ModelError as exc:
            logger.warning("skipping model version=%s error=%s", name, exc)
    return infos


def load_model(model_dir: Path, version: str | None = None) -> SavedModel:
    """Load ``version`` (the newest when None) and check it is whole and consistent."""
    names = version_names(model_dir)
    if version is None:
        if not names:
            raise ModelError(f"no model versions in {model_dir}")
        version = names[0]
    path = model_dir / version
    info, meta = _read_meta(path)
    model = AlsModel.load(path / "als.npz")
    try:
        with open(path / "ids.json", encoding="utf-8") as src:
            ids = json.load(src)
        user_ids = [str(u) for u in ids["user_ids"]]
        item_ids = [str(i) for i in ids["item_ids"]]
        popular_idx = np.asarray(meta["popular"]["item_idx"], dtype=np.int64)
        popular_scores = np.asarray(meta["popular"]["scores"], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"unreadable id mapping in {path}: {exc}") from exc

    # Everything must agree, or the model would serve the wrong rows.
    if (len(user_ids), len(item_ids)) != (info.users, info.items):
        raise ModelError(f"{path}: id mapping does not match meta.json")
    model.check(info.users, info.items)
    if popular_idx.size and (popular_idx.min() < 0 or popular_idx.max() >= info.items):
        raise ModelError(f"{path}: popular items outside the model")
    return SavedModel(model, user_ids, item_ids, popular_idx, popular_scores, info)


def newest_usable(model_dir: Path, store: Store) -> SavedModel | None:
    """The newest version that loads and belongs to ``store``; None if none does.

    A version belongs to the store when the store has seen at least the
    change sequence it was trained up to and the store's first user and
    item ids are the version's (a rebuilt store assigns other indices).
    Unusable versions are logged and skipped.
    """
    for name in version_names(model_dir):
        try:
            saved = load_model(model_dir, name)
            _check_against(saved, store)
        except ModelError as exc:
            logger.error("cannot use model version=%s error=%s", name, exc)
            continue
        return saved
    return None


def _check_against(saved: SavedModel, store: Store) -> None:
    last_seq = store.last_seq()
    if saved.info.trained_seq > last_seq:
        raise ModelError(
            f"trained up to seq={saved.info.trained_seq} but the store ends at "
            f"seq={last_seq}: the store was replaced"
        )
    users = store.user_ids(0)[: saved.info.users]
    items = store.item_ids(0)[: saved.info.items]
    if users != saved.user_ids or items != saved.item_ids:
        raise ModelError("its id mapping differs from the store's indices")


def rollback(model_dir: Path) -> ModelInfo:
    """Take the newest version out of service; return the one now newest.

    The directory is renamed to ``<version>.rolled-back``, not deleted. A
    running trainer notices within seconds and serves the previous version.
    """
    names = version_names(model_dir)
    if len(names) < 2:
        raise ModelError(
            f"nothing to roll back to: {len(names)} version(s) in {model_dir}"
        )
    previous = _read_meta(model_dir / names[1])[0]
    newest = model_dir / names[0]
    try:
        os.rename(newest, newest.with_name(newest.name + ROLLED_BACK))
    except OSError as exc:
        raise ModelError(f"cannot roll back {newest}: {exc}") from exc
    logger.info("rolled back version=%s now=%s", names[0], previous.version)
    return previous


def _stale(path: Path, age_s: float = 3600.0) -> bool:
    """True for a leftover of a save that died (a live save takes seconds)."""
    try:
        return time.time() - path.stat().st_mtime > age_s
    except OSError:
        return False


def prune(model_dir: Path, keep: int, protect: str | None = None) -> list[str]:
    """Delete all but the newest ``keep`` versions (never ``protect``).

    Rolled-back versions older than the oldest one kept and leftover
    temporary directories (an hour old) go too. Returns the deleted directory names.
    """
    names = version_names(model_dir)
    kept = set(names[:keep]) | ({protect} if protect else set())
    oldest_kept = min((_number(n) for n in kept if n in names), default=0)
    doomed = [n for n in names if n not in kept]
    if model_dir.is_dir():
        for path in model_dir.iterdir():
            match = _NAME.match(path.name)
            old_rolled_back = bool(
                match and match.group(2) and int(match.group(1)) < oldest_kept
            )
            if old_rolled_back or (path.name.startswith(".tmp-") and _stale(path)):
                doomed.append(path.name)
    for name in doomed:
        shutil.rmtree(model_dir / name, ignore_errors=True)
    if doomed:
        logger.info("pruned model versions=%s", ",".join(sorted(doomed)))
    return doomed
