"""``streamrl worker`` (rollout worker) and ``streamrl gateway`` (standalone recording gateway)."""

from __future__ import annotations

from pathlib import Path

import typer

from streamrl.cli.common import ConfigOption, settings_from


def register(app: typer.Typer) -> None:
    """Add ``worker`` and ``gateway`` to the root app."""

    @app.command("worker")
    def worker(
        agent: str | None = typer.Option(
            None,
            "--agent",
            "-a",
            help="Agent to run: package.module:function (or :Class). Default: worker.agent.",
        ),
        concurrency: int | None = typer.Option(None, "--concurrency", "-n", help="Rollouts at once."),
        gateway_url: str | None = typer.Option(
            None,
            "--gateway-url",
            help="Use a standalone gateway (streamrl gateway) instead of the in-process one.",
        ),
        upstream_url: str | None = typer.Option(
            None, "--upstream-url", help="Inference service OpenAI base URL (default: gateway.upstream_url)."
        ),
        worker_id: str | None = typer.Option(None, "--worker-id", help="Name in trajectories and logs."),
        config: Path | None = ConfigOption,
    ) -> None:
        """Join the workers consumer group on samples and run rollouts through the agent until SIGTERM."""
        settings = settings_from(
            config,
            {
                "--agent": ("worker.agent", agent),
                "--concurrency": ("worker.concurrency", concurrency),
                "--gateway-url": ("worker.gateway_url", gateway_url),
                "--upstream-url": ("gateway.upstream_url", upstream_url),
                "--worker-id": ("worker.worker_id", worker_id),
            },
        )
        spec = settings.worker.agent
        if not spec:
            raise typer.BadParameter(
                "give package.module:function (or set worker.agent)", param_hint="'--agent'"
            )
        import asyncio
        import signal

        from streamrl.consumers.runner import load_agent
        from streamrl.consumers.worker import RolloutWorker

        runner = load_agent(spec, key="--agent" if agent else "worker.agent")

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await RolloutWorker(settings, runner).run(stop)

        asyncio.run(main())

    @app.command("gateway")
    def gateway(
        host: str | None = typer.Option(None, "--host", help="Bind address (default: gateway.host)."),
        port: int | None = typer.Option(None, "--port", "-p", help="Port (default: gateway.port)."),
        upstream_url: str | None = typer.Option(
            None, "--upstream-url", help="Inference service OpenAI base URL (default: gateway.upstream_url)."
        ),
        config: Path | None = ConfigOption,
    ) -> None:
        """Serve the recording OpenAI-compatible gateway standalone (workers attach with --gateway-url)."""
        settings = settings_from(
            config,
            {
                "--host": ("gateway.host", host),
                "--port": ("gateway.port", port),
                "--upstream-url": ("gateway.upstream_url", upstream_url),
            },
        )
        import asyncio
        import signal

        from streamrl.consumers.gateway import Gateway
        from streamrl.consumers.sink import KafkaSink
        from streamrl.kafka import EventProducer
        from streamrl.metrics import serve_metrics
        from streamrl.schemas.serde import Serde
        from streamrl.security import credentials, server_ssl_context

        creds = credentials(settings.security)
        tls = server_ssl_context(settings.gateway.tls)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            serve_metrics(settings.gateway.metrics_port, token=creds.metrics_token)
            producer = EventProducer(settings)
            serde = Serde(registry_url=settings.kafka.schema_registry_url)
            gw = Gateway(
                settings.gateway,
                KafkaSink(producer, serde, settings.topics.name, loop),
                control=True,
                credentials=creds,
            )
            url = await gw.start(ssl_context=tls)
            typer.echo(f"gateway listening on {url} (upstream {settings.gateway.upstream_url})", err=True)
            try:
                await stop.wait()
            finally:
                await gw.stop()
                await loop.run_in_executor(None, producer.close, 30.0)

        asyncio.run(main())
