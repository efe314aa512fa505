"""Predict a mask store for a whole data set, sharded over processes and resumable.

``python -m parsing.predict --checkpoint runs/parser --images DATA --store DATA/masks.rec`` runs
:func:`predict_store`; under ``torchrun --nproc_per_node=N`` each process takes its share.

The images (the keys of ``train.rec``, or the files of an image folder in sorted order) are
cut into shards of ``shard_size`` consecutive images; shard ``s`` is predicted by rank
``s % world_size`` into ``STORE.parts/shard-{s:06d}.rec/.idx`` (written under temporary names,
flushed to disk and renamed), then marked done by ``shard-{s:06d}.json``. The same command
started again after a kill, with any number of processes, skips the shards marked done.
When every shard is done, rank 0 merges them into the store (:func:`merge_stores`: each key
once), checks that every image has its mask, and deletes the parts.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from parsing.core.errors import DataError, InputError
from parsing.core.io import atomic_write, decode_image, list_images, model_files
from parsing.core.maskstore import MaskStore, MaskStoreWriter, merge_stores, store_paths
from parsing.core.paths import output_file
from parsing.core.pixels import normalise
from parsing.core.progress import progress_bar
from parsing.core.recordio import RecordIOReader, read_layout
from parsing.core.samples import BadSample
from parsing.parser.inference import ImageFiles, Parser

__all__ = ["PredictionInputs", "RecordImages", "open_inputs", "predict_store"]

log = logging.getLogger(__name__)
FORMAT = "fserasing.maskstore.prediction/1"


class RecordImages(Dataset):
    """The images of a ``.rec`` file as normalised float (3, H, W) tensors with their position."""

    def __init__(self, reader: RecordIOReader, keys: Sequence[int], skip_bad: bool = False):
        self.reader, self.keys, self.skip_bad = reader, list(keys), skip_bad

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | BadSample:
        key = self.keys[i]
        try:
            payload = self.reader.read_header(key)[1]
            image = decode_image(payload, self.reader.where(key))
        except DataError as exc:
            if self.skip_bad:
                return BadSample(str(exc))
            raise
        return normalise(torch.from_numpy(image).permute(2, 0, 1)), i


@dataclass
class PredictionInputs:
    """What to predict: the images, each one's store key, and its name (ImageFolder only)."""

    dataset: Dataset
    keys: list[int]
    names: list[str] | None
    source: Path

    def fingerprint(self) -> str:
        """SHA-256 of the keys and names (in chunks: WebFace42M has 42M of them)."""
        digest = hashlib.sha256(np.asarray(self.keys, dtype=np.int64).tobytes())
        for i in range(0, len(self.names or ()), 100_000):
            digest.update("\n".join(self.names[i: i + 100_000]).encode() + b"\n")
        return digest.hexdigest()


def open_inputs(images: str | os.PathLike, skip_bad: bool = False) -> PredictionInputs:
    """A ``train.rec`` (or its folder): keys are its image keys; otherwise an image folder or
    list file (:func:`list_images`): keys 0..N-1, named by relative path."""
    path = Path(images)
    if path.suffix == ".rec" or (path / "train.rec").is_file():
        reader = RecordIOReader(path if path.suffix == ".rec" else path / "train.rec")
        keys = read_layout(reader)[0]
        if not keys:
            raise InputError(f"--images {path}: no image records")
        return PredictionInputs(RecordImages(reader, keys, skip_bad), keys, None, path)
    paths, rels = list_images(path)
    return PredictionInputs(ImageFiles(paths, skip_bad), list(range(len(paths))),
                            [r.as_posix() for r in rels], path)


def _write_json(obj: dict[str, Any], path: Path) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f)


