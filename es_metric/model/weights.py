"""What a model file's weights hold, read without torch and without inflating anything unbounded.

A model file is a zip, and so is its ``weights.pt`` (torch's format: ``<archive>/data.pkl``, a
pickle of the state dict, beside one record per tensor storage). Both directories are checked
before a byte is inflated: member count, each member's declared size, and its compression
ratio (a zip bomb declares a size thousands of times its compressed one; a reader inflates at
most the declared size, so the declared sizes bound the memory). The pickle is then read by a
restricted unpickler that knows only what a state dict holds (ordered dicts, tensors, storages)
and returns each tensor's shape, checking every storage against its record. A card is checked
against those shapes (backbone, head, dims) before anything is built from it.
"""
from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import IO, Mapping, NamedTuple, Sequence

from ..errors import ModelError, shown

__all__ = ["BACKBONE_SHAPES", "MAX_WEIGHTS_BYTES", "POOLS", "STAGES", "backbone_digest", "check_card_against_weights",
           "check_members", "last_stage_ends", "member_file", "stages_dim", "state_shapes"]

MAX_WEIGHTS_BYTES = 1 << 30     # the largest backbone here (resnet50 + an mlp head) is ~110 MB
MAX_PICKLE_BYTES = 16 << 20     # data.pkl: keys and shapes, a few kB per hundred tensors
MAX_MEMBERS = 4096
MAX_RATIO = 20                  # float weights deflate ~1.1:1, JSON ~5:1; a bomb ~1000:1
RATIO_FROM = 1 << 20            # smaller members may compress as they like
STORAGE_BYTES = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
                 "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
                 "ByteStorage": 1, "BoolStorage": 1, "ComplexFloatStorage": 8,
                 "ComplexDoubleStorage": 16}
# (digest of the backbone's parameter names and shapes, feature dims), per backbone; a unit
# test builds every registered backbone and holds this table to it.
BACKBONE_SHAPES = {
    "small-cnn": ("7f945739e504e12c", 128),
    "resnet18": ("1dd62c57ea5f06e0", 512),
    "resnet50": ("c117e41745e1d43e", 2048),
    "mobilenet_v3_large": ("33e80c3ece8d59e5", 960),
    "efficientnet_b0": ("8b4b79224e212664", 1280),
    "efficientnet-lite0": ("6f43fa7e1f57857a", 1280),
    "efficientnet-lite1": ("11a16181f8a0a74f", 1280),
    "efficientnet-lite2": ("9abe5389cf9c3290", 1280),
}


def check_members(zf: zipfile.ZipFile, where: str, caps: Mapping[str, int], default_cap: int,
                  total_cap: int) -> None:
    """ModelError unless every member of ``zf`` is stored or deflated, within its cap
    (``caps`` by name, else ``default_cap``), not inflating more than MAX_RATIO times its
    compressed size, and all of them within ``total_cap`` (read from the directory only)."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ModelError(f"{where} has {len(infos)} members (at most {MAX_MEMBERS})")
    total = 0
    for info in infos:
        cap, size = caps.get(info.filename, default_cap), info.file_size
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelError(f"{where}: {info.filename} uses compression {info.compress_type} "
                             "(only stored or deflated members are read)")
        if size > RATIO_FROM and size > MAX_RATIO * max(info.compress_size, 1):
            raise ModelError(f"{where}: {info.filename} would inflate {info.compress_size:,} bytes "
                             f"to {size:,} (a zip bomb); refused before inflating")
        if size > cap:
            raise ModelError(f"{where}: {info.filename} would inflate to {size:,} bytes, over "
                             f"the {cap:,}-byte limit; refused before inflating")
        total += size
    if total > total_cap:
        raise ModelError(f"{where} would inflate to {total:,} bytes, over the {total_cap:,}-byte "
                         "limit; refused before inflating")


class _Window(io.RawIOBase):
    """Bytes [start, start + size) of a file, as a seekable read-only file."""

    def __init__(self, fh: io.BufferedIOBase, start: int, size: int) -> None:
        super().__init__()
        self.fh, self.start, self.size, self.pos = fh, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = max(0, min(self.size, (0, self.pos, self.size)[whence] + offset))
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        self.fh.seek(self.start + self.pos)
        n = self.fh.readinto(memoryview(buffer)[: self.size - self.pos])
        self.pos += n or 0
        return n or 0


def member_file(zf: zipfile.ZipFile, fh: io.BufferedIOBase, name: str) -> IO[bytes]:
    """Member ``name`` of ``zf`` (opened on ``fh``) as a seekable file: a window on ``fh`` when
    it is stored (how es-metric writes weights), else inflated into memory (its declared size,
    which ``check_members`` bounded). A ZipExtFile seeks backwards by reading from the start."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        return io.BytesIO(zf.read(name))
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise ModelError(f"{name}: bad local header in the model file")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return io.BufferedReader(_Window(fh, info.header_offset + 30 + name_len + extra_len, info.file_size))


