"""The local peers tests run against clean up after themselves."""

from __future__ import annotations

import tempfile

from tests.peers import SmtpPeer


def test_the_smtp_peer_leaves_no_key_files_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for tls in ("starttls", "ssl"):
        with SmtpPeer(tls=tls):
            pass
    assert list(tmp_path.iterdir()) == []