class _Shards:
    """The shard files of one prediction in ``STORE.parts/``."""

    def __init__(self, parts: Path, n_images: int, shard_size: int) -> None:
        self.parts, self.n_images, self.size = parts, n_images, shard_size
        self.count = -(-n_images // shard_size)

    def range(self, s: int) -> range:
        return range(s * self.size, min(self.n_images, (s + 1) * self.size))

    def rec(self, s: int) -> Path:
        return self.parts / f"shard-{s:06d}.rec"

    def marker(self, s: int) -> Path:
        return self.parts / f"shard-{s:06d}.json"

    def done(self, s: int) -> dict[str, Any] | None:
        path = self.marker(s)
        return json.loads(path.read_text()) if path.is_file() else None

    def commit(self, s: int, writer: MaskStoreWriter, tmp: Path, skipped: list[str]) -> None:
        writer.close()
        os.replace(tmp, self.rec(s))
        os.replace(tmp.with_suffix(".idx"), self.rec(s).with_suffix(".idx"))
        _write_json({"shard": s, "written": writer.count, "skipped": skipped}, self.marker(s))


def _distributed() -> tuple[int, int, int, bool]:
    """(rank, world size, local rank, whether this call started the process group)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    started = False
    if world > 1 and not dist.is_initialized():  # gloo: only barriers and tiny reductions
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
        started = True
    return (int(os.environ.get("RANK", 0)), world, int(os.environ.get("LOCAL_RANK", 0)),
            started)


def _check_manifest(parts: Path, manifest: dict[str, Any], rank: int, world: int) -> None:
    path = parts / "manifest.json"
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            _write_json(manifest, path)
    if world > 1:
        dist.barrier()
    saved = json.loads(path.read_text())
    differ = [k for k in manifest if saved.get(k) != manifest[k]]
    if differ:
        raise InputError(f"{parts}: holds an interrupted prediction of other inputs ("
                         f"{', '.join(differ)} differ); remove it or choose another --store")


def predict_store(
    checkpoint: str | os.PathLike,
    images: str | os.PathLike,
    store: str | os.PathLike,
    *,
    batch_size: int = 64,
    workers: int = 2,
    device: str = "cpu",
    shard_size: int = 10_000,
    skip_bad: bool = False,
    overwrite: bool = False,
) -> dict[str, Any] | None:
    """Predict the mask of every image into ``store``; rank 0 returns the summary.

    The summary has the store, its mask count, the shards (and how many were already done),
    the faces predicted by this run, its seconds and faces/s over all processes, and the
    skipped images (``skip_bad``; they have no mask, so training on them needs them removed).
    The store must not exist (unless ``overwrite``; an interrupted merge of this prediction
    is redone) nor lie on or inside the inputs.
    """
    rec, idx = store_paths(store)
    parts = rec.with_name(rec.name + ".parts")
    if shard_size < 1:
        raise InputError(f"--shard-size {shard_size}: must be at least 1")
    model_file = model_files(checkpoint)
    inputs = open_inputs(images, skip_bad)
    sources = ([inputs.dataset.reader.rec_path, inputs.dataset.reader.idx_path]
               if isinstance(inputs.dataset, RecordImages) else [inputs.source])
    for path in (rec, idx):  # files of an interrupted run of this prediction are its own
        output_file(path, {"--images": sources, "--checkpoint": model_file}, flag="--store",
                    overwrite=overwrite or parts.is_dir())
    rank, world, local_rank, started = _distributed()
    try:
        if device.startswith("cuda") and ":" not in device:
            device = f"cuda:{local_rank}"
        shards = _Shards(parts, len(inputs.keys), shard_size)
        _check_manifest(parts, {
            "format": FORMAT, "images": str(inputs.source.resolve()),
            "checkpoint": str(model_file[0].resolve()), "shard_size": shard_size,
            "n_images": len(inputs.keys), "keys_sha256": inputs.fingerprint()}, rank, world)
        already = sum(shards.done(s) is not None for s in range(shards.count))
        mine = [s for s in range(rank, shards.count, world) if shards.done(s) is None]
        if rank == 0 and already:
            log.info("resuming %s: %d of %d shards already done", parts, already, shards.count)
        parser = Parser.from_checkpoint(checkpoint, device, batch_size)
        start = time.perf_counter()
        faces = _predict_shards(parser, inputs, shards, mine, batch_size, workers, rank)
        seconds = time.perf_counter() - start
        totals = torch.tensor([float(faces), seconds], dtype=torch.float64)
        if world > 1:
            counts = totals[:1].clone()
            dist.all_reduce(counts)
            dist.all_reduce(totals[1:], op=dist.ReduceOp.MAX)
            totals[0] = counts[0]
            dist.barrier()  # every shard is committed before rank 0 merges
        if rank != 0:
            return None
        summary = _merge(inputs, shards, rec)
        faces, seconds = int(totals[0]), float(totals[1])
        return {**summary, "shards": shards.count, "shards_already_done": already,
                "world_size": world, "faces_predicted": faces, "seconds": round(seconds, 3),
                "faces_per_s": round(faces / seconds, 1) if faces else None}
    finally:
        if started:
            dist.destroy_process_group()


def _predict_shards(parser: Parser, inputs: PredictionInputs, shards: _Shards,
                    mine: list[int], batch_size: int, workers: int, rank: int) -> int:
    """Predict the shards ``mine`` in order, committing each when its last image is in."""
    order = [i for s in mine for i in shards.range(s)]
    if not order:
        return 0
    loader = DataLoader(Subset(inputs.dataset, order), batch_size=batch_size,
                        num_workers=workers, collate_fn=list)
    bar = progress_bar(total=len(order), desc=f"predict (rank {rank})", unit="face")
    cursor, faces = 0, 0
    writer: MaskStoreWriter | None = None
    tmp = Path()
    skipped: list[str] = []
    for batch in loader:
        good = [(j, s) for j, s in enumerate(batch) if not isinstance(s, BadSample)]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for j, (image, _) in good:
            by_size.setdefault(tuple(image.shape), []).append(j)
        maps: dict[int, torch.Tensor] = {}
        for js in by_size.values():
            out = parser(torch.stack([batch[j][0] for j in js])).cpu()
            maps.update(zip(js, out, strict=True))
        for j, sample in enumerate(batch):
            pos = order[cursor + j]
            s = pos // shards.size
            if writer is None:
                tmp = shards.parts / f".shard-{s:06d}.rank{rank}.rec"
                writer, skipped = MaskStoreWriter(tmp), []
            if isinstance(sample, BadSample):
                skipped.append(sample.error)
            else:
                name = inputs.names[pos] if inputs.names is not None else ""
                writer.write(inputs.keys[pos], maps[j], name)
            if pos + 1 == shards.range(s).stop:
                shards.commit(s, writer, tmp, skipped)
                writer = None
        cursor += len(batch)
        faces += len(good)
        bar.update(len(batch))
    bar.close()
    return faces


def _merge(inputs: PredictionInputs, shards: _Shards, rec: Path) -> dict[str, Any]:
    markers = [shards.done(s) for s in range(shards.count)]
    missing = [s for s, m in enumerate(markers) if m is None]
    if missing:
        raise DataError(f"{shards.parts}: shard {missing[0]} was not predicted "
                        f"({len(missing)} missing)")
    skipped = [e for m in markers for e in m["skipped"]]
    n = merge_stores([shards.rec(s) for s, m in enumerate(markers) if m["written"]], rec)
    if n + len(skipped) != len(inputs.keys):
        raise DataError(f"{rec}: {n} masks and {len(skipped)} skipped images for "
                        f"{len(inputs.keys)} images")
    if not skipped:  # the store must serve exactly these images
        names = inputs.names if inputs.names is not None else [str(k) for k in inputs.keys]
        MaskStore(rec).check_keys(names, str(inputs.source))
    shutil.rmtree(shards.parts)
    return {"store": str(rec), "masks": n, "skipped": skipped}
