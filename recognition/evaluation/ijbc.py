"""IJB-B / IJB-C template verification (1:1) and identification (1:N), reference §5.5.

Reads the public evaluation layout::

    ROOT/meta/{name}_face_tid_mid.txt         "img_name template_id media_id"
    ROOT/meta/{name}_name_5pts_score.txt      "img_name x1 y1 ... x5 y5 faceness"
    ROOT/meta/{name}_template_pair_label.txt  "tid1 tid2 label"
    ROOT/meta/{name}_1N_gallery_{G1,G2}.csv   optional 1:N files (IJB-B: S1, S2)
    ROOT/meta/{name}_1N_probe_mixed.csv
    ROOT/loose_crop/{img_name}

and scores from image features with the protocol of insightface's ``eval_ijbc.py``: optional
L2 normalisation and faceness weighting per image, mean per media, sum of the media means per
template, L2 normalisation, cosine of template pairs, ROC over all pairs, TAR at each FAR
taken at the ROC point whose FAR is nearest. Everything is vectorised and in bounded memory
(IJB-C: 469,375 images, 15,658,489 pairs): one scatter-add for the templates, blocked float32
matrix products for the pairs, and a histogram of the impostor scores in which only the
genuine pairs and the impostors near each target FAR are rescored in float64, so that the
TARs are those of the float64 scores.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from parsing.core.align import align_face
from parsing.core.errors import DataError, InputError
from parsing.core.io import read_image
from recognition.evaluation.roc import FARS, far_key, screened_verification_report

FPIRS = (0.01, 0.1)
RANKS = (1, 5, 10)
PROTOCOL_NAMES = ("ijbc", "ijbb")
GALLERY_NAMES = {"ijbc": ("G1", "G2"), "ijbb": ("S1", "S2")}


# --------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class IJBProtocol:
    """The 1:1 verification protocol: one row per image, one entry per template pair."""

    root: Path
    name: str
    image_names: np.ndarray  # (N,) str, relative to ``root / "loose_crop"``
    templates: np.ndarray  # (N,) int64 template id of each image
    medias: np.ndarray  # (N,) int64 media id of each image
    landmarks: np.ndarray  # (N, 5, 2) float32, ArcFace five-point order (reference §5.1)
    faceness: np.ndarray  # (N,) float32 detector score
    pair_templates: np.ndarray  # (P, 2) int64 template ids
    pair_labels: np.ndarray  # (P,) bool, True = same subject

    @property
    def image_dir(self) -> Path:
        return self.root / "loose_crop"

    def __len__(self) -> int:
        return len(self.image_names)


@dataclass(frozen=True)
class IdentificationProtocol:
    """The 1:N mixed protocol: galleries and probes as (template ids, subject ids), unique."""

    galleries: dict[str, tuple[np.ndarray, np.ndarray]]
    probe_templates: np.ndarray
    probe_subjects: np.ndarray


def meta_path(root: str | os.PathLike, name: str, suffix: str) -> Path:
    """``root/meta/{name}_{suffix}``."""
    return Path(root) / "meta" / f"{name}_{suffix}"


def _lines(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, start=1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file ({what})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file ({exc})") from None


def _bad_line(path: Path, lineno: int, line: str, expected: str) -> DataError:
    return DataError(f"{path}, line {lineno}: expected {expected}, got {line.rstrip()!r}")


def _read_name_table(path: Path, n_numbers: int, number_type: type, expected: str,
                     what: str) -> tuple[np.ndarray, np.ndarray]:
    """Lines ``name v1 ... vK``: names (N,) str and values (N, K)."""
    names, values = [], []
    for lineno, line in _lines(path, what):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != n_numbers + 1:
            raise _bad_line(path, lineno, line, expected)
        try:
            values.append([number_type(p) for p in parts[1:]])
        except ValueError:
            raise _bad_line(path, lineno, line, expected) from None
        names.append(parts[0])
    if not names:
        raise DataError(f"{path}: no entries ({what})")
    return np.asarray(names), np.asarray(values)


def read_face_tid_mid(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``img_name template_id media_id`` lines -> (names, templates, medias)."""
    names, values = _read_name_table(Path(path), 2, int, "'img_name template_id media_id'",
                                     "image/template/media list")
    return names, values[:, 0].astype(np.int64), values[:, 1].astype(np.int64)