class _Storage(NamedTuple):
    key: str
    numel: int
    itemsize: int


class _Tensor(NamedTuple):
    shape: tuple[int, ...]
    storage: _Storage
    extent: int  # elements of the storage the tensor reaches


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rebuild(storage: object, offset: object, size: object, stride: object, *_rest: object) -> _Tensor:
    """torch._utils._rebuild_tensor_v2, as far as a shape check needs it."""
    if not (isinstance(storage, _Storage) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(_count(v) for v in (offset, *size, *stride))):
        raise pickle.UnpicklingError("a tensor with an unreadable size, stride or storage")
    assert isinstance(offset, int)
    empty = any(n == 0 for n in size)
    extent = 0 if empty else offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    return _Tensor(tuple(size), storage, extent)


class _ShapeReader(pickle.Unpickler):
    """Unpickles a state dict into shapes: no global beyond what a state dict names is found,
    so nothing in the file runs."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild
        if module == "torch" and name in STORAGE_BYTES:
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a state dict")

    def persistent_load(self, pid: object) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and pid[1] in STORAGE_BYTES and isinstance(pid[4], int) and pid[4] >= 0):
            raise pickle.UnpicklingError("a storage reference that torch does not write")
        return _Storage(str(pid[2]), pid[4], STORAGE_BYTES[pid[1]])


def state_shapes(weights: IO[bytes], where: str) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a torch state-dict file (``weights``: the file, seekable), after
    the bounds of its members and of every storage against its record are checked."""
    try:
        with zipfile.ZipFile(weights) as zf:
            check_members(zf, where, {}, MAX_WEIGHTS_BYTES, MAX_WEIGHTS_BYTES)
            pickles = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise ModelError(f"{where} is not a torch state-dict file (no data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            if zf.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
                raise ModelError(f"{where}: data.pkl is over {MAX_PICKLE_BYTES:,} bytes")
            with zf.open(pickles[0]) as fh:
                state = _ShapeReader(fh).load()
            sizes = {info.filename: info.file_size for info in zf.infolist()}
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a hostile pickle or zip raises: not weights
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"{where} is not a readable state dict: {why}") from None
    return _checked_shapes(state, sizes, prefix, where)


def _checked_shapes(state: object, sizes: Mapping[str, int], prefix: str, where: str) -> dict:
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _Tensor)
                                              for k, v in state.items()):
        raise ModelError(f"{where} holds something other than a state dict (names to tensors)")
    for name, tensor in state.items():
        record = sizes.get(f"{prefix}data/{tensor.storage.key}")
        if record is None or tensor.storage.numel * tensor.storage.itemsize > record:
            raise ModelError(f"{where}: the storage of {name} is larger than its record")
        if tensor.extent > tensor.storage.numel:
            raise ModelError(f"{where}: {name} reaches past the end of its storage")
    return {name: tensor.shape for name, tensor in state.items()}


