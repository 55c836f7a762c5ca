"""``streamrl tls dev-ca``: a local development CA and server certificate."""

from __future__ import annotations

from pathlib import Path

import typer

tls_app = typer.Typer(help="TLS certificates for development.", no_args_is_help=True)


@tls_app.command("dev-ca")
def dev_ca(
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the CA, certificate and keys."),
    host: list[str] = typer.Option(
        None,
        "--host",
        help="DNS name or IP address the server certificate is valid for (repeat; default: localhost, "
        "127.0.0.1, ::1).",
    ),
    days: int = typer.Option(825, "--days", min=1, help="Validity in days."),
    force: bool = typer.Option(
        False, "--force", help="Replace a CA already in --out (what it signed is no longer trusted)."
    ),
) -> None:
    """Make a development CA and a server certificate signed by it (PEM, plus a PKCS#12 keystore)."""
    from streamrl.tls import DEFAULT_HOSTS, make_dev_ca

    held = [out / name for name in ("ca.pem", "ca.key") if (out / name).exists()]
    if held and not force:
        raise typer.BadParameter(
            f"{held[0]} exists: a new CA would replace it, and every certificate and client "
            "that trusts it would stop working; pass --force to replace it",
            param_hint="'--out'",
        )
    hosts = tuple(host) if host else DEFAULT_HOSTS
    made = make_dev_ca(out, hosts, days=days)
    typer.echo(f"CA            {made.ca_file}   (security.ca_file, kafka.ssl_ca_location)")
    typer.echo(f"certificate   {made.cert_file}   (gateway/inference/streams tls.cert_file)")
    typer.echo(f"key           {made.key_file}   (tls.key_file)")
    typer.echo(
        f"keystore      {made.keystore_file}   (PKCS#12, password in {made.keystore_password_file.name})"
    )
    typer.echo(f"valid for     {', '.join(hosts)}, {days} days")


def register(app: typer.Typer) -> None:
    """Add the ``tls`` command group."""
    app.add_typer(tls_app, name="tls")
