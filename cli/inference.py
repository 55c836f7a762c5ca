"""``streamrl inference`` (serve the policy) and ``streamrl model build`` (make a tiny local model)."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from


def register(app: typer.Typer) -> None:
    """Add the ``inference`` command and the ``model`` group to the root app."""

    @app.command("inference")
    def _inference(
        config: Path | None = ConfigOption,
        backend: str | None = typer.Option(
            None, "--backend", help="cpu | vllm (default: inference.backend)."
        ),
        model: Path | None = typer.Option(None, "--model", help="HF model dir (default: inference.model)."),
        host: str | None = typer.Option(None, "--host", help="Bind address (default: inference.host)."),
        port: int | None = typer.Option(None, "--port", help="HTTP port (default: inference.port)."),
        version: int | None = typer.Option(
            None, "--policy-version", help="Policy version of --model (default: inference.initial_version)."
        ),
        reload: bool | None = typer.Option(None, "--reload/--no-reload", help="Follow `checkpoints`."),
        attach: str | None = typer.Option(None, "--attach", help="vllm: URL of a running `vllm serve`."),
    ) -> None:
        """Serve the policy with an OpenAI-compatible API (token ids, logprobs, policy version)."""
        settings = settings_from(config)
        inf = settings.inference
        if backend is not None:
            if backend not in ("cpu", "vllm"):
                raise typer.BadParameter(f"--backend must be cpu or vllm, got {backend!r}")
            inf.backend = backend  # type: ignore[assignment]
        if model is not None:
            inf.model = str(model)
        if host is not None:
            inf.host = host
        if port is not None:
            inf.port = port
        if version is not None:
            inf.initial_version = version
        if reload is not None:
            inf.reload = reload
        if attach is not None:
            inf.vllm.attach_url = attach

        from streamrl.inference.run import run_inference

        run_inference(settings)

    model_app = typer.Typer(help="Build small local policy models.", no_args_is_help=True)
    app.add_typer(model_app, name="model")

    @model_app.command("build")
    def _build(
        out: Path = typer.Option(..., "--out", help="Directory to write the Hugging Face model into."),
        preset: str = typer.Option("tiny", "--preset", help="tiny (~0.3M params, 2 layers) | small (~5M)."),
        tokenizer: str = typer.Option(
            "bpe", "--tokenizer", help="bpe (byte-level BPE) | char (one token per char)."
        ),
        arch: str = typer.Option("llama", "--arch", help="llama | qwen2."),
        text: list[Path] | None = typer.Option(
            None, "--text", help="Tokenizer training file(s); default GSM8K train."
        ),
        max_chars: int | None = typer.Option(
            None, "--max-chars", help="Use at most this many characters of text."
        ),
        vocab_size: int | None = typer.Option(
            None, "--vocab-size", help="BPE vocabulary size (default: preset's)."
        ),
        byte_fallback: bool = typer.Option(
            False, "--byte-fallback", help="char: add byte tokens (lossless)."
        ),
        seed: int = typer.Option(0, "--seed", help="Weight initialisation seed."),
    ) -> None:
        """Build a randomly initialised Llama/Qwen2-style model with a locally trained tokenizer."""
        if tokenizer not in ("bpe", "char"):
            raise typer.BadParameter(f"--tokenizer must be bpe or char, got {tokenizer!r}")
        if arch not in ("llama", "qwen2"):
            raise typer.BadParameter(f"--arch must be llama or qwen2, got {arch!r}")
        from streamrl.inference.model_builder import build_model

        report = build_model(
            out,
            preset=preset,
            tokenizer=tokenizer,  # type: ignore[arg-type]
            arch=arch,  # type: ignore[arg-type]
            text=text or None,
            max_chars=max_chars,
            vocab_size=vocab_size,
            byte_fallback=byte_fallback,
            seed=seed,
        )
        typer.echo(
            f"built {report.arch} model ({report.preset}, {report.tokenizer} tokenizer, vocab {report.vocab_size}, "
            f"{report.num_parameters / 1e6:.2f}M parameters) in {report.path}"
        )
