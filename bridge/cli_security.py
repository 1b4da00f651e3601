"""The shell's security commands: `linebridge pki …`, `linebridge user add`, `linebridge audit`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from bridge.errors import ConfigurationError
from bridge.journal import JOURNAL_FILE
from bridge.security.pki import Pki
from bridge.security.users import ROLES, add_certificate_user, add_user

pki_app = typer.Typer(
    no_args_is_help=True, help="The OPC UA PKI folder: which client certificates are trusted."
)
user_app = typer.Typer(no_args_is_help=True, help="OPC UA users and their roles.")
PKI_DIR = typer.Option(Path("var/pki"), "--pki-dir", help="the bridge's PKI folder")


@pki_app.command("list")
def pki_list(pki_dir: Path = PKI_DIR) -> None:
    """List trusted and rejected client certificates with their thumbprints."""
    pki = Pki(pki_dir)
    for label, folder in (("trusted", pki.trusted), ("rejected", pki.rejected)):
        for tp, name, path in pki.certificates(folder) if folder.exists() else []:
            typer.echo(f"{label:<9} {tp}  {name:<30} {path.name}")


THUMBPRINT = typer.Argument(..., help="thumbprint, or its first characters")


def _move(thumbprint: str, pki_dir: Path, *, trust: bool) -> None:
    pki = Pki(pki_dir)
    source, target = (pki.rejected, pki.trusted) if trust else (pki.trusted, pki.rejected)
    try:
        path = pki.move(thumbprint, source, target)
    except LookupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{'trusted' if trust else 'rejected'} {path}")


@pki_app.command("trust")
def pki_trust(thumbprint: str = THUMBPRINT, pki_dir: Path = PKI_DIR) -> None:
    """Trust a rejected client certificate (moves it from rejected/ to trusted/)."""
    _move(thumbprint, pki_dir, trust=True)


@pki_app.command("reject")
def pki_reject(thumbprint: str = THUMBPRINT, pki_dir: Path = PKI_DIR) -> None:
    """Stop trusting a client certificate (moves it from trusted/ to rejected/)."""
    _move(thumbprint, pki_dir, trust=False)


@pki_app.command("client-certificate")
def pki_client_certificate(
    name: str = typer.Argument("shell", help="a name for the client, e.g. shell or mes-script"),
    pki_dir: Path = PKI_DIR,
) -> None:
    """Create a client certificate and key for the shell client on this host, trusted at once."""
    cert, key = asyncio.run(Pki(pki_dir).create_client_certificate(name))
    typer.echo(f"created and trusted {cert} (key {key}); for the shell client:")
    typer.echo(f"  export LINEBRIDGE_CERTIFICATE={cert} LINEBRIDGE_PRIVATE_KEY={key}")
    typer.echo("  export LINEBRIDGE_USER=<user> LINEBRIDGE_PASSWORD=<password>")


@user_app.command("add")
def user_add(
    name: str,
    role: str = typer.Option(..., help=f"one of {', '.join(ROLES)}"),
    users: Path = typer.Option(Path("var/users.yaml"), help="users file"),
    password: str | None = typer.Option(None, help="asked for when neither it nor --certificate is given"),
    certificate: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="an X.509 user certificate (DER or PEM) instead of a password"
    ),
) -> None:
    """Add or replace a user: with a password (stored as a salted scrypt hash) or an X.509 user
    certificate (its thumbprint is stored)."""
    try:
        if certificate is not None:
            how = f"certificate {add_certificate_user(users, name, role, certificate)}"
        else:
            if password is None:
                password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
            add_user(users, name, role, password)
            how = "password"
    except ConfigurationError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{name} ({role}, {how}) written to {users}")


def audit(
    data_dir: Path = typer.Option(Path("var"), help="where the journal lives"),
    limit: int = typer.Option(100, min=0, help="the last N records; 0: all of them"),
    since: str | None = typer.Option(None, help="only records from this on (ISO 8601; UTC if no zone)"),
    jsonl: bool = typer.Option(False, "--jsonl", help="a JSON object a line, for a SIEM or a script"),
) -> None:
    """Print the audit trail: sessions, logins, certificate checks, orders, setpoint writes, reloads.
    Read only (beside a running bridge too); a data directory with no journal is an error, not an
    empty trail."""
    from bridge.cli_journal import moment, read_journal
    from bridge.journal.reads import AUDIT_FIELDS, all_audit_rows, audit_rows

    low = moment(since, "--since")
    start = low.isoformat() if low else ""
    with read_journal(data_dir / JOURNAL_FILE) as db:
        rows = all_audit_rows(db, start) if limit == 0 else iter(audit_rows(db, limit, start))
        for row in rows:
            if jsonl:
                typer.echo(json.dumps(dict(zip(AUDIT_FIELDS, row, strict=True)), separators=(",", ":")))
                continue
            at, event, user, tp, outcome, channel = row
            typer.echo(f"{at}  {event:<15} {user or '-':<20} {tp or '-':<40} {channel or '-'}  {outcome}")
