"""Every login start, code sent, wrong code, lock and success is an audit event with
fingerprints instead of identifiers, and `idp audit tail` shows them."""
from __future__ import annotations

import json

from .helpers import idp, wait_until


def test_a_login_leaves_a_trail_without_identifiers(provider):
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page = browser.start(client_id, redirect)
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), redirect)
    code = provider.outbox.last_code(mobile)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    page = browser.submit(page, {"otp": wrong})
    browser.follow(browser.submit(page, {"otp": code}), redirect)

    def events():
        out = idp(provider, "audit", "tail", "-n", "50", "--json", timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def code_sent() -> bool:  # the sender thread records it after the answer
        return "code_sent" in {r["event"] for r in events()}

    assert wait_until(code_sent, 10)
    mine = [r for r in events() if r["client_id"] == client_id or r["event"] == "code_sent"]
    kinds = [r["event"] for r in mine]
    for expected in ("login_started", "otp_wrong", "login_succeeded", "code_sent"):
        assert expected in kinds, kinds
    text = json.dumps(mine, ensure_ascii=False)
    assert national_id not in text and mobile not in text and mobile[3:] not in text
    started = next(r for r in mine if r["event"] == "login_started")
    assert started["details"]["code_to"] == "0" + mobile[3:6] + "***" + mobile[-4:]
    assert started["subject_fp"] and started["ip_fp"]
    ids = [r["id"] for r in events()]
    assert ids == sorted(ids), "oldest first"


def test_the_event_catalogue_names_every_event_the_code_records():
    """`idp audit tail --event` accepts the names in audit.EVENTS: each audit.record call in the
    code must name one of them (a new event added without it could not be asked for), and each
    name must still be recorded somewhere."""
    import ast
    import pathlib

    import idp
    from idp.platform.audit import EVENTS

    def names(node) -> set[str] | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            a, b = names(node.body), names(node.orelse)
            return a | b if a is not None and b is not None else None
        return None

    recorded, unresolved = set(), []
    for path in pathlib.Path(idp.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bare = any(isinstance(n, ast.ImportFrom) and (n.module or "").endswith("audit")
                   and any(a.name == "record" for a in n.names) for n in ast.walk(tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "revoke_family":  # its reason is the event
                recorded |= names(node.args.defaults[-1])
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr == "revoke_family" or \
                    isinstance(f, ast.Name) and f.id == "revoke_family":
                recorded |= {n for k in node.keywords if k.arg == "reason" for n in names(k.value)}
            elif (isinstance(f, ast.Attribute) and f.attr == "record" and isinstance(f.value, ast.Name)
                  and f.value.id == "audit") or (bare and isinstance(f, ast.Name) and f.id == "record"):
                found = names(node.args[0])
                if found is None:
                    unresolved.append((path.name, ast.unparse(node.args[0])))
                else:
                    recorded |= found
    assert unresolved == [("tokens.py", "reason")]  # revoke_family's reason, collected above
    assert sorted(recorded) == sorted(EVENTS)
    assert len(EVENTS) == len(set(EVENTS))
