"""PBKDF2-SHA256 password hashes for dashboard users, and the ``hash-password`` command.

A hash reads ``pbkdf2_sha256$<iterations>$<salt base64>$<hash base64>``, so
the iteration count can be raised later without breaking stored hashes.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import secrets
import sys

ALGORITHM = "pbkdf2_sha256"
# OWASP's 2023 password storage guidance for PBKDF2-HMAC-SHA256.
DEFAULT_ITERATIONS = 600_000
SALT_BYTES = 16
MIN_ITERATIONS = 1_000


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """Hash ``password`` with PBKDF2-SHA256 and a random salt.

    Raises
    ------
    ValueError
        If the password is empty or ``iterations`` is below ``MIN_ITERATIONS``.
    """
    if not password:
        raise ValueError("password is empty; choose a non-empty password")
    if iterations < MIN_ITERATIONS:
        raise ValueError(f"iterations {iterations} is too low; use at least {MIN_ITERATIONS}")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64encode(salt)}${_b64encode(digest)}"


def parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    """Split a stored hash into iterations, salt and digest.

    Raises
    ------
    ValueError
        If ``encoded`` is not in the ``pbkdf2_sha256$...`` format.
    """
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        raise ValueError(
            "password hash is not in the pbkdf2_sha256$<iterations>$<salt>$<hash> format; "
            "create one with 'otscc-node hash-password'"
        )
    try:
        iterations = int(parts[1])
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(
            "password hash has an invalid iteration count or base64 field; "
            "create a new one with 'otscc-node hash-password'"
        ) from exc
    if iterations < 1 or not salt or not digest:
        raise ValueError("password hash has an empty field; create a new one with 'otscc-node hash-password'")
    return iterations, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Return whether ``password`` matches the stored hash ``encoded``, in constant time.

    Raises
    ------
    ValueError
        If ``encoded`` is malformed, so a broken configuration is reported
        instead of looking like a wrong password.
    """
    iterations, salt, expected = parse_hash(encoded)
    actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations, dklen=len(expected))
    return hmac.compare_digest(actual, expected)


def add_hash_password_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``hash-password`` subcommand, which prints a hash for ``dashboard.users``."""
    parser = subparsers.add_parser(
        "hash-password",
        help="print a PBKDF2 hash of a password for dashboard.users",
        description=(
            "Read a password (twice, from the terminal, or once from standard input "
            "with --stdin) and print its PBKDF2-SHA256 hash for the password_hash field "
            "of a [[dashboard.users]] entry."
        ),
    )
    parser.add_argument("--stdin", action="store_true", help="read the password from the first line of standard input")
    parser.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help=f"PBKDF2 iteration count (default: {DEFAULT_ITERATIONS})",
    )
    parser.set_defaults(func=run_hash_password)
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    second = getpass.getpass("Repeat password: ")
    if first != second:
        raise ValueError("the two passwords differ; run hash-password again")
    return first


def run_hash_password(args: argparse.Namespace) -> int:
    """Read a password as ``args`` selects, print its hash and return the exit status 0."""
    print(hash_password(_read_password(args.stdin), iterations=args.iterations))
    return 0
