"""PBKDF2 password hashes and the hash-password command."""

from __future__ import annotations

import argparse
import io

import pytest

from dicom_node.passwords import add_hash_password_parser, hash_password, parse_hash, verify_password


def test_hash_round_trip() -> None:
    encoded = hash_password("pa55 word", iterations=1_000)
    assert encoded.startswith("pbkdf2_sha256$1000$")
    assert verify_password("pa55 word", encoded)
    assert not verify_password("pa55 Word", encoded)


def test_hash_salted_per_call() -> None:
    assert hash_password("same", iterations=1_000) != hash_password("same", iterations=1_000)


def test_hash_matches_known_vector() -> None:
    # Expected digest from OpenSSL 3: openssl kdf -keylen 32 -kdfopt digest:SHA256
    # -kdfopt pass:password -kdfopt salt:salt -kdfopt iter:4096 PBKDF2
    encoded = hash_password("password", iterations=4096, salt=b"salt")
    iterations, salt, digest = parse_hash(encoded)
    assert iterations == 4096
    assert salt == b"salt"
    assert digest.hex().startswith("c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a")


@pytest.mark.parametrize(
    "encoded",
    ["plain", "pbkdf2_sha256$x$c2FsdA==$aGFzaA==", "pbkdf2_sha256$1000$!!$aGFzaA==", "md5$1000$c2FsdA==$aGFzaA=="],
)
def test_malformed_hash_rejected(encoded: str) -> None:
    with pytest.raises(ValueError, match="hash-password"):
        verify_password("anything", encoded)


def test_empty_password_rejected() -> None:
    with pytest.raises(ValueError, match="password is empty"):
        hash_password("")


def test_hash_password_command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="otscc-node")
    add_hash_password_parser(parser.add_subparsers())
    args = parser.parse_args(["hash-password", "--stdin", "--iterations", "2000"])
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))
    assert args.func(args) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("pbkdf2_sha256$2000$")
    assert verify_password("from stdin", printed)
