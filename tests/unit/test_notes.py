"""Signed notes and checkpoints: published notes from other implementations verify with ours,
ours round-trip, and every malformed or forged input is refused."""

from __future__ import annotations

import pytest

from app.receipts.notes import (
    NoteError,
    Signer,
    checkpoint_body,
    open_note,
    parse_checkpoint,
    parse_verifier_key,
    split_note,
)

# The example of Go's golang.org/x/mod/sumdb/note package documentation.
GO_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_NOTE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
    "\n"
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
# The example of another implementation's documentation (C2SP signed notes in Elixir).
OTHER_KEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
OTHER_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_published_notes_verify() -> None:
    assert open_note(GO_NOTE, parse_verifier_key(GO_KEY)).startswith("If you think cryptography")
    assert open_note(OTHER_NOTE, parse_verifier_key(OTHER_KEY)) == "This is an example message.\n"


def test_a_note_signed_by_another_key_or_edited_is_refused() -> None:
    with pytest.raises(NoteError, match="not signed by"):
        open_note(OTHER_NOTE, parse_verifier_key(GO_KEY))
    with pytest.raises(NoteError, match="does not verify"):
        open_note(GO_NOTE.replace("problem,", "problem;"), parse_verifier_key(GO_KEY))


def test_our_checkpoints_round_trip() -> None:
    signer = Signer.generate("example.com/log")
    root = bytes(range(32))
    note = signer.sign(checkpoint_body("example.com/log", 42, root))
    text = open_note(note, parse_verifier_key(signer.verifier.text))
    assert parse_checkpoint(text) == parse_checkpoint(f"example.com/log\n42\n{note.split(chr(10))[2]}\n")
    assert parse_checkpoint(text).size == 42 and parse_checkpoint(text).root == root
    again = Signer.from_private_key(signer.private_key_text())
    assert again.verifier == signer.verifier
    assert again.sign("x\n") == signer.sign("x\n")  # Ed25519 is deterministic: replicas agree


@pytest.mark.parametrize(
    "text",
    [
        "",
        "PRIVATE+KEY+name",
        "PRIVATE+KEY+name+00000000+AQ==",
        "PRIVATE+KEY+na me+00000000+" + "A" * 44,
        "PUBLIC+KEY+name+00000000+" + "A" * 44,
    ],
)
def test_malformed_private_keys(text: str) -> None:
    with pytest.raises(NoteError):
        Signer.from_private_key(text)


def test_a_private_key_whose_id_does_not_match_is_refused() -> None:
    good = Signer.generate("a").private_key_text()
    name, hex_id, key = good[len("PRIVATE+KEY+") :].split("+", 2)
    with pytest.raises(NoteError, match="id does not match"):
        Signer.from_private_key(f"PRIVATE+KEY+{name}+{'0' * 8 if hex_id != '0' * 8 else '1' * 8}+{key}")


@pytest.mark.parametrize(
    "note",
    [
        "no blank line\n",
        "text\n\n- name sig\n",
        "text\n\n\u2014 name !!!\n",
        "text\n\n\u2014 name\n",
        "text\n\n" + "\u2014 a AAAAAAAA\n" * 101,
        "x" * (1 << 20) + "\n\n\u2014 a AAAAAAAA\n",
    ],
)
def test_malformed_notes(note: str) -> None:
    with pytest.raises(NoteError):
        split_note(note)


@pytest.mark.parametrize(
    "body",
    ["", "origin\n", "origin\n12\n", "origin\nx\nAAAA\n", "origin\n012\n" + "A" * 44 + "\n", "o\n1\nAAAA\n"],
)
def test_malformed_checkpoints(body: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(body)


def test_bad_names_and_verifier_keys() -> None:
    for key in ("", "a+b", "a+00000000+AQ==", "a+zz+" + "A" * 44, GO_KEY.replace("c74f20a3", "c74f20a4")):
        with pytest.raises(NoteError):
            parse_verifier_key(key)
    with pytest.raises(NoteError):
        checkpoint_body("two\nlines", 1, bytes(32))