def backbone_digest(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A digest of the backbone's parameter names and shapes (``backbone.*``)."""
    lines = sorted(f"{k}:{'x'.join(map(str, v))}" for k, v in shapes.items() if k.startswith("backbone."))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


#: How an EfficientNet-Lite's maps become features (encoder.py); other backbones pool ``avg`` only.
#: Here, not in encoder.py, so that a card's ``pool`` is checked without torch.
POOLS = ("avg", "gem", "stages")

#: ``stages`` pooling (encoder.py): the last convolution's average plus that of the last blocks of
#: this many stages before it (EfficientNet-Lite0: 112, 192 and 320 channels; 1,904-d in all).
#: Here, not in encoder.py, so that a card is checked against its weights without torch.
STAGES = 3


def last_stage_ends(widths: Sequence[int]) -> list[int]:
    """The indices of the blocks that end the last ``STAGES`` stages, given every block's output
    width in order (a stage: consecutive blocks of one width)."""
    ends = [i for i, w in enumerate(widths) if i + 1 == len(widths) or widths[i + 1] != w]
    return ends[-STAGES:]


def stages_dim(shapes: Mapping[str, tuple[int, ...]]) -> int:
    """The features ``stages`` pooling adds, read from the EfficientNet-Lite blocks' projection
    shapes (as the encoder reads them from its modules)."""
    widths: dict[int, int] = {}
    for key, shape in shapes.items():
        parts = key.split(".")
        if parts[:3] == ["backbone", "net", "_blocks"] and parts[4:] == ["_project_conv", "weight"]:
            widths[int(parts[3])] = shape[0]
    order = [widths[i] for i in sorted(widths)]
    return sum(order[i] for i in last_stage_ends(order))


def _head_dims(shapes: Mapping[str, tuple[int, ...]], head: str) -> tuple[int, int] | None:
    """(input, output) dims of the head the weights hold, if they hold a head of kind ``head``."""
    keys = {k for k in shapes if k.startswith("head.")}
    first, last = {"linear": ("head.weight", "head.weight"),
                   "mlp": ("head.0.weight", "head.2.weight")}.get(head, (None, None))
    if first is None or first not in keys or last not in keys:
        return None
    expected = {first, last, *(k.replace("weight", "bias") for k in (first, last))}
    a, b = shapes[first], shapes[last]
    if not keys <= expected or len(a) != 2 or len(b) != 2:
        return None
    return a[1], b[0]


def check_card_against_weights(card: Mapping, shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """ModelError, one line naming the mismatch, unless the weights are the card's backbone
    (every parameter's name and shape) with its head kind, making vectors of the card's dims."""
    backbone, head, dims = card.get("backbone"), card.get("head", "linear"), card.get("dims")
    if backbone not in BACKBONE_SHAPES:
        raise ModelError(f"{where}: the card names backbone {backbone!r}, which es-metric does not "
                         "know", hint="valid: " + ", ".join(sorted(BACKBONE_SHAPES)))
    stray = sorted(k for k in shapes if not k.startswith(("backbone.", "head.")))
    digest, (expected, feat_dim) = backbone_digest(shapes), BACKBONE_SHAPES[backbone]
    if stray or digest != expected:
        held = next((n for n, (d, _f) in BACKBONE_SHAPES.items() if d == digest and not stray), None)
        raise ModelError(f"{where}: the card says backbone {backbone} but the weights are "
                         + (f"a {held}" if held else "no backbone es-metric knows"
                            + (f" (e.g. {stray[0]})" if stray else "")))
    pool = card.get("pool", "avg")
    if pool not in POOLS:
        raise ModelError(f"{where}: the card names pooling {shown(pool)}, which es-metric does not know",
                         hint="valid: " + ", ".join(POOLS))
    if pool != "avg" and not backbone.startswith("efficientnet-lite"):
        raise ModelError(f"{where}: the card says {pool} pooling, which only an efficientnet-lite backbone "
                         f"has, but its backbone is {backbone}")
    if pool == "stages":
        feat_dim += stages_dim(shapes)
    if head == "none":
        made = feat_dim if not any(k.startswith("head.") for k in shapes) else None
    else:
        found = _head_dims(shapes, head)
        made = found[1] if found and found[0] == feat_dim else None
    if made is None:
        raise ModelError(f"{where}: the card says head {head!r} but the weights hold no such head "
                         f"on {feat_dim}-d {backbone} features")
    if dims != made:
        raise ModelError(f"{where}: the card says {dims!r} dims but the weights make {made}-d vectors")
    if card.get("feat_dim", feat_dim) != feat_dim:
        raise ModelError(f"{where}: the card says feat_dim {card.get('feat_dim')!r} but "
                         f"{backbone} makes {feat_dim}-d features")