def read_name_5pts_score(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``img_name x1 y1 ... x5 y5 faceness`` lines -> (names, landmarks (N,5,2), faceness)."""
    names, values = _read_name_table(Path(path), 11, float,
                                     "'img_name x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 faceness'",
                                     "five points and faceness")
    values = values.astype(np.float32)
    return names, values[:, :10].reshape(-1, 5, 2), values[:, 10]


def read_template_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``tid1 tid2 label`` lines -> (pair template ids (P, 2) int64, labels (P,) bool).

    Parsed by numpy's C reader (15.7M lines in ~2.5 s); a malformed file is rescanned line by
    line to name the first bad line.
    """
    path = Path(path)
    expected = "'tid1 tid2 label' (integers, label 0 or 1)"
    try:
        table = np.loadtxt(path, dtype=np.int64, comments=None, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (template pairs)") from None
    except (ValueError, UnicodeDecodeError):
        table = None
    if table is None or table.shape[1] != 3 or not np.isin(table[:, 2], (0, 1)).all():
        for lineno, line in _lines(path, "template pairs"):
            parts = line.split()
            if parts and (len(parts) != 3 or not all(p.lstrip("-").isdigit() for p in parts)
                          or parts[2] not in ("0", "1")):
                raise _bad_line(path, lineno, line, expected)
        raise DataError(f"{path}: not a template pair list ({expected} per line)")
    if len(table) == 0:
        raise DataError(f"{path}: no entries (template pairs)")
    return table[:, :2].copy(), table[:, 2].astype(bool)


def read_protocol(root: str | os.PathLike, name: str | None = None) -> IJBProtocol:
    """Read the 1:1 protocol of an IJB-C (``name="ijbc"``) or IJB-B (``"ijbb"``) directory.

    ``name=None`` picks whichever of the two has a ``meta/{name}_face_tid_mid.txt``.
    """
    root = Path(root)
    if name is None:
        found = [n for n in PROTOCOL_NAMES if meta_path(root, n, "face_tid_mid.txt").is_file()]
        if not found:
            raise DataError(f"{root}: no meta/ijbc_face_tid_mid.txt or meta/ijbb_face_tid_mid.txt"
                            " (expected the IJB evaluation layout: meta/ and loose_crop/)")
        name = found[0]
    if name not in PROTOCOL_NAMES:
        raise InputError(f"protocol name must be one of {PROTOCOL_NAMES}, got {name!r}")
    media_file = meta_path(root, name, "face_tid_mid.txt")
    points_file = meta_path(root, name, "name_5pts_score.txt")
    names, templates, medias = read_face_tid_mid(media_file)
    point_names, landmarks, faceness = read_name_5pts_score(points_file)
    bad = np.flatnonzero(~(np.isfinite(landmarks).reshape(len(landmarks), -1).all(1)
                           & np.isfinite(faceness)))
    if len(bad):
        raise DataError(f"{points_file}, entry {bad[0] + 1}: landmarks and score must be finite")
    if len(point_names) != len(names):
        raise DataError(f"{points_file}: {len(point_names)} images but {media_file} lists "
                        f"{len(names)}; the two files must list the same images in order")
    mismatch = np.flatnonzero(point_names != names)
    if len(mismatch):
        i = mismatch[0]
        raise DataError(f"{points_file}, entry {i + 1}: image {str(point_names[i])!r} but "
                        f"{media_file} has {str(names[i])!r} there; both must list the same "
                        "images in the same order")
    pairs_file = meta_path(root, name, "template_pair_label.txt")
    pair_templates, labels = read_template_pairs(pairs_file)
    template_rows(np.unique(templates), pair_templates.ravel(), source=pairs_file)
    return IJBProtocol(root, name, names, templates, medias, landmarks, faceness,
                       pair_templates, labels)


def read_template_subjects(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A 1:N CSV (header with ``TEMPLATE_ID`` and ``SUBJECT_ID``, one row per image) ->
    unique template ids (sorted) and the subject id of each."""
    path = Path(path)
    rows = _lines(path, "1:N template list")
    try:
        _, header_line = next(rows)
    except StopIteration:
        raise DataError(f"{path}: empty file (1:N template list)") from None
    header = [h.strip().upper() for h in next(csv.reader([header_line]))]
    if "TEMPLATE_ID" not in header or "SUBJECT_ID" not in header:
        raise DataError(f"{path}, line 1: header must name TEMPLATE_ID and SUBJECT_ID columns, "
                        f"got {header_line.rstrip()!r}")
    t_col, s_col = header.index("TEMPLATE_ID"), header.index("SUBJECT_ID")
    ids = []
    for lineno, line in rows:
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        try:
            ids.append((int(fields[t_col]), int(fields[s_col])))
        except (IndexError, ValueError):
            raise _bad_line(path, lineno, line, "integer TEMPLATE_ID and SUBJECT_ID") from None
    if not ids:
        raise DataError(f"{path}: no entries (1:N template list)")
    table = np.unique(np.asarray(ids, dtype=np.int64), axis=0)
    templates, first = np.unique(table[:, 0], return_index=True)
    if len(templates) != len(table):
        dup = table[np.flatnonzero(np.diff(table[:, 0]) == 0)[0], 0]
        raise DataError(f"{path}: template {dup} is listed with more than one SUBJECT_ID")
    return templates, table[first, 1]


def read_identification_protocol(root: str | os.PathLike, name: str
                                  ) -> IdentificationProtocol | None:
    """The 1:N files of ``root/meta`` (G1/G2 for IJB-C, S1/S2 for IJB-B), or None if absent."""
    galleries = {g: meta_path(root, name, f"1N_gallery_{g}.csv") for g in GALLERY_NAMES[name]}
    probe = meta_path(root, name, "1N_probe_mixed.csv")
    if not probe.is_file() and not any(p.is_file() for p in galleries.values()):
        return None
    probe_templates, probe_subjects = read_template_subjects(probe)
    return IdentificationProtocol({g: read_template_subjects(p) for g, p in galleries.items()},
                                  probe_templates, probe_subjects)


def write_meta(protocol: IJBProtocol, identification: IdentificationProtocol | None = None
               ) -> None:
    """Write ``protocol.root/meta`` in the public layout (images go in ``loose_crop``)."""
    meta = protocol.root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    with open(meta_path(protocol.root, protocol.name, "face_tid_mid.txt"), "w") as f:
        f.writelines(f"{n} {t} {m}\n" for n, t, m in
                     zip(protocol.image_names, protocol.templates, protocol.medias, strict=True))
    with open(meta_path(protocol.root, protocol.name, "name_5pts_score.txt"), "w") as f:
        for n, pts, score in zip(protocol.image_names, protocol.landmarks, protocol.faceness,
                                 strict=True):
            f.write(f"{n} {' '.join(f'{v:.3f}' for v in pts.ravel())} {score:.3f}\n")
    np.savetxt(meta_path(protocol.root, protocol.name, "template_pair_label.txt"),
               np.column_stack([protocol.pair_templates, protocol.pair_labels]), fmt="%d")
    if identification is None:
        return
    lists = {f"1N_gallery_{g}.csv": v for g, v in identification.galleries.items()}
    lists["1N_probe_mixed.csv"] = (identification.probe_templates, identification.probe_subjects)
    names_of = {}
    for n, t in zip(protocol.image_names, protocol.templates, strict=True):
        names_of.setdefault(int(t), []).append(n)
    for suffix, (templates, subjects) in lists.items():
        with open(meta_path(protocol.root, protocol.name, suffix), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["TEMPLATE_ID", "SUBJECT_ID", "FILENAME"])
            for t, s in zip(templates, subjects, strict=True):
                writer.writerows([int(t), int(s), n] for n in names_of[int(t)])


# --------------------------------------------------------------------------- features
def template_rows(unique_templates: np.ndarray, ids: np.ndarray, source: str | os.PathLike
                  ) -> np.ndarray:
    """Row of each template id in the sorted ``unique_templates``; unknown ids raise.

    IJB template ids are small positive integers: a lookup table is 4x faster than a binary
    search over 31M ids; other ids fall back to ``np.searchsorted``. Rows are int32 (they
    index at most a few million templates) to halve the memory of 15.7M pairs; the rows of
    a (P, 2) pair list are stored column by column, so that each side is contiguous.
    """
    ids = np.asarray(ids)
    if len(unique_templates) == 0 or ids.size == 0:
        rows = np.full(ids.shape, -1, dtype=np.int32)
    elif unique_templates[0] >= 0 and unique_templates[-1] < 1 << 24:
        # one -1 entry past the largest template: larger ids are clipped onto it, negative
        # ones onto entry 0, which is -1 unless template 0 exists (then they are checked)
        table = np.full(int(unique_templates[-1]) + 2, -1, dtype=np.int32)
        table[unique_templates] = np.arange(len(unique_templates))
        rows = np.empty(ids.shape[::-1], dtype=np.int32).T
        if ids.ndim == 2:
            for j in range(ids.shape[1]):
                np.take(table, ids[:, j], out=rows[:, j], mode="clip")
        else:
            np.take(table, ids, out=rows, mode="clip")
        if unique_templates[0] == 0 and ids.min() < 0:
            rows[ids < 0] = -1
    else:
        rows = np.minimum(np.searchsorted(unique_templates, ids),
                          len(unique_templates) - 1).astype(np.int32)
        rows[unique_templates[rows] != ids] = -1
    if rows.size and rows.min() < 0:
        missing = np.flatnonzero(rows.ravel(order="C") < 0)
        raise DataError(f"{source}: template {ids.ravel()[missing[0]]} has no images in the "
                        f"image/template/media list ({len(missing)} such references)")
    return rows


def template_features(
    image_features: torch.Tensor | np.ndarray,
    templates: np.ndarray,
    medias: np.ndarray,
    faceness: torch.Tensor | np.ndarray | None = None,
    use_norm_score: bool = False,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, torch.Tensor]:
    """Aggregate image features (N, D) into L2-normalised template features (T, D) float64.

    Each image feature is L2-normalised unless ``use_norm_score`` (insightface's N1: keep the
    norm as a quality weight), multiplied by its ``faceness`` score if given (D1), averaged
    per (template, media) and the media means summed per template, then L2-normalised (a zero
    template stays zero). One weighted scatter-add over row chunks, in float64 on the
    features' device. Returns (sorted unique template ids, features).
    """
    feats = torch.as_tensor(image_features)
    templates, medias = np.asarray(templates), np.asarray(medias)
    if feats.dim() != 2 or templates.shape != (len(feats),) or medias.shape != (len(feats),):
        raise InputError(f"need (N, D) features with N template and media ids, got features "
                         f"{tuple(feats.shape)}, {templates.shape} templates, "
                         f"{medias.shape} medias")
    unique_templates = _unique(templates)
    template_index = template_rows(unique_templates, templates, "template ids")
    media_min = int(medias.min(initial=0))
    media_span = int(medias.max(initial=0)) - media_min + 1
    if len(unique_templates) * media_span < 1 << 62:  # (template, media id) fits one int64
        media_index = medias.astype(np.int64) - media_min
    else:
        _, media_index = np.unique(medias, return_inverse=True)
        media_span = int(media_index.max(initial=0)) + 1
    group_key = template_index.astype(np.int64) * media_span + media_index
    # image lists hold each media's images together: the groups are found among the runs of
    # equal keys (one sort of the runs, not of the images); a run-length-weighted count per
    # group is its image count however the runs fall
    run_start = np.ones(len(group_key), dtype=bool)
    np.not_equal(group_key[1:], group_key[:-1], out=run_start[1:])
    starts = np.flatnonzero(run_start)
    run_length = np.diff(np.append(starts, len(group_key)))
    _, run_group = np.unique(group_key[starts], return_inverse=True)
    group_size = np.bincount(run_group, weights=run_length)
    # mean per media, sum over media == each image weighted by 1 / (its media's image count)
    weight = np.repeat(1.0 / group_size[run_group], run_length)
    if faceness is not None:
        weight = weight * np.asarray(torch.as_tensor(faceness).cpu(), dtype=np.float64)
    device = feats.device
    weight_t = torch.from_numpy(weight).to(device)
    index_t = torch.from_numpy(template_index.astype(np.int64)).to(device)
    out = torch.zeros(len(unique_templates), feats.shape[1], dtype=torch.float64, device=device)
    # small chunks: the float64 copy stays in cache between the product and the scatter
    chunk = torch.empty(min(chunk_size, len(feats)), feats.shape[1], dtype=torch.float64,
                        device=device)
    for start in range(0, len(feats), chunk_size):
        x = chunk[:len(feats[start:start + chunk_size])].copy_(feats[start:start + chunk_size])
        w = weight_t[start:start + chunk_size, None]
        x.mul_(w if use_norm_score else w / _safe_norm(x))
        out.index_add_(0, index_t[start:start + chunk_size], x)
    return unique_templates, out.div_(_safe_norm(out))


def _non_decreasing(x: torch.Tensor) -> bool:
    if x.device.type == "cpu":  # numpy's comparison of small ints is ~8x torch's
        x = x.numpy()
    return bool((x[1:] >= x[:-1]).all())


def _unique(ids: np.ndarray) -> np.ndarray:
    """``np.unique(ids)``; small non-negative ids (IJB template ids) by a presence table."""
    if ids.size and ids.min() >= 0 and ids.max() < 1 << 24:
        present = np.zeros(int(ids.max()) + 1, dtype=bool)
        present[ids] = True
        return np.flatnonzero(present).astype(ids.dtype, copy=False)
    return np.unique(ids)


def _safe_norm(x: torch.Tensor) -> torch.Tensor:
    # sklearn.preprocessing.normalize semantics: zero rows are left as they are
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return torch.where(norm == 0, torch.ones_like(norm), norm)


def pair_scores(
    features: torch.Tensor,
    rows1: np.ndarray | torch.Tensor,
    rows2: np.ndarray | torch.Tensor,
    block_bytes: int = 1 << 26,
    min_density: float = 1 / 32,
    chunk_pairs: int = 1 << 16,
) -> np.ndarray:
    """Dot products ``features[rows1[k]] @ features[rows2[k]]`` for every pair k, in the
    features' dtype.

    Verification protocols compare a few thousand gallery templates with tens of thousands
    of probes, and need a large share of those products (IJB-C: 23%): the pairs are grouped
    by block of first-side templates, each block's products with all second-side templates
    are one matrix product of at most ``block_bytes``, and the pairs pick their entries from
    it, ``chunk_pairs`` at a time (on the CPU the chunk's positions stay in cache). The side
    with fewer distinct templates is blocked. Pair lists that need fewer than ``min_density``
    of the products use chunked gathered dot products instead.
    """
    features = torch.as_tensor(features)
    device = features.device
    r1 = torch.as_tensor(rows1, device=device).reshape(-1).contiguous()
    r2 = torch.as_tensor(rows2, device=device).reshape(-1).contiguous()
    if r1.shape != r2.shape or r1.is_floating_point() or r2.is_floating_point():
        raise InputError(f"pair rows must be two integer arrays of the same length, got "
                         f"{tuple(r1.shape)} {r1.dtype} and {tuple(r2.shape)} {r2.dtype}")
    n_pairs, n_templates = r1.numel(), features.shape[0]
    out = torch.empty(n_pairs, dtype=features.dtype, device=device)
    if n_pairs == 0:
        return out.cpu().numpy()
    used1 = torch.bincount(r1, minlength=n_templates) > 0
    used2 = torch.bincount(r2, minlength=n_templates) > 0
    n1, n2 = int(used1.sum()), int(used2.sum())
    if n1 > n2:
        r1, r2, used1, used2, n1, n2 = r2, r1, used2, used1, n2, n1
    if device.type != "cpu":
        chunk_pairs = n_pairs
    if n_pairs < min_density * n1 * n2:
        # float64 rows of 512: 256 pairs gather 2 MB, which stay in cache for the products
        chunk = max(1, min(chunk_pairs, (1 << 21) // (2 * features.element_size()
                                                      * features.shape[1])))
        for s in range(0, n_pairs, chunk):
            torch.linalg.vecdot(features[r1[s:s + chunk]], features[r2[s:s + chunk]],
                                out=out[s:s + chunk])
        return out.cpu().numpy()
    first, second = features[used1], features[used2]
    rows_per_block = max(1, block_bytes // (features.element_size() * n2))
    n_blocks = -(-n1 // rows_per_block)
    # per-template lookup tables: block of a first-side template, and a pair's position in
    # its block's (rows_per_block, n2) product matrix = offset1[first] + rank2[second]
    index_type = torch.int32 if rows_per_block * n2 < 1 << 31 else torch.int64
    rank1 = (torch.cumsum(used1, 0) - 1).to(index_type)
    rank2 = (torch.cumsum(used2, 0) - 1).to(index_type)
    offset1 = (rank1 % rows_per_block) * n2
    block_type = torch.int16 if n_blocks < 1 << 15 else torch.int32
    block = torch.index_select((rank1 // rows_per_block).to(block_type), 0, r1)
    # pair files list each gallery template's comparisons together: blocks are then slices
    order = None
    if not _non_decreasing(block):  # sort by block (16-bit keys: radix sort)
        keys = block.cpu().numpy().astype(np.uint16 if n_blocks <= 1 << 16 else np.uint32)
        order = torch.from_numpy(np.argsort(keys, kind="stable")).to(device)
        block, r1, r2 = block[order], r1[order], r2[order]
    bounds = torch.searchsorted(block, torch.arange(n_blocks + 1, dtype=block.dtype,
                                                    device=device)).tolist()
    del block
    in_block_order = out if order is None else torch.empty_like(out)
    products = torch.empty(min(rows_per_block, n1), n2, dtype=features.dtype, device=device)
    position = torch.empty(min(chunk_pairs, n_pairs), dtype=index_type, device=device)
    term = torch.empty_like(position)
    # the per-chunk gathers: numpy's on the CPU (one thread, no parallel region per call,
    # which costs a lot when other processes hold the cores), torch's elsewhere
    gather = ((lambda table, index, out: np.take(table, index, out=out)) if device.type == "cpu"
              else (lambda table, index, out: torch.index_select(table, 0, index, out=out)))
    views = [(x.numpy() if device.type == "cpu" else x) for x in (
        offset1, rank2, r1, r2, position, term, in_block_order, products.view(-1))]
    offset1_, rank2_, r1_, r2_, position_, term_, in_block_order_, products_flat = views
    for b in range(n_blocks):
        start, end = bounds[b], bounds[b + 1]
        if end > start:
            rows = first[b * rows_per_block:(b + 1) * rows_per_block]
            result = products[:len(rows)]
            if device.type == "cpu":
                # numpy's OpenBLAS GEMM runs 1.3x (float64) and 2.7x (float32) as fast as
                # torch's MKL one on the AMD CPU of benchmarks/RESULTS.md
                np.matmul(rows.numpy(), second.numpy().T, out=result.numpy())
            else:
                torch.matmul(rows, second.T, out=result)
            for s in range(start, end, chunk_pairs):
                e = min(s + chunk_pairs, end)
                p = gather(offset1_, r1_[s:e], position_[:e - s])
                p += gather(rank2_, r2_[s:e], term_[:e - s])
                gather(products_flat, p, in_block_order_[s:e])
    if order is not None:
        out[order] = in_block_order
    return out.cpu().numpy()


# --------------------------------------------------------------------------- 1:N
def identification_report(
    unique_templates: np.ndarray,
    features: torch.Tensor,
    protocol: IdentificationProtocol,
    ranks=RANKS,
    fpirs=FPIRS,
    source: str | os.PathLike = "1:N protocol",
) -> dict:
    """Open-set 1:N search of the mixed probes in each gallery (insightface ``ijb_evals``).

    Per gallery: probes whose subject is enrolled are mated searches, ranked by how many
    non-mated gallery templates score at least as high as the mate (ties count against the
    mate); the others give the non-mated maxima. TPIR at FPIR f uses the threshold at the
    ``max(int(n_nonmated * f), 1)``-th highest non-mated maximum and counts mated searches
    with the mate at rank 1 and above it. ``mean`` averages the galleries; its rank-k rates
    are over all probes (each probe is mated in one gallery).
    """
    probe = features[torch.from_numpy(template_rows(unique_templates, protocol.probe_templates,
                                                    source)).to(features.device)]
    report, counts = {}, {}
    for name, (gallery_templates, gallery_subjects) in protocol.galleries.items():
        if len(np.unique(gallery_subjects)) != len(gallery_subjects):
            raise DataError(f"{source}: gallery {name} enrols a subject more than once")
        rows = template_rows(unique_templates, gallery_templates, source)
        gallery = features[torch.from_numpy(rows).to(features.device)]
        order = np.argsort(gallery_subjects)
        pos = np.searchsorted(gallery_subjects[order], protocol.probe_subjects)
        pos[pos == len(order)] = 0
        mated = gallery_subjects[order][pos] == protocol.probe_subjects
        rank, mate_score, top = _search(probe, gallery,
                                        torch.from_numpy(order[pos]).to(features.device))
        # for non-mated probes the "mate" column was an arbitrary one: drop those
        rank, mate_score = rank[mated], mate_score[mated]
        nonmated_max = np.sort(top[~mated])[::-1]
        counts[name] = {k: int((rank <= k).sum()) for k in ranks}
        entry = {f"top{k}": counts[name][k] / max(len(rank), 1) for k in ranks}
        entry["mated_probes"] = int(mated.sum())
        entry["nonmated_probes"] = int((~mated).sum())
        tpir = {}
        for f in fpirs:
            if len(nonmated_max) == 0:
                tpir[far_key(f)] = float("nan")
                continue
            threshold = nonmated_max[max(int(len(nonmated_max) * f), 1) - 1]
            hits = np.count_nonzero((rank == 1) & (mate_score > threshold))
            tpir[far_key(f)] = hits / max(len(rank), 1)
        entry["tpir_at_fpir"] = tpir
        report[name] = entry
    n_probes = len(protocol.probe_templates)
    report["mean"] = {
        **{f"top{k}": sum(c[k] for c in counts.values()) / n_probes for k in ranks},
        "tpir_at_fpir": {
            far_key(f): float(np.mean([report[g]["tpir_at_fpir"][far_key(f)]
                                       for g in protocol.galleries]))
            for f in fpirs
        },
    }
    return report


def _search(probe: torch.Tensor, gallery: torch.Tensor, mate_column: torch.Tensor,
            block_bytes: int = 1 << 26) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe: rank of the given gallery column (1 + other columns scoring at least as
    high), its score, and the best score; in blocks of probes of bounded memory."""
    rows = max(1, block_bytes // (probe.element_size() * max(len(gallery), 1)))
    rank, mate_score, top = [], [], []
    for s in range(0, len(probe), rows):
        similarity = probe[s:s + rows] @ gallery.T
        mate = similarity.gather(1, mate_column[s:s + rows, None])
        rank.append((similarity >= mate).sum(1).cpu())
        mate_score.append(mate.squeeze(1).cpu())
        top.append(similarity.max(1).values.cpu())
    return tuple(torch.cat(x).numpy() for x in (rank, mate_score, top))


def evaluate_verification(
    image_features: torch.Tensor | np.ndarray,
    protocol: IJBProtocol,
    use_detector_score: bool = False,
    use_norm_score: bool = False,
) -> tuple[dict, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, torch.Tensor], np.ndarray]:
    """Features (N, D) of the protocol's images (flip-fused) -> (report, (fpr, tpr), (unique
    templates, template features), (P, 2) template rows of the pairs).

    The TAR@FAR table equals that of the float64 cosine scores (``pair_scores`` of the
    template features, on which ``recognition.roc.verification_report`` gives the same
    table): all pairs are scored in float32, whose error is bounded, and only the genuine
    pairs and the impostors near each target FAR are scored again in float64
    (``recognition.roc.screened_verification_report``).
    """
    feats = torch.as_tensor(image_features)
    if feats.dim() != 2 or len(feats) != len(protocol):
        raise InputError(f"features must be ({len(protocol)}, D) for the {len(protocol)} images "
                         f"of {protocol.root}, got {tuple(feats.shape)}")
    unique_templates, tfeats = template_features(
        feats, protocol.templates, protocol.medias,
        faceness=protocol.faceness if use_detector_score else None,
        use_norm_score=use_norm_score)
    pairs_file = meta_path(protocol.root, protocol.name, "template_pair_label.txt")
    rows = template_rows(unique_templates, protocol.pair_templates, pairs_file)
    exact_feats = tfeats.cpu()
    approx = pair_scores(exact_feats.float(), rows[:, 0], rows[:, 1])

    def exact(pairs: np.ndarray) -> np.ndarray:
        return pair_scores(exact_feats, rows[pairs, 0], rows[pairs, 1])

    report, fpr, tpr = screened_verification_report(
        approx, protocol.pair_labels, float32_dot_error(exact_feats.shape[1]), exact)
    return report, (fpr, tpr), (unique_templates, tfeats), rows


def float32_dot_error(dim: int) -> float:
    """Bound on |float32 dot product - exact| for vectors of norm <= 1 in ``dim`` dimensions
    rounded to float32: rounding the inputs (2u), then any order of ``dim`` multiply-adds
    (gamma_dim <= 1.01 dim u), u = 2^-24; plus the float64 rounding of the exact score."""
    return (1.01 * dim + 2) * 2.0 ** -24 + 1e-12


class LooseCrops(torch.utils.data.Dataset):
    """``protocol.image_dir`` images as uint8 (3, H, W) tensors with their five points."""

    def __init__(self, protocol: IJBProtocol) -> None:
        self.protocol = protocol

    def __len__(self) -> int:
        return len(self.protocol)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.protocol.image_dir / str(self.protocol.image_names[index]))
        return (torch.tensor(image).permute(2, 0, 1),
                torch.from_numpy(self.protocol.landmarks[index]))


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """Stack crops of different sizes by zero-padding right and bottom. The alignment warp
    reads zeros outside an image anyway: the padding changes no output pixel beyond float
    rounding (at most 1 grey level on < 0.1% of pixels)."""
    height = max(image.shape[1] for image, _ in batch)
    width = max(image.shape[2] for image, _ in batch)
    images = torch.zeros(len(batch), 3, height, width, dtype=torch.uint8)
    for i, (image, _) in enumerate(batch):
        images[i, :, :image.shape[1], :image.shape[2]] = image
    return images, torch.stack([points for _, points in batch])


def aligned_batches(protocol: IJBProtocol, batch_size: int, workers: int,
                    device: torch.device) -> Iterator[torch.Tensor]:
    """Aligned 112x112 uint8 faces of the protocol's images, in order, batch by batch."""
    loader = torch.utils.data.DataLoader(LooseCrops(protocol), batch_size=batch_size,
                                         num_workers=workers, collate_fn=pad_collate)
    for images, points in loader:
        yield align_face(images.to(device), points.to(device))


def format_table(name: str, report: dict) -> str:
    head = f"{name + ' 1:1  FAR':16s}" + "".join(f"{far_key(f):>8s}" for f in FARS)
    row = f"{'TAR (%)':16s}" + "".join(f"{100 * report['tar_at_far'][far_key(f)]:8.2f}"
                                     for f in FARS)
    return f"{head}   AUC (%)\n{row}  {100 * report['auc']:8.2f}"
