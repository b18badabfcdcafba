"""Read a PyTorch checkpoint written by someone else without running any of its pickled code.

``torch.save`` writes a zip archive: ``<root>/data.pkl`` (a pickle of the saved object, protocol 2) and one file per
tensor storage under ``<root>/data/``. A pickle can name any importable callable and have it called on load
(``os.system``, ``builtins.open``, ...), so a checkpoint handed over by a user is never given to :func:`pickle.load`
nor to ``torch.load(weights_only=False)``. ``torch.load(weights_only=True)`` is safe but refuses the whole file as
soon as it meets one object outside its allow-list, and research checkpoints routinely carry some (a pandas
DataFrame of losses, numpy arrays of test indices): the authors' released models do.

:func:`read_checkpoint` unpickles ``data.pkl`` with an unpickler whose only callables are the ones that rebuild
tensors and plain containers (:data:`ALLOWED`). Every other global the pickle names becomes an inert
:class:`Dropped` placeholder: calling it, instantiating it or setting its state records nothing and runs nothing.
The caller keeps the tensors it wants and reports what was dropped (:func:`dropped_objects`).

Written for synth7t (rather than using ``torch.serialization``'s private unpickler) because that one raises on the
first unknown global instead of leaving a placeholder, and the rules here must not change with torch versions.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

PathLike = Union[str, Path]

__all__ = ["CheckpointReadError", "Dropped", "ALLOWED", "read_checkpoint", "dropped_objects"]


class CheckpointReadError(ValueError):
    """A file that is not a readable zip-format PyTorch checkpoint."""


class Dropped:
    """An object the checkpoint's pickle asked for that is not on the allow-list: inert, records only its name.

    The unpickler returns a subclass of this for every such global; calling it (pickle's REDUCE), instantiating
    it (NEWOBJ), setting its state (BUILD) or filling it (APPENDS, SETITEMS) does nothing and returns a Dropped.
    """

    origin = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __repr__(self) -> str:
        return f"<dropped {self.origin}>"


_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}


class _StorageType:
    """What ``torch.<X>Storage`` means inside the pickle: only a dtype (nothing of torch is called)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    import torch

    if not isinstance(storage, torch.Tensor):
        raise CheckpointReadError("a tensor in the checkpoint refers to a storage that is not in the archive")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(s < 0 for s in size + stride) or int(storage_offset) < 0:
        raise CheckpointReadError(f"a tensor with a negative size, stride or offset: {size}, {stride}")
    extent = int(storage_offset) + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else 0
    if extent > storage.numel():
        raise CheckpointReadError(f"a tensor of size {size} reaches past its storage ({storage.numel()} elements)")
    return torch.as_strided(storage, size, stride, int(storage_offset)).clone()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data


def _torch_size(values=()):
    return tuple(values)


#: The only callables a checkpoint's pickle may reach: module -> name -> what it gets instead.
ALLOWED: Dict[str, Dict[str, Any]] = {
    "collections": {"OrderedDict": collections.OrderedDict},
    "torch._utils": {"_rebuild_tensor_v2": _rebuild_tensor, "_rebuild_parameter": _rebuild_parameter},
    "torch": {"Size": _torch_size, **{name: _StorageType(name) for name in _STORAGE_DTYPES}},
    "builtins": {"set": set, "frozenset": frozenset},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive, self.root = archive, root
        self.dropped: List[str] = []
        self._storages: Dict[str, Any] = {}

    def find_class(self, module: str, name: str):
        allowed = ALLOWED.get(module, {})
        if name in allowed:
            return allowed[name]
        origin = f"{module}.{name}"
        self.dropped.append(origin)
        return type(f"Dropped_{name}", (Dropped,), {"origin": origin})

    def persistent_load(self, pid):
        import torch

        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointReadError(f"unknown persistent id in the checkpoint: {str(pid)[:80]}")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise CheckpointReadError(f"storage {key} has an unknown type {storage_type!r}")
        if key not in self._storages:
            entry = f"{self.root}/data/{key}"
            try:
                raw = self.archive.read(entry)
            except KeyError:
                raise CheckpointReadError(f"the checkpoint's pickle refers to storage {entry}, which the archive "
                                          "lacks (a truncated or edited file)") from None
            dtype = getattr(torch, storage_type.dtype)
            item = torch.empty((), dtype=dtype).element_size()
            if len(raw) % item:
                raise CheckpointReadError(f"storage {entry} has {len(raw)} bytes, not a multiple of {item}")
            buffer = bytearray(raw)  # writable, so that torch owns a copy the archive does not share
            self._storages[key] = torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
        return self._storages[key]


def _archive_root(archive: zipfile.ZipFile, path: PathLike) -> str:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointReadError(f"{path}: a zip file without one <root>/data.pkl: not a torch.save checkpoint")
    root = pickles[0].split("/")[0]
    order = f"{root}/byteorder"
    if order in archive.namelist() and archive.read(order).strip() not in (b"little", b""):
        raise CheckpointReadError(f"{path}: a big-endian checkpoint; re-save it on a little-endian machine")
    return root


def read_checkpoint(path: PathLike) -> Tuple[Any, List[str]]:
    """Unpickle a ``torch.save`` zip checkpoint with tensors and plain containers only.

    Returns:
        ``(object, dropped)``: the saved object, with every non-allowed global replaced by a :class:`Dropped`
        placeholder, and the dotted names of those globals in the order they were met.

    Raises:
        FileNotFoundError: no such file.
        CheckpointReadError: not a zip-format checkpoint (the pre-1.6 legacy format included), a truncated
            archive, or storages that do not match their tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointReadError(f"{path} is a git-lfs pointer, not the weights: run `git lfs pull` in the "
                                  "clone (git-lfs installed) to fetch the file itself")
    if not zipfile.is_zipfile(path):
        raise CheckpointReadError(f"{path}: not a zip-format torch checkpoint (torch.save since PyTorch 1.6 writes "
                                  "zip archives; re-save an older file with a current torch)")
    try:
        with zipfile.ZipFile(path) as archive:
            root = _archive_root(archive, path)
            unpickler = _RestrictedUnpickler(archive.read(f"{root}/data.pkl"), archive, root)
            obj = unpickler.load()
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointReadError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    return obj, unpickler.dropped


def dropped_objects(obj: Any, prefix: str = "") -> List[str]:
    """``"key.path: module.name"`` for every :class:`Dropped` inside dicts, lists and tuples of ``obj``."""
    out: List[str] = []
    if isinstance(obj, Dropped):
        return [f"{prefix or '<root>'}: {obj.origin}"]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += dropped_objects(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out += dropped_objects(v, f"{prefix}[{i}]")
    return out

